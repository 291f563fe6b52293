// The C API: check every argument, turn it into FwdParams, plan, launch.
// Nothing here dereferences a device pointer; lengths that live on the device
// (cu_seqlens, seqused_k) are clamped inside the kernels instead.
#include "forge_flash/flash_api.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <iterator>
#include <limits>
#include <string>

#include "../kernels/append_kv.h"
#include "../kernels/dispatch.h"
#include "view_checks.h"

namespace forge_flash {

Check check_append(const ff_append_kv_args* args);  // append_api.cpp

namespace {

thread_local std::string g_last_error;

// A failed check (view_checks.h's Check) of any status: the message names the argument, the
// value and the rule.
template <typename... Args>
Check fail(ff_status status, const char* fmt, Args... args) {
  char buf[512];
  std::snprintf(buf, sizeof(buf), fmt, args...);
  return {status, buf};
}

Check ok() { return {}; }

ff_status report(const Check& f) {
  g_last_error = f.message;
  return f.status;
}

Check check_tensor(const char* name, const ff_tensor& t, int64_t batch, int64_t rows, int64_t heads, int head_dim,
                   bool has_batch_dim) {
  const int64_t strides[] = {has_batch_dim ? t.batch_stride : 0, t.row_stride, t.head_stride};
  const int64_t extents[] = {batch, rows, heads};
  const char* dims[] = {"batch_stride", "row_stride", "head_stride"};
  if (t.data == nullptr) return fail(FF_ERROR_INVALID_ARGUMENT, "%s.data is NULL", name);
  if (reinterpret_cast<uintptr_t>(t.data) % FF_ALIGNMENT_BYTES != 0)
    return fail(FF_ERROR_INVALID_ARGUMENT, "%s.data must be %d-byte aligned (got %p)", name, FF_ALIGNMENT_BYTES,
                t.data);
  // Every element offset the kernels form must fit in int64: the sum of
  // (extent - 1) * stride over the dimensions, plus head_dim.
  int64_t max_offset = head_dim - 1;
  for (int i = 0; i < 3; ++i) {
    if (strides[i] < 0 || strides[i] % FF_STRIDE_MULTIPLE != 0)
      return fail(FF_ERROR_INVALID_ARGUMENT, "%s.%s must be a non-negative multiple of %d elements, got %lld", name,
                  dims[i], FF_STRIDE_MULTIPLE, static_cast<long long>(strides[i]));
    if (extents[i] > 1) {
      if (strides[i] > 0 && extents[i] - 1 > (INT64_MAX - max_offset) / strides[i])
        return fail(FF_ERROR_INVALID_ARGUMENT, "%s: offsets overflow int64 (%s %lld)", name, dims[i],
                    static_cast<long long>(strides[i]));
      max_offset += (extents[i] - 1) * strides[i];
    }
  }
  return ok();
}

// Two threads must never write one output element (view_checks.h's rule, on `out`).
Check check_no_overlap(const char* name, const ff_tensor& t, int64_t batch, int64_t rows, int64_t heads, int head_dim,
                       bool has_batch_dim) {
  const View out{name,
                 t.data,
                 2,
                 4,
                 {has_batch_dim ? batch : 1, rows, heads, head_dim},
                 {has_batch_dim ? t.batch_stride : 0, t.row_stride, t.head_stride, 1}};
  return check_no_self_overlap(out);
}

Check check_common(int num_heads, int num_heads_k, int head_dim, float scale, ff_dtype dtype) {
  if (num_heads < 1 || num_heads_k < 1)
    return fail(FF_ERROR_INVALID_ARGUMENT, "num_heads (%d) and num_heads_k (%d) must be >= 1", num_heads, num_heads_k);
  if (num_heads % num_heads_k != 0)
    return fail(FF_ERROR_INVALID_ARGUMENT, "num_heads_k (%d) must divide num_heads (%d)", num_heads_k, num_heads);
  if (head_dim < FF_HEAD_DIM_MULTIPLE || head_dim > FF_MAX_HEAD_DIM || head_dim % FF_HEAD_DIM_MULTIPLE != 0)
    return fail(FF_ERROR_INVALID_ARGUMENT, "head_dim must be a multiple of %d in [%d, %d], got %d",
                FF_HEAD_DIM_MULTIPLE, FF_HEAD_DIM_MULTIPLE, FF_MAX_HEAD_DIM, head_dim);
  if (!std::isfinite(scale))
    return fail(FF_ERROR_INVALID_ARGUMENT, "softmax_scale must be finite, got %g", static_cast<double>(scale));
  if (dtype != FF_DTYPE_FLOAT16 && dtype != FF_DTYPE_BFLOAT16)
    return fail(FF_ERROR_INVALID_ARGUMENT, "dtype must be FF_DTYPE_FLOAT16 or FF_DTYPE_BFLOAT16, got %d",
                static_cast<int>(dtype));
  return ok();
}

Check check_aligned4(const char* name, const void* ptr, bool required) {
  if (ptr == nullptr) return required ? fail(FF_ERROR_INVALID_ARGUMENT, "%s is NULL", name) : ok();
  if (reinterpret_cast<uintptr_t>(ptr) % 4 != 0)
    return fail(FF_ERROR_INVALID_ARGUMENT, "%s must be 4-byte aligned (got %p)", name, ptr);
  return ok();
}

// Why the current GPU cannot run the kernels (asked only after a launch setup failed).
Check unsupported_device(cudaError_t err) {
  int device = 0, major = 0, minor = 0;
  cudaGetDevice(&device);
  cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
  cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device);
  return fail(FF_ERROR_UNSUPPORTED,
              "device %d (compute capability %d.%d) cannot run this build's kernels (%s); "
              "forge-flash needs compute capability 8.0 or newer",
              device, major, minor, cudaGetErrorString(err));
}

// The variant options: each value's range; device arrays only for alignment (the kernels
// read them and clamp every index they hold).
Check check_options(const ff_attn_options& o, bool varlen) {
  if (o.has_window && (o.window_left < -1 || o.window_right < -1))
    return fail(FF_ERROR_INVALID_ARGUMENT, "window edges must be >= -1 (-1 = unbounded), got (%d, %d)", o.window_left,
                o.window_right);
  if (!std::isfinite(o.softcap) || o.softcap < 0.f)
    return fail(FF_ERROR_INVALID_ARGUMENT, "softcap must be finite and >= 0 (0 = off), got %g",
                static_cast<double>(o.softcap));
  Check f = check_aligned4("alibi_slopes", o.alibi_slopes, false);
  if (f.status == FF_OK) f = check_aligned4("sinks", o.sinks, false);
  if (f.status == FF_OK) f = check_aligned4("block_table", o.block_table, false);
  if (f.status == FF_OK) f = check_aligned4("kv_batch_idx", o.kv_batch_idx, false);
  if (f.status == FF_OK) f = check_aligned4("k_start", o.k_start, false);
  if (f.status != FF_OK) return f;
  if (o.alibi_batch_stride < 0)
    return fail(FF_ERROR_INVALID_ARGUMENT, "alibi_batch_stride must be >= 0, got %lld",
                static_cast<long long>(o.alibi_batch_stride));
  if (o.block_table != nullptr) {
    if (o.page_size < 1 || o.num_blocks < 1 || o.max_blocks < 1 || o.block_table_stride < o.max_blocks)
      return fail(FF_ERROR_INVALID_ARGUMENT,
                  "paged K/V needs page_size (%d), num_blocks (%d) and max_blocks (%d) >= 1 and a block_table_stride "
                  "(%lld) >= max_blocks",
                  o.page_size, o.num_blocks, o.max_blocks, static_cast<long long>(o.block_table_stride));
    if (o.kv_batch_idx != nullptr)  // the table already maps each sequence to its pages
      return fail(FF_ERROR_INVALID_ARGUMENT, "kv_batch_idx does not combine with a block_table");
  }
  if (o.kv_batch_idx != nullptr && o.kv_batch_rows < 1)
    return fail(FF_ERROR_INVALID_ARGUMENT, "kv_batch_rows must be >= 1 with kv_batch_idx, got %d", o.kv_batch_rows);
  if (varlen && (o.kv_batch_idx != nullptr || o.k_start != nullptr))
    return fail(FF_ERROR_INVALID_ARGUMENT, "kv_batch_idx and k_start apply to the uniform-batch entry point only");
  if (o.num_splits < 0)
    return fail(FF_ERROR_INVALID_ARGUMENT, "num_splits must be >= 0 (0 = chosen by the library), got %d", o.num_splits);
  return ok();
}

// The scores' program (params.h): plain kernels fold the scale into the exp2; any variant, or
// a scale <= 0 (whose running maximum is no scaled maximum of raw scores), takes the variant
// kernels, which turn scores into base-2 logits first where the variant needs it.
void set_score_params(FwdParams& p, float scale, bool causal, const ff_attn_options& o) {
  p.scale = scale;
  p.is_causal = causal;
  p.window_left = o.has_window ? o.window_left : -1;
  p.window_right = o.has_window ? o.window_right : -1;
  if (causal) p.window_right = 0;
  // An edge as wide as the call's keys (left) or queries (right) masks nothing: no sequence
  // has more than p.seqlen_k keys or p.seqlen_q queries (sequence_extent clamps them there).
  // Such an edge is unbounded (-1) here, so the kernels' int sums of row positions and edges
  // cannot overflow (an edge near INT_MAX would wrap and mask every key).
  if (p.window_left >= p.seqlen_k) p.window_left = -1;
  if (!causal && p.window_right >= std::max(p.seqlen_q, 1)) p.window_right = -1;
  p.softcap = o.softcap;
  p.alibi_slopes = o.alibi_slopes, p.alibi_batch_stride = o.alibi_batch_stride;
  p.sinks = o.sinks;
  p.block_table = o.block_table, p.block_table_stride = o.block_table_stride;
  p.page_size = o.page_size, p.num_blocks = o.num_blocks, p.max_blocks = o.max_blocks;
  p.page_shift = -1;
  if (o.page_size > 0 && (o.page_size & (o.page_size - 1)) == 0)
    for (p.page_shift = 0; (1 << p.page_shift) < o.page_size;) ++p.page_shift;
  p.kv_batch_idx = o.kv_batch_idx, p.kv_batch_rows = o.kv_batch_rows;
  p.k_start = o.k_start;
  p.requested_splits = o.num_splits;
  p.score_mods = p.window_left >= 0 || (p.window_right >= 0 && !causal) || p.softcap > 0.f ||
                 p.alibi_slopes != nullptr || p.sinks != nullptr || !(scale > 0.f);
  p.features = p.score_mods || p.block_table != nullptr || p.kv_batch_idx != nullptr || p.k_start != nullptr;
  const float log2e = static_cast<float>(M_LOG2E);
  // Only a softcap or a scale <= 0 (whose -inf masks the scale would turn to +inf) needs
  // every score turned into a base-2 logit before the mask (score_mod); the other variants
  // scale inside the softmax's exp2 like the plain kernels, saving a multiply per score, and
  // ALiBi's bias is divided by the scale instead (one multiply-add per score).
  // (A tiny scale keeps logits too: 1 / scale must stay finite for ALiBi.)
  const bool logits = p.softcap > 0.f || !(scale > 0.f) || (p.alibi_slopes != nullptr && scale < 1e-6f);
  p.scale_log2 = logits ? 1.f : scale * log2e;
  p.lse_scale = logits ? static_cast<float>(M_LN2) : scale;
  p.score_scale = p.softcap > 0.f ? scale / p.softcap : logits ? scale * log2e : 1.f;
  p.alibi_scale = logits ? log2e : 1.f / scale;
  p.softcap_log2 = p.softcap * log2e;
}

void set_tensors(FwdParams& p, const ff_tensor& q, const ff_tensor& k, const ff_tensor& v, const ff_tensor& o) {
  p.q = q.data;
  p.k = k.data;
  p.v = v.data;
  p.out = o.data;
  p.q_batch_stride = q.batch_stride, p.q_row_stride = q.row_stride, p.q_head_stride = q.head_stride;
  p.k_batch_stride = k.batch_stride, p.k_row_stride = k.row_stride, p.k_head_stride = k.head_stride;
  p.v_batch_stride = v.batch_stride, p.v_row_stride = v.row_stride, p.v_head_stride = v.head_stride;
  p.o_batch_stride = o.batch_stride, p.o_row_stride = o.row_stride, p.o_head_stride = o.head_stride;
}

// plan_fwd for the current device, its failures as the C API's statuses.
Check plan_call(FwdParams& p, DType dt, FwdPlan* plan) {
  cudaError_t cuda_error = cudaSuccess;
  if (const char* why = plan_fwd(p, dt, plan, &cuda_error)) {
    if (cuda_error == cudaErrorNoKernelImageForDevice || cuda_error == cudaErrorInvalidDeviceFunction ||
        cuda_error == cudaErrorUnsupportedPtxVersion)
      return unsupported_device(cuda_error);
    if (cuda_error != cudaSuccess) return fail(FF_ERROR_CUDA, "%s: %s", why, cudaGetErrorString(cuda_error));
    return fail(FF_ERROR_INVALID_ARGUMENT, "%s", why);
  }
  return ok();
}

// Plan, honour the workspace protocol, launch. `append_first`: a decode step whose K/V append
// runs as its own kernel first (attn_fwd_append, p.new_keys_in_cache); with rotary tables it
// rotates p.q into the workspace's first bytes, and the attention reads q there. `planned`:
// p's plan where the caller made it (attn_fwd_append, choosing between one launch and two);
// a decode plan does not read q's strides, which the rotated q changes.
Check run(FwdParams& p, ff_dtype dtype, bool programmatic, void* workspace, size_t* workspace_bytes,
          cudaStream_t stream, const ff_append_kv_args* append_first = nullptr, const FwdPlan* planned = nullptr) {
  const DType dt = dtype == FF_DTYPE_FLOAT16 ? DType::kFloat16 : DType::kBFloat16;
  const ff_tensor q_caller = {const_cast<void*>(p.q), p.q_batch_stride, p.q_row_stride, p.q_head_stride};
  ff_tensor q_rotated{};  // (batch, seqlen_q, heads, head_dim), contiguous, at the workspace's start
  size_t q_bytes = 0;
  const bool rotates_q = append_first != nullptr && append_first->rotary_cos.data != nullptr;
  if (rotates_q) {
    const int64_t row = static_cast<int64_t>(p.num_heads) * p.head_dim;
    q_rotated = {workspace, p.seqlen_q * row, row, p.head_dim};
    q_bytes = (static_cast<size_t>(p.batch) * p.seqlen_q * row * 2 + 255) / 256 * 256;
    p.q_batch_stride = q_rotated.batch_stride, p.q_row_stride = q_rotated.row_stride;
    p.q_head_stride = q_rotated.head_stride;
  }
  FwdPlan plan{};
  if (planned != nullptr)
    plan = *planned;
  else if (const Check c = plan_call(p, dt, &plan); c.failed())
    return c;
  // The decode kernel patches the new keys into its warps' first tiles: they must lie in the
  // sequence's last two tiles (decode_kernel.cuh). Behind the append kernel any number of new
  // keys will do; the step is still held to the decode kernel, the one measured that way
  // (prefill-shaped steps take the caller's two calls).
  if (p.seqlen_new > 0 && (!plan.decode || (append_first == nullptr && p.seqlen_new > plan.kernel.block_n)))
    return fail(FF_ERROR_UNSUPPORTED,
                "the K/V append does not fuse: the attention does not run on the decode kernel, or seqlen_new (%d) "
                "exceeds its K/V tile",
                p.seqlen_new);
  const size_t needed = q_bytes + plan.workspace_bytes;
  const size_t have = workspace == nullptr ? 0 : *workspace_bytes;
  if (needed > have) {
    *workspace_bytes = needed;
    return fail(FF_WORKSPACE_REQUIRED,
                "this call needs %zu bytes of workspace (split-KV partials, the rotated q), got %zu", needed, have);
  }
  if (needed > 0 && reinterpret_cast<uintptr_t>(workspace) % 256 != 0)
    return fail(FF_ERROR_INVALID_ARGUMENT, "workspace must be 256-byte aligned (got %p)", workspace);
  plan.programmatic = programmatic;
  if (append_first != nullptr) {
    ff_append_kv_args append = *append_first;
    if (rotates_q) append.q = q_caller, append.q_out = q_rotated;
    append.programmatic_launch = 1;  // it waits for its predecessor before touching memory
    cudaError_t err = launch_append_kv(append, stream);
    if (err != cudaSuccess) return fail(FF_ERROR_CUDA, "append kernel launch failed: %s", cudaGetErrorString(err));
    if (rotates_q) p.q = q_rotated.data, p.q_from_append = true;
    plan.programmatic = true;  // the decode kernel waits for the append where it must
  }
  const cudaError_t err =
      launch_fwd(p, dt, plan, static_cast<char*>(workspace) + (workspace == nullptr ? 0 : q_bytes), stream);
  if (err != cudaSuccess) return fail(FF_ERROR_CUDA, "kernel launch failed: %s", cudaGetErrorString(err));
  return ok();
}

// Checks a uniform-batch call and fills p; `empty`: nothing to compute or write.
Check check_fwd(const ff_fwd_args* a, size_t* workspace_bytes, FwdParams& p, bool& empty) {
  empty = false;
  if (a == nullptr) return fail(FF_ERROR_INVALID_ARGUMENT, "args is NULL");
  if (workspace_bytes == nullptr) return fail(FF_ERROR_INVALID_ARGUMENT, "workspace_bytes is NULL");
  if (a->batch_size < 0 || a->seqlen_q < 0 || a->seqlen_k < 0)
    return fail(FF_ERROR_INVALID_ARGUMENT, "batch_size (%d), seqlen_q (%d) and seqlen_k (%d) must be >= 0",
                a->batch_size, a->seqlen_q, a->seqlen_k);
  Check f = check_common(a->num_heads, a->num_heads_k, a->head_dim, a->softmax_scale, a->dtype);
  if (f.status != FF_OK) return f;
  if ((f = check_options(a->options, false)).status != FF_OK) return f;
  const ff_attn_options& o = a->options;
  if (o.block_table != nullptr && a->seqlen_k > static_cast<int64_t>(o.max_blocks) * o.page_size)
    return fail(FF_ERROR_INVALID_ARGUMENT, "seqlen_k (%d) exceeds the keys a block table row addresses (%d x %d)",
                a->seqlen_k, o.max_blocks, o.page_size);
  if (a->batch_size == 0 || a->seqlen_q == 0) {  // nothing to compute or write
    empty = true;
    return ok();
  }
  const bool has_keys = a->seqlen_k > 0;
  // K/V extents: (batch, seqlen_k) rows; a cache batch index's rows; or blocks of page_size rows.
  const int64_t kv_batch = o.block_table != nullptr    ? o.num_blocks
                           : o.kv_batch_idx != nullptr ? o.kv_batch_rows
                                                       : a->batch_size;
  const int64_t kv_rows = o.block_table != nullptr ? o.page_size : a->seqlen_k;
  const struct {
    const char* name;
    const ff_tensor& t;
    int64_t batch, rows, heads;
    bool needed;
  } tensors[] = {{"q", a->q, a->batch_size, a->seqlen_q, a->num_heads, true},
                 {"k", a->k, kv_batch, kv_rows, a->num_heads_k, has_keys},
                 {"v", a->v, kv_batch, kv_rows, a->num_heads_k, has_keys},
                 {"out", a->out, a->batch_size, a->seqlen_q, a->num_heads, true}};
  for (const auto& t : tensors)
    if (t.needed && (f = check_tensor(t.name, t.t, t.batch, t.rows, t.heads, a->head_dim, true)).status != FF_OK)
      return f;
  if ((f = check_no_overlap("out", a->out, a->batch_size, a->seqlen_q, a->num_heads, a->head_dim, true)).status !=
      FF_OK)
    return f;
  if ((f = check_aligned4("softmax_lse", a->softmax_lse, false)).status != FF_OK) return f;
  if ((f = check_aligned4("seqused_k", a->seqused_k, false)).status != FF_OK) return f;

  set_tensors(p, a->q, a->k, a->v, a->out);
  p.lse = a->softmax_lse;
  p.seqused_k = a->seqused_k;
  p.batch = a->batch_size, p.seqlen_q = a->seqlen_q, p.seqlen_k = a->seqlen_k;
  p.num_heads = a->num_heads, p.num_heads_k = a->num_heads_k, p.head_dim = a->head_dim;
  set_score_params(p, a->softmax_scale, a->is_causal != 0, o);
  return ok();
}

Check attn_fwd(const ff_fwd_args* a, void* workspace, size_t* workspace_bytes, cudaStream_t stream) {
  FwdParams p{};
  bool empty = false;
  const Check f = check_fwd(a, workspace_bytes, p, empty);
  if (f.status != FF_OK || empty) return f;
  return run(p, a->dtype, a->options.programmatic_launch != 0, workspace, workspace_bytes, stream);
}

// The same memory: one base, and one stride in each dimension that has more than one index (a
// size-1 dimension's stride never addresses memory, and callers leave it arbitrary).
bool same_view(const ff_tensor& x, const ff_tensor& y, int64_t batch, int64_t rows, int64_t heads) {
  return x.data == y.data && (batch <= 1 || x.batch_stride == y.batch_stride) &&
         (rows <= 1 || x.row_stride == y.row_stride) && (heads <= 1 || x.head_stride == y.head_stride);
}

// ff_attn_fwd_append: both calls checked, then checked to describe one step, then (where it
// fuses) the attention's parameters gain the append's (params.h) and run on the decode kernel.
Check attn_fwd_append(const ff_fwd_args* a, const ff_append_kv_args* ap, void* workspace, size_t* workspace_bytes,
                      cudaStream_t stream) {
  FwdParams p{};
  bool empty = false;
  Check f = check_fwd(a, workspace_bytes, p, empty);
  if (f.status != FF_OK) return f;
  if (ap == nullptr) return fail(FF_ERROR_INVALID_ARGUMENT, "append is NULL");
  if (const Check c = check_append(ap); c.failed()) return {c.status, "append: " + c.message};
  const ff_append_kv_args& b = *ap;
  const ff_attn_options& o = a->options;
  const bool paged = o.block_table != nullptr;
  if (b.dtype != a->dtype || b.head_dim != a->head_dim || b.num_heads != a->num_heads ||
      b.num_heads_k != a->num_heads_k || b.batch_size != a->batch_size || b.seqlen_q != a->seqlen_q)
    return fail(FF_ERROR_INVALID_ARGUMENT,
                "append: dtype, head_dim, num_heads, num_heads_k, batch_size and seqlen_q must be the attention's");
  if (!same_view(b.k_cache, a->k, b.cache_batch, b.cache_seqlen, b.num_heads_k) ||
      !same_view(b.v_cache, a->v, b.cache_batch, b.cache_seqlen, b.num_heads_k))
    return fail(FF_ERROR_INVALID_ARGUMENT,
                "append.k_cache and v_cache must be the attention's k and v (data, strides)");
  if (a->seqused_k != b.cache_seqlens)
    return fail(FF_ERROR_INVALID_ARGUMENT,
                "seqused_k must be append.cache_seqlens (the keys cached before the new ones)");
  if (b.block_table != o.block_table ||
      (paged && (b.block_table_stride != o.block_table_stride || b.max_blocks != o.max_blocks ||
                 b.cache_batch != o.num_blocks || b.cache_seqlen != o.page_size)))
    return fail(FF_ERROR_INVALID_ARGUMENT,
                "append: the block table (pointer, stride, max_blocks) and cache extents (num_blocks, page_size) must "
                "be the attention's");
  if (!paged && (b.cache_batch_idx != o.kv_batch_idx || b.cache_seqlen != a->seqlen_k ||
                 (o.kv_batch_idx != nullptr && b.cache_batch != o.kv_batch_rows)))
    return fail(FF_ERROR_INVALID_ARGUMENT,
                "append: cache_batch_idx, cache_seqlen and cache_batch must be the attention's kv_batch_idx, seqlen_k "
                "and kv_batch_rows");
  if (b.q.data != nullptr || b.q_out.data != nullptr || b.seqlens_out != nullptr)
    return fail(FF_ERROR_INVALID_ARGUMENT, "append.q, q_out and seqlens_out must be NULL (q is rotated as it is read)");

  // Where the step does not fuse, the caller makes the two calls.
  if (empty || b.seqlen_new < 1 || b.seqlen_new > a->seqlen_k)
    return fail(FF_ERROR_UNSUPPORTED, "the K/V append does not fuse: no query, or seqlen_new (%d) not in [1, seqlen_k]",
                b.seqlen_new);
  if (o.k_start != nullptr) return fail(FF_ERROR_UNSUPPORTED, "the K/V append does not fuse with left padding");
  // Every new key must lie in some query's band (the kernel visits only those tiles): true
  // when the queries sit on the new keys (seqlen_new <= seqlen_q) or no left edge cuts them.
  if (o.has_window && o.window_left >= 0 && b.seqlen_new > a->seqlen_q)
    return fail(FF_ERROR_UNSUPPORTED,
                "the K/V append does not fuse: a left window edge with more new keys than queries");
  if (!append_vectorisable(b) || !aligned_for_vectors(a->q))
    return fail(FF_ERROR_UNSUPPORTED, "the K/V append does not fuse: k, v, the caches or q lack 16-byte accesses");

  p.seqlen_new = b.seqlen_new;
  // Two launches, made here, where the step's decode instance loads cached keys before it
  // waits for another grid (early K/V: plain scores over a contiguous cache without cache rows,
  // or over pages the whole-page instance takes), and with rotary tables over any contiguous
  // cache: the append kernel (rotating q once, into the workspace, where there are tables), and
  // the decode kernel launched programmatically behind it, which loads its first tiles of cached
  // keys while the append runs (FwdParams::new_keys_in_cache). GPU time a token's append adds
  // to a decode step over 4k cached keys, fused -> two launches (H200, 2026-12-03,
  // docs/bench-history/2026-12-03.md; batch 1 / 8): pages of 16 with rotary 2.2 / 2.1 -> 0.2 / 0.2-0.3 us,
  // without 0.6 / 1.5 -> 0.3 / 0.1-0.4, a contiguous cache without rotary 0.5 / 1.7 -> 0.2 /
  // 0.6-0.7; at batch 64 the paged rotary step itself 133.6-133.8 -> 128.3-128.4 us. Other
  // steps stay fused: behind their decode instance (IndexedKV or the variant one, which load
  // nothing early) two launches were slower at batch 8 (2.3-3.3 against 0.4-0.8 us, 2026-12-01).
  // So does one token over a contiguous cache whose decode grid fits one wave of the GPU, but
  // not beside the append kernel's CTAs (append_pushes_decode_wave): behind that kernel some
  // decode CTAs would wait for its CTAs to retire, a short second wave, where the fused
  // instance runs in one. us added, two launches -> fused (H200, 2026-12-04; medians of 3-4
  // draws of ragged lengths over 4k keys, two rounds; docs/bench-history/2026-12-04.md): batch 64 (512 CTAs
  // in 528 slots; 32 append CTAs, 160 with rotary), behind a projection kernel, 0.1-2.0 ->
  // 1.6-2.0 without rotary (the spread over draws -7.3 to 5.4 -> 1.3 to 2.5), 1.9-2.9 -> 2.0-2.2
  // with it. Where the grid fits beside the append (batch 1-48) or takes more waves anyway
  // (batch 96, 128) the two launches were as fast or faster: batch 96 / 128, back to back and
  // behind a projection, 0.0-1.9 / 0.7-2.6 against 1.2-2.8 / 2.4-3.4 fused. One row was mixed:
  // batch 48 with rotary (384 CTAs, 120 append CTAs, 144 free slots) 0.8 / -1.7 -> 1.7 / 2.4
  // back to back but 4.3 / 3.4 -> 1.4 / 2.1 behind a projection; the rule keeps two launches.
  // Over pages the two launches were as fast or faster at every batch.
  const DType dt = a->dtype == FF_DTYPE_FLOAT16 ? DType::kFloat16 : DType::kBFloat16;
  const bool rotary = b.rotary_cos.data != nullptr;
  const bool two_launches = decode_loads_cached_keys_early(p, dt) || (rotary && !paged);
  if (two_launches) {
    // The plan of the step behind the append kernel decides the exception, and runs it if not.
    FwdParams behind = p;
    behind.new_keys_in_cache = true;  // the plain or whole-page decode instance where nothing else is asked
    FwdPlan plan{};
    if (const Check c = plan_call(behind, dt, &plan); c.failed()) return c;
    const bool stays_fused =
        !paged && b.seqlen_new == 1 && plan.decode && append_pushes_decode_wave(plan, append_kv_ctas(b, rotary));
    if (!stays_fused) return run(behind, a->dtype, true, workspace, workspace_bytes, stream, &b, &plan);
  }
  p.k_new = b.k.data, p.v_new = b.v.data;
  p.k_new_batch_stride = b.k.batch_stride, p.k_new_row_stride = b.k.row_stride, p.k_new_head_stride = b.k.head_stride;
  p.v_new_batch_stride = b.v.batch_stride, p.v_new_row_stride = b.v.row_stride, p.v_new_head_stride = b.v.head_stride;
  p.rotary = rotary_tables(b);
  p.rotary_query_per_token = b.query_per_token != 0;
  p.features = true;  // the variant instances carry the append (decode_kv without score variants)
  return run(p, a->dtype, o.programmatic_launch != 0, workspace, workspace_bytes, stream);
}

Check attn_varlen_fwd(const ff_varlen_fwd_args* a, void* workspace, size_t* workspace_bytes, cudaStream_t stream) {
  if (a == nullptr) return fail(FF_ERROR_INVALID_ARGUMENT, "args is NULL");
  if (workspace_bytes == nullptr) return fail(FF_ERROR_INVALID_ARGUMENT, "workspace_bytes is NULL");
  if (a->batch_size < 0 || a->max_seqlen_q < 0 || a->max_seqlen_k < 0 || a->total_q < 0 || a->total_k < 0)
    return fail(FF_ERROR_INVALID_ARGUMENT,
                "batch_size (%d), max_seqlen_q (%d), max_seqlen_k (%d), total_q (%d) and total_k (%d) must be >= 0",
                a->batch_size, a->max_seqlen_q, a->max_seqlen_k, a->total_q, a->total_k);
  if (a->batch_size == INT32_MAX) return fail(FF_ERROR_INVALID_ARGUMENT, "batch_size is too large");
  Check f = check_common(a->num_heads, a->num_heads_k, a->head_dim, a->softmax_scale, a->dtype);
  if (f.status != FF_OK) return f;
  if ((f = check_options(a->options, true)).status != FF_OK) return f;
  const ff_attn_options& o = a->options;
  const bool paged = o.block_table != nullptr;
  if (a->batch_size == 0 || a->total_q == 0 || a->max_seqlen_q == 0) return ok();
  if ((f = check_aligned4("cu_seqlens_q", a->cu_seqlens_q, true)).status != FF_OK) return f;
  if ((f = check_aligned4("cu_seqlens_k", a->cu_seqlens_k, true)).status != FF_OK) return f;
  if ((f = check_aligned4("seqused_k", a->seqused_k, false)).status != FF_OK) return f;
  if ((f = check_aligned4("softmax_lse", a->softmax_lse, false)).status != FF_OK) return f;
  const bool has_keys = (paged || a->total_k > 0) && a->max_seqlen_k > 0;
  const struct {
    const char* name;
    const ff_tensor& t;
    int64_t batch, rows, heads;
    bool batch_dim;  // paged K/V: (num_blocks, page_size, heads_k, d)
    bool needed;
  } tensors[] = {
      {"q", a->q, 1, a->total_q, a->num_heads, false, true},
      {"k", a->k, paged ? o.num_blocks : 1, paged ? o.page_size : a->total_k, a->num_heads_k, paged, has_keys},
      {"v", a->v, paged ? o.num_blocks : 1, paged ? o.page_size : a->total_k, a->num_heads_k, paged, has_keys},
      {"out", a->out, 1, a->total_q, a->num_heads, false, true}};
  for (const auto& t : tensors)
    if (t.needed && (f = check_tensor(t.name, t.t, t.batch, t.rows, t.heads, a->head_dim, t.batch_dim)).status != FF_OK)
      return f;
  if ((f = check_no_overlap("out", a->out, 1, a->total_q, a->num_heads, a->head_dim, false)).status != FF_OK) return f;

  FwdParams p{};
  set_tensors(p, a->q, a->k, a->v, a->out);
  p.q_batch_stride = p.o_batch_stride = 0;
  if (!paged) p.k_batch_stride = p.v_batch_stride = 0;  // paged: the block stride
  p.lse = a->softmax_lse;
  p.cu_seqlens_q = a->cu_seqlens_q;
  p.cu_seqlens_k = a->cu_seqlens_k;
  p.seqused_k = a->seqused_k;
  p.total_q = a->total_q, p.total_k = a->total_k;
  p.batch = a->batch_size;
  // A sequence can never be longer than the packed tensor (or the block table row) that holds it.
  const int64_t key_rows = paged ? static_cast<int64_t>(o.max_blocks) * o.page_size : a->total_k;
  p.seqlen_q = a->max_seqlen_q < a->total_q ? a->max_seqlen_q : a->total_q;
  p.seqlen_k = static_cast<int>(std::min<int64_t>(a->max_seqlen_k, key_rows));
  p.num_heads = a->num_heads, p.num_heads_k = a->num_heads_k, p.head_dim = a->head_dim;
  set_score_params(p, a->softmax_scale, a->is_causal != 0, o);
  return run(p, a->dtype, o.programmatic_launch != 0, workspace, workspace_bytes, stream);
}

}  // namespace

// For the C API's other translation units (merge_api.cpp): the message ff_last_error() gives.
void set_last_error(const std::string& message) { g_last_error = message; }

}  // namespace forge_flash

extern "C" {

ff_status ff_attn_fwd(const ff_fwd_args* args, void* workspace, size_t* workspace_bytes, cudaStream_t stream) {
  return forge_flash::report(forge_flash::attn_fwd(args, workspace, workspace_bytes, stream));
}

ff_status ff_attn_fwd_append(const ff_fwd_args* attn, const ff_append_kv_args* append, void* workspace,
                             size_t* workspace_bytes, cudaStream_t stream) {
  return forge_flash::report(forge_flash::attn_fwd_append(attn, append, workspace, workspace_bytes, stream));
}

ff_status ff_attn_varlen_fwd(const ff_varlen_fwd_args* args, void* workspace, size_t* workspace_bytes,
                             cudaStream_t stream) {
  return forge_flash::report(forge_flash::attn_varlen_fwd(args, workspace, workspace_bytes, stream));
}

const char* ff_last_error(void) { return forge_flash::g_last_error.c_str(); }

}  // extern "C"
