// pybind11 module forge_flash_cu13._C: the C API with pointers, strides and the stream
// handle passed as plain integers. It links no libtorch, so one wheel serves every torch
// version; the Python adapter (forge_flash/backends/cuda.py) turns tensors into integers.
//
// CUDA runtime is linked statically. A cudaStream_t is a driver stream handle, so the
// stream torch hands us (made by torch's own cudart) is valid here as long as both run in
// the device's primary context, which both runtimes use.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "forge_flash/flash_api.h"

namespace py = pybind11;

namespace {

using Strides = std::array<int64_t, 12>;  // q(b,s,h) k(b,s,h) v(b,s,h) out(b,s,h)
// The option fields bound with a call: window_left, window_right, softcap, alibi_batch_stride,
// page_size, num_blocks, block_table_stride, max_blocks, kv_batch_rows, programmatic_launch,
// num_splits (the adapter's order).
using OptionFields = std::tuple<int, int, float, int64_t, int, int, int64_t, int, int, bool, int>;

ff_attn_options to_options(const OptionFields& f) {
  ff_attn_options o{};
  o.window_left = std::get<0>(f), o.window_right = std::get<1>(f);
  o.has_window = o.window_left != -1 || o.window_right != -1;
  o.softcap = std::get<2>(f);
  o.alibi_batch_stride = std::get<3>(f);
  o.page_size = std::get<4>(f), o.num_blocks = std::get<5>(f);
  o.block_table_stride = std::get<6>(f), o.max_blocks = std::get<7>(f);
  o.kv_batch_rows = std::get<8>(f);
  o.programmatic_launch = std::get<9>(f);
  o.num_splits = std::get<10>(f);
  return o;
}

// The per-call option arrays (pointers as ints, 0 for none).
template <typename Args>
void set_option_data(Args& a, uintptr_t alibi, uintptr_t sinks, uintptr_t block_table) {
  a.options.alibi_slopes = reinterpret_cast<const float*>(alibi);
  a.options.sinks = reinterpret_cast<const float*>(sinks);
  a.options.block_table = reinterpret_cast<const int32_t*>(block_table);
}

// Makes `device` current for the call and restores the caller's device afterwards, so
// tensors on cuda:1 work whatever device is current, and the process's current device
// never changes behind the caller's back.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    check(cudaGetDevice(&previous_));
    if (previous_ != device) check(cudaSetDevice(device));
    restore_ = previous_ != device;
  }
  ~DeviceGuard() {
    if (restore_) cudaSetDevice(previous_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  static void check(cudaError_t err) {
    if (err != cudaSuccess) throw std::runtime_error(std::string("forge_flash: ") + cudaGetErrorString(err));
  }
  int previous_ = 0;
  bool restore_ = false;
};

// Operand i's strides (batch, row, head); its data pointer comes with each call.
ff_tensor layout(const Strides& s, int i) { return {nullptr, s[3 * i], s[3 * i + 1], s[3 * i + 2]}; }

template <typename Args>
void set_data(Args& a, uintptr_t q, uintptr_t k, uintptr_t v, uintptr_t out, uintptr_t lse) {
  a.q.data = reinterpret_cast<void*>(q), a.k.data = reinterpret_cast<void*>(k);
  a.v.data = reinterpret_cast<void*>(v), a.out.data = reinterpret_cast<void*>(out);
  a.softmax_lse = reinterpret_cast<float*>(lse);
}

ff_dtype to_dtype(int dtype) {
  if (dtype != FF_DTYPE_FLOAT16 && dtype != FF_DTYPE_BFLOAT16)
    throw py::value_error("dtype must be 0 (float16) or 1 (bfloat16), got " + std::to_string(dtype));
  return static_cast<ff_dtype>(dtype);
}

// Runs one entry point; returns 0 when launched, else the workspace bytes it needs.
template <typename Args, typename Fn>
size_t invoke(Fn fn, const Args& args, uintptr_t workspace, size_t workspace_bytes, int device, uintptr_t stream) {
  size_t bytes = workspace_bytes;
  ff_status status;
  std::string message;
  {
    py::gil_scoped_release no_gil;  // lets threads driving other GPUs launch concurrently
    DeviceGuard guard(device);
    status = fn(&args, reinterpret_cast<void*>(workspace), &bytes, reinterpret_cast<cudaStream_t>(stream));
    if (status != FF_OK) message = ff_last_error();
  }
  switch (status) {
    case FF_OK:
      return 0;
    case FF_WORKSPACE_REQUIRED:
      return bytes;
    case FF_ERROR_INVALID_ARGUMENT:
      throw py::value_error("forge_flash: " + message);
    default:
      throw std::runtime_error("forge_flash: " + message);
  }
}

class AppendKvCall;

// A call of one entry point with its sizes, strides and flags bound. The adapter makes one
// per call signature and then passes only data pointers, workspace and stream: ten or twelve
// integers to convert per call instead of thirty-odd.
class FwdCall {
 public:
  FwdCall(const Strides& strides, int batch, int seqlen_q, int seqlen_k, int num_heads, int num_heads_k, int head_dim,
          float softmax_scale, bool causal, int dtype, const OptionFields& options) {
    args_.q = layout(strides, 0), args_.k = layout(strides, 1), args_.v = layout(strides, 2);
    args_.out = layout(strides, 3);
    args_.batch_size = batch, args_.seqlen_q = seqlen_q, args_.seqlen_k = seqlen_k;
    args_.num_heads = num_heads, args_.num_heads_k = num_heads_k, args_.head_dim = head_dim;
    args_.softmax_scale = softmax_scale, args_.is_causal = causal, args_.dtype = to_dtype(dtype);
    args_.options = to_options(options);
  }

  // A call without option arrays (ten integers: a decode step). Returns 0 when launched, else
  // the workspace bytes needed.
  size_t operator()(uintptr_t q, uintptr_t k, uintptr_t v, uintptr_t out, uintptr_t lse, uintptr_t seqused_k,
                    uintptr_t workspace, size_t workspace_bytes, int device, uintptr_t stream) const {
    ff_fwd_args a = args_;
    set_data(a, q, k, v, out, lse);
    a.seqused_k = reinterpret_cast<const int32_t*>(seqused_k);
    return invoke(ff_attn_fwd, a, workspace, workspace_bytes, device, stream);
  }

  // With the option arrays: ALiBi slopes, sinks, block table, cache batch index, key starts.
  size_t run(uintptr_t q, uintptr_t k, uintptr_t v, uintptr_t out, uintptr_t lse, uintptr_t seqused_k, uintptr_t alibi,
             uintptr_t sinks, uintptr_t block_table, uintptr_t kv_batch_idx, uintptr_t k_start, uintptr_t workspace,
             size_t workspace_bytes, int device, uintptr_t stream) const {
    ff_fwd_args a = args_;
    set_data(a, q, k, v, out, lse);
    a.seqused_k = reinterpret_cast<const int32_t*>(seqused_k);
    set_option_data(a, alibi, sinks, block_table);
    a.options.kv_batch_idx = reinterpret_cast<const int32_t*>(kv_batch_idx);
    a.options.k_start = reinterpret_cast<const int32_t*>(k_start);
    return invoke(ff_attn_fwd, a, workspace, workspace_bytes, device, stream);
  }

  // A decode step with the K/V append fused (ff_attn_fwd_append): this call over the caches
  // (k_cache, v_cache as k, v; cache_seqlens as seqused_k) and `append`'s new k/v and rotary
  // tables. Returns 0 when launched, the workspace bytes needed, or -1 where the step does not
  // fuse (nothing launched: make the two calls).
  int64_t run_append(const AppendKvCall& append, uintptr_t q, uintptr_t k_cache, uintptr_t v_cache, uintptr_t out,
                     uintptr_t lse, uintptr_t cache_seqlens, uintptr_t alibi, uintptr_t sinks, uintptr_t block_table,
                     uintptr_t kv_batch_idx, uintptr_t k, uintptr_t v, uintptr_t rotary_cos, uintptr_t rotary_sin,
                     uintptr_t workspace, size_t workspace_bytes, int device, uintptr_t stream) const;

 private:
  ff_fwd_args args_{};
};

class VarlenFwdCall {
 public:
  VarlenFwdCall(const Strides& strides, int batch, int max_seqlen_q, int max_seqlen_k, int total_q, int total_k,
                int num_heads, int num_heads_k, int head_dim, float softmax_scale, bool causal, int dtype,
                const OptionFields& options) {
    args_.q = layout(strides, 0), args_.k = layout(strides, 1), args_.v = layout(strides, 2);
    args_.out = layout(strides, 3);
    args_.batch_size = batch, args_.max_seqlen_q = max_seqlen_q, args_.max_seqlen_k = max_seqlen_k;
    args_.total_q = total_q, args_.total_k = total_k;
    args_.num_heads = num_heads, args_.num_heads_k = num_heads_k, args_.head_dim = head_dim;
    args_.softmax_scale = softmax_scale, args_.is_causal = causal, args_.dtype = to_dtype(dtype);
    args_.options = to_options(options);
  }

  size_t run(uintptr_t q, uintptr_t k, uintptr_t v, uintptr_t out, uintptr_t lse, uintptr_t cu_seqlens_q,
             uintptr_t cu_seqlens_k, uintptr_t seqused_k, uintptr_t alibi, uintptr_t sinks, uintptr_t block_table,
             uintptr_t workspace, size_t workspace_bytes, int device, uintptr_t stream) const {
    ff_varlen_fwd_args a = args_;
    set_data(a, q, k, v, out, lse);
    a.cu_seqlens_q = reinterpret_cast<const int32_t*>(cu_seqlens_q);
    a.cu_seqlens_k = reinterpret_cast<const int32_t*>(cu_seqlens_k);
    a.seqused_k = reinterpret_cast<const int32_t*>(seqused_k);
    set_option_data(a, alibi, sinks, block_table);
    return invoke(ff_attn_varlen_fwd, a, workspace, workspace_bytes, device, stream);
  }

 private:
  ff_varlen_fwd_args args_{};
};

// ff_merge_states from integers: each part is (out, dtype, out batch/row/head strides, lse,
// lse batch/head/row strides), `out` is (pointer, dtype, batch/row/head strides) and `out_lse`
// (pointer or 0, batch/head/row strides); dtype codes are ff_merge_dtype's.
using MergePart = std::array<int64_t, 9>;

void merge_states(const std::vector<MergePart>& parts, const std::array<int64_t, 5>& out,
                  const std::array<int64_t, 4>& out_lse, int batch, int seqlen, int num_heads, int head_dim, int device,
                  uintptr_t stream) {
  ff_merge_args a{};
  a.num_parts = static_cast<int>(parts.size());  // the C API rejects more than FF_MERGE_MAX_PARTS
  for (size_t i = 0; i < parts.size() && i < FF_MERGE_MAX_PARTS; ++i) {
    const MergePart& p = parts[i];
    a.parts[i].out = {reinterpret_cast<void*>(p[0]), p[2], p[3], p[4]};
    a.parts[i].dtype = static_cast<ff_merge_dtype>(p[1]);
    a.parts[i].lse = {reinterpret_cast<float*>(p[5]), p[6], p[7], p[8]};
  }
  a.out = {reinterpret_cast<void*>(out[0]), out[2], out[3], out[4]};
  a.out_dtype = static_cast<ff_merge_dtype>(out[1]);
  a.out_lse = {reinterpret_cast<float*>(out_lse[0]), out_lse[1], out_lse[2], out_lse[3]};
  a.batch_size = batch, a.seqlen = seqlen, a.num_heads = num_heads, a.head_dim = head_dim;
  const auto no_workspace = [](const ff_merge_args* args, void*, size_t*, cudaStream_t s) {
    return ff_merge_states(args, s);
  };
  invoke(no_workspace, a, 0, 0, device, stream);
}

// ff_append_kv with its sizes, strides and flags bound (the adapter keeps one per layout, as
// for FwdCall); called with the data pointers (0 for absent ones), device and stream.
class AppendKvCall {
 public:
  // strides: (batch, row, head) of k, v, k_cache, v_cache, q, q_out; rotary_strides: (row,
  // col) of cos, then sin; sizes: batch, seqlen_new, seqlen_q, num_heads, num_heads_k,
  // head_dim, cache_batch, cache_seqlen, max_blocks; rotary: rotary_dim, seqlen_ro,
  // rotary_dtype (ff_merge_dtype), interleaved, query_per_token.
  AppendKvCall(const std::array<int64_t, 18>& strides, const std::array<int64_t, 4>& rotary_strides,
               int64_t block_table_stride, const std::array<int, 9>& sizes, const std::array<int, 5>& rotary, int dtype,
               bool programmatic) {
    ff_tensor* tensors[] = {&args_.k, &args_.v, &args_.k_cache, &args_.v_cache, &args_.q, &args_.q_out};
    for (int i = 0; i < 6; ++i) *tensors[i] = {nullptr, strides[3 * i], strides[3 * i + 1], strides[3 * i + 2]};
    args_.rotary_cos = {nullptr, rotary_strides[0], rotary_strides[1]};
    args_.rotary_sin = {nullptr, rotary_strides[2], rotary_strides[3]};
    args_.block_table_stride = block_table_stride;
    args_.batch_size = sizes[0], args_.seqlen_new = sizes[1], args_.seqlen_q = sizes[2];
    args_.num_heads = sizes[3], args_.num_heads_k = sizes[4], args_.head_dim = sizes[5];
    args_.cache_batch = sizes[6], args_.cache_seqlen = sizes[7], args_.max_blocks = sizes[8];
    args_.rotary_dim = rotary[0], args_.seqlen_ro = rotary[1];
    args_.rotary_dtype = static_cast<ff_merge_dtype>(rotary[2]);  // the C API checks the code
    args_.rotary_interleaved = rotary[3], args_.query_per_token = rotary[4];
    args_.dtype = to_dtype(dtype);
    args_.programmatic_launch = programmatic;
  }

  void operator()(uintptr_t k, uintptr_t v, uintptr_t k_cache, uintptr_t v_cache, uintptr_t q, uintptr_t q_out,
                  uintptr_t cache_seqlens, uintptr_t seqlens_out, uintptr_t cache_batch_idx, uintptr_t block_table,
                  uintptr_t rotary_cos, uintptr_t rotary_sin, int device, uintptr_t stream) const {
    const ff_append_kv_args a = with_data(k, v, k_cache, v_cache, q, q_out, cache_seqlens, seqlens_out, cache_batch_idx,
                                          block_table, rotary_cos, rotary_sin);
    const auto no_workspace = [](const ff_append_kv_args* args, void*, size_t*, cudaStream_t s) {
      return ff_append_kv(args, s);
    };
    invoke(no_workspace, a, 0, 0, device, stream);
  }

  // The bound arguments with this call's data pointers (0 for absent ones).
  ff_append_kv_args with_data(uintptr_t k, uintptr_t v, uintptr_t k_cache, uintptr_t v_cache, uintptr_t q,
                              uintptr_t q_out, uintptr_t cache_seqlens, uintptr_t seqlens_out,
                              uintptr_t cache_batch_idx, uintptr_t block_table, uintptr_t rotary_cos,
                              uintptr_t rotary_sin) const {
    ff_append_kv_args a = args_;
    a.k.data = reinterpret_cast<void*>(k), a.v.data = reinterpret_cast<void*>(v);
    a.k_cache.data = reinterpret_cast<void*>(k_cache), a.v_cache.data = reinterpret_cast<void*>(v_cache);
    a.q.data = reinterpret_cast<void*>(q), a.q_out.data = reinterpret_cast<void*>(q_out);
    a.cache_seqlens = reinterpret_cast<const int32_t*>(cache_seqlens);
    a.seqlens_out = reinterpret_cast<int32_t*>(seqlens_out);
    a.cache_batch_idx = reinterpret_cast<const int32_t*>(cache_batch_idx);
    a.block_table = reinterpret_cast<const int32_t*>(block_table);
    a.rotary_cos.data = reinterpret_cast<const void*>(rotary_cos);
    a.rotary_sin.data = reinterpret_cast<const void*>(rotary_sin);
    return a;
  }

 private:
  ff_append_kv_args args_{};
};

int64_t FwdCall::run_append(const AppendKvCall& append, uintptr_t q, uintptr_t k_cache, uintptr_t v_cache,
                            uintptr_t out, uintptr_t lse, uintptr_t cache_seqlens, uintptr_t alibi, uintptr_t sinks,
                            uintptr_t block_table, uintptr_t kv_batch_idx, uintptr_t k, uintptr_t v,
                            uintptr_t rotary_cos, uintptr_t rotary_sin, uintptr_t workspace, size_t workspace_bytes,
                            int device, uintptr_t stream) const {
  ff_fwd_args a = args_;
  set_data(a, q, k_cache, v_cache, out, lse);
  a.seqused_k = reinterpret_cast<const int32_t*>(cache_seqlens);
  set_option_data(a, alibi, sinks, block_table);
  a.options.kv_batch_idx = reinterpret_cast<const int32_t*>(kv_batch_idx);
  // No q, q_out or seqlens_out: q is the attention's, rotated as the kernel reads it.
  ff_append_kv_args b = append.with_data(k, v, k_cache, v_cache, 0, 0, cache_seqlens, 0, kv_batch_idx, block_table,
                                         rotary_cos, rotary_sin);
  b.num_heads = a.num_heads, b.seqlen_q = a.seqlen_q;
  bool declined = false;  // FF_ERROR_UNSUPPORTED: the step does not fuse, nothing launched
  const size_t bytes = invoke(
      [&](const ff_fwd_args* args, void* ws, size_t* need, cudaStream_t s) {
        const ff_status status = ff_attn_fwd_append(args, &b, ws, need, s);
        declined = status == FF_ERROR_UNSUPPORTED;
        return declined ? FF_OK : status;
      },
      a, workspace, workspace_bytes, device, stream);
  return declined ? -1 : static_cast<int64_t>(bytes);
}

std::vector<int> parse_archs(const char* list) {  // "80,90" -> {80, 90}
  std::vector<int> archs;
  for (const char* s = list; *s;) {
    archs.push_back(static_cast<int>(std::strtol(s, const_cast<char**>(&s), 10)));
    while (*s == ',') ++s;
  }
  return archs;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "forge-flash CUDA kernels (FlashAttention-2 style forward for SM80/SM90)";
  m.attr("__version__") = FORGE_FLASH_VERSION;
  py::class_<FwdCall>(m, "FwdCall",
                      "Uniform-length attention forward with sizes, strides, flags and option fields bound; call it "
                      "with (q, k, v, out, lse, seqused_k, workspace, workspace_bytes, device, stream), or .run() "
                      "with the option arrays after seqused_k (alibi, sinks, block_table, kv_batch_idx, k_start), "
                      "for 0 or the workspace bytes needed.")
      .def(py::init<const Strides&, int, int, int, int, int, int, float, bool, int, const OptionFields&>())
      .def("__call__", &FwdCall::operator())
      .def("run", &FwdCall::run)
      .def("run_append", &FwdCall::run_append);
  py::class_<VarlenFwdCall>(m, "VarlenFwdCall",
                            "Variable-length attention forward with sizes, strides, flags and option fields bound; "
                            "call .run(q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k, seqused_k, alibi, sinks, "
                            "block_table, workspace, workspace_bytes, device, stream) for 0 or the workspace bytes "
                            "needed.")
      .def(py::init<const Strides&, int, int, int, int, int, int, int, int, float, bool, int, const OptionFields&>())
      .def("run", &VarlenFwdCall::run);
  m.def("cuda_archs", [] { return parse_archs(FORGE_FLASH_SASS_ARCHS); }, "SASS architectures compiled in.");
  m.def(
      "ptx_archs", [] { return parse_archs(FORGE_FLASH_PTX_ARCHS); },
      "PTX architectures compiled in (JIT for newer GPUs).");
  m.def("cuda_version", [] { return std::string(FORGE_FLASH_CUDA_VERSION); }, "CUDA toolkit used to build.");
  m.def("runtime_version", [] {
    int v = 0;
    cudaRuntimeGetVersion(&v);
    return v;
  });
  m.def("driver_version", [] {
    int v = 0;
    cudaDriverGetVersion(&v);
    return v;
  });
  m.def(
      "limits",
      [] {
        py::dict d;
        d["max_head_dim"] = static_cast<int>(FF_MAX_HEAD_DIM);
        d["head_dim_multiple"] = static_cast<int>(FF_HEAD_DIM_MULTIPLE);
#define FORGE_FLASH_LIST(D) D,
        d["head_dims"] = std::vector<int>{FORGE_FLASH_FOR_EACH_HEAD_DIM(FORGE_FLASH_LIST)};
#undef FORGE_FLASH_LIST
        d["alignment_bytes"] = static_cast<int>(FF_ALIGNMENT_BYTES);
        d["stride_multiple"] = static_cast<int>(FF_STRIDE_MULTIPLE);
        py::dict dtypes;
        dtypes["float16"] = static_cast<int>(FF_DTYPE_FLOAT16);
        dtypes["bfloat16"] = static_cast<int>(FF_DTYPE_BFLOAT16);
        d["dtypes"] = dtypes;
        // The options of ff_attn_options the kernels take, and any finite softmax scale.
        d["features"] = std::vector<std::string>{"window",   "softcap",        "alibi",   "sinks",
                                                 "paged_kv", "kv_batch_index", "k_start", "any_scale"};
        return d;
      },
      "What the kernels take (forge_flash/limits.h): head dims, alignment, strides, dtypes, options.");
  py::class_<AppendKvCall>(m, "AppendKvCall",
                           "The K/V append of a KV cache (ff_append_kv) with strides, sizes and flags bound: "
                           "AppendKvCall(strides (18: k, v, k_cache, v_cache, q, q_out x batch/row/head), "
                           "rotary_strides (cos row/col, sin row/col), block_table_stride, sizes (batch, "
                           "seqlen_new, seqlen_q, num_heads, num_heads_k, head_dim, cache_batch, cache_seqlen, "
                           "max_blocks), rotary (rotary_dim, seqlen_ro, rotary_dtype, interleaved, "
                           "query_per_token), dtype, programmatic); call it with (k, v, k_cache, v_cache, q, q_out, "
                           "cache_seqlens, seqlens_out, cache_batch_idx, block_table, rotary_cos, rotary_sin, "
                           "device, stream), pointers as ints (0 for none).")
      .def(py::init<const std::array<int64_t, 18>&, const std::array<int64_t, 4>&, int64_t, const std::array<int, 9>&,
                    const std::array<int, 5>&, int, bool>())
      .def("__call__", &AppendKvCall::operator());
  m.def("merge_states", &merge_states, py::arg("parts"), py::arg("out"), py::arg("out_lse"), py::arg("batch"),
        py::arg("seqlen"), py::arg("num_heads"), py::arg("head_dim"), py::arg("device"), py::arg("stream"),
        "Merge partial attention states (ff_merge_states): parts is a list of (out, dtype, 3 out strides, lse, 3 "
        "lse strides), out (pointer, dtype, 3 strides), out_lse (pointer or 0, 3 strides); dtype 0 float16, 1 "
        "bfloat16, 2 float32.");
}
