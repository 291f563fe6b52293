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
#include <vector>

#include "forge_flash/flash_api.h"

namespace py = pybind11;

namespace {

using Strides = std::array<int64_t, 12>;  // q(b,s,h) k(b,s,h) v(b,s,h) out(b,s,h)

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

ff_tensor tensor(uintptr_t ptr, const Strides& s, int i) {
  return {reinterpret_cast<void*>(ptr), s[3 * i], s[3 * i + 1], s[3 * i + 2]};
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

size_t fwd(uintptr_t q, uintptr_t k, uintptr_t v, uintptr_t out, uintptr_t lse, uintptr_t seqused_k,
           const Strides& strides, int batch, int seqlen_q, int seqlen_k, int num_heads, int num_heads_k, int head_dim,
           float softmax_scale, bool causal, int dtype, uintptr_t workspace, size_t workspace_bytes, int device,
           uintptr_t stream) {
  ff_fwd_args a{};
  a.q = tensor(q, strides, 0), a.k = tensor(k, strides, 1), a.v = tensor(v, strides, 2),
  a.out = tensor(out, strides, 3);
  a.softmax_lse = reinterpret_cast<float*>(lse);
  a.seqused_k = reinterpret_cast<const int32_t*>(seqused_k);
  a.batch_size = batch, a.seqlen_q = seqlen_q, a.seqlen_k = seqlen_k;
  a.num_heads = num_heads, a.num_heads_k = num_heads_k, a.head_dim = head_dim;
  a.softmax_scale = softmax_scale, a.is_causal = causal, a.dtype = to_dtype(dtype);
  return invoke(ff_attn_fwd, a, workspace, workspace_bytes, device, stream);
}

size_t varlen_fwd(uintptr_t q, uintptr_t k, uintptr_t v, uintptr_t out, uintptr_t lse, uintptr_t cu_seqlens_q,
                  uintptr_t cu_seqlens_k, uintptr_t seqused_k, const Strides& strides, int batch, int max_seqlen_q,
                  int max_seqlen_k, int total_q, int total_k, int num_heads, int num_heads_k, int head_dim,
                  float softmax_scale, bool causal, int dtype, uintptr_t workspace, size_t workspace_bytes, int device,
                  uintptr_t stream) {
  ff_varlen_fwd_args a{};
  a.q = tensor(q, strides, 0), a.k = tensor(k, strides, 1), a.v = tensor(v, strides, 2),
  a.out = tensor(out, strides, 3);
  a.softmax_lse = reinterpret_cast<float*>(lse);
  a.cu_seqlens_q = reinterpret_cast<const int32_t*>(cu_seqlens_q);
  a.cu_seqlens_k = reinterpret_cast<const int32_t*>(cu_seqlens_k);
  a.seqused_k = reinterpret_cast<const int32_t*>(seqused_k);
  a.batch_size = batch, a.max_seqlen_q = max_seqlen_q, a.max_seqlen_k = max_seqlen_k;
  a.total_q = total_q, a.total_k = total_k;
  a.num_heads = num_heads, a.num_heads_k = num_heads_k, a.head_dim = head_dim;
  a.softmax_scale = softmax_scale, a.is_causal = causal, a.dtype = to_dtype(dtype);
  return invoke(ff_attn_varlen_fwd, a, workspace, workspace_bytes, device, stream);
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
  m.def("fwd", &fwd, "Uniform-length attention forward; returns 0 or the workspace bytes needed.");
  m.def("varlen_fwd", &varlen_fwd, "Variable-length attention forward; returns 0 or the workspace bytes needed.");
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
  m.def("max_head_dim", [] { return 256; });
}
