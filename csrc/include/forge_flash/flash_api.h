// forge-flash C API: FlashAttention-2 style forward attention for SM80/SM90.
//
// Two entry points, as in the design note: uniform-length batches and packed
// variable-length batches. Both validate every size, stride and pointer they are
// given before touching the GPU and return a status; ff_last_error() gives the
// message of the last call on the calling thread.
//
// Conventions shared with the Python layer:
//  * q/k/v/out hold float16 or bfloat16; the last (head_dim) dimension is contiguous,
//    every other dimension has an arbitrary stride given in elements.
//  * GQA/MQA: num_heads_k divides num_heads; query head h reads KV head h / (num_heads / num_heads_k).
//  * Causal masks are aligned bottom-right: query row i sees key j iff j <= i + seqlen_k - seqlen_q.
//    A query row that sees no key gets output 0 and LSE -inf.
//  * softmax_lse (optional, NULL to skip) is float32 natural-log, laid out
//    (batch, num_heads, seqlen_q) for ff_attn_fwd and (num_heads, total_q) for ff_attn_varlen_fwd.
//  * Workspace (split-KV partial results): *workspace_bytes gives the size of `workspace`
//    (0 with NULL). When the call needs more, nothing is launched, *workspace_bytes is set
//    to the size needed and FF_WORKSPACE_REQUIRED is returned: allocate that much
//    (stream-ordered, e.g. from the framework's allocator) and call again. Most prefill
//    calls need none, so one call suffices. The launch path never allocates or
//    synchronises, so it can be captured in a CUDA graph.
//  * Launches go to `stream` on the current device; the caller makes the device that
//    owns the tensors current.
#ifndef FORGE_FLASH_FLASH_API_H_
#define FORGE_FLASH_FLASH_API_H_

#include <cuda_runtime_api.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
  FF_OK = 0,
  FF_ERROR_INVALID_ARGUMENT = 1,  // a size, stride, pointer or flag is out of range
  FF_ERROR_UNSUPPORTED = 2,       // valid, but this build or GPU cannot run it
  FF_ERROR_CUDA = 3,              // the CUDA runtime reported an error
  FF_WORKSPACE_REQUIRED = 4,      // nothing launched: *workspace_bytes now says how much is needed
} ff_status;

typedef enum { FF_DTYPE_FLOAT16 = 0, FF_DTYPE_BFLOAT16 = 1 } ff_dtype;

// A 4-D (batch, seqlen, heads, head_dim) view; for varlen tensors batch_stride is ignored.
typedef struct {
  void* data;
  int64_t batch_stride;  // elements
  int64_t row_stride;    // elements between consecutive tokens
  int64_t head_stride;   // elements between consecutive heads
} ff_tensor;

typedef struct {
  ff_tensor q, k, v, out;    // q/out: (batch, seqlen_q, num_heads, d); k/v: (batch, seqlen_k, num_heads_k, d)
  float* softmax_lse;        // optional, (batch, num_heads, seqlen_q)
  const int32_t* seqused_k;  // optional, (batch,): row b uses only the first seqused_k[b] keys
                             // (clamped to [0, seqlen_k] on the device; used for KV caches)
  int batch_size, seqlen_q, seqlen_k, num_heads, num_heads_k, head_dim;
  float softmax_scale;
  int is_causal;
  ff_dtype dtype;
} ff_fwd_args;

typedef struct {
  ff_tensor q, k, v, out;       // q/out: (total_q, num_heads, d); k/v: (total_k, num_heads_k, d)
  float* softmax_lse;           // optional, (num_heads, total_q)
  const int32_t* cu_seqlens_q;  // (batch + 1,), device, non-decreasing from 0 to total_q
  const int32_t* cu_seqlens_k;  // (batch + 1,), device, non-decreasing from 0 to total_k
  const int32_t* seqused_k;     // optional, (batch,)
  int batch_size, max_seqlen_q, max_seqlen_k, total_q, total_k;
  int num_heads, num_heads_k, head_dim;
  float softmax_scale;
  int is_causal;
  ff_dtype dtype;
} ff_varlen_fwd_args;

// cu_seqlens live on the device and are not read back by the host (that would
// synchronise): the kernels clamp every sequence to [0, total] and to max_seqlen, so
// malformed values can never cause an out-of-bounds access; the Python layer rejects them.

ff_status ff_attn_fwd(const ff_fwd_args* args, void* workspace, size_t* workspace_bytes, cudaStream_t stream);
ff_status ff_attn_varlen_fwd(const ff_varlen_fwd_args* args, void* workspace, size_t* workspace_bytes,
                             cudaStream_t stream);

// Message of the last call on this thread: why it failed, or "" if it succeeded.
const char* ff_last_error(void);

// ---- Merging partial attention states (cascade / shared-prefix attention, context parallelism) ----
// ff_merge_states merges num_parts partial results of the same queries over disjoint key sets,
// row by row, in float32 and in part order (deterministic):
//   lse = log(sum_i exp(lse_i)),  out = sum_i exp(lse_i - lse) * out_i.
// A part whose LSE is -inf (it saw no key) weighs 0 and its out is never read; a row where
// every part is -inf gets out 0 and LSE -inf; a NaN LSE (or a NaN in a weighed out) gives NaN.
// Layouts: every out (batch, seqlen, num_heads, head_dim) with any non-negative strides in
// elements of its own dtype and a contiguous last dimension, aligned to its element size;
// every LSE float32 (batch, num_heads, seqlen), any non-negative strides. Parts may mix dtypes.
// `out` (and `out_lse`) may be exactly one of the parts (same pointer, strides and dtype: an
// in-place merge) but must not otherwise overlap a part. No workspace; the launch never
// allocates or synchronises, so it can be captured in a CUDA graph.
#define FF_MERGE_MAX_PARTS 16

typedef enum { FF_MERGE_FLOAT16 = 0, FF_MERGE_BFLOAT16 = 1, FF_MERGE_FLOAT32 = 2 } ff_merge_dtype;

// A float32 (batch, num_heads, seqlen) view, strides in elements.
typedef struct {
  float* data;
  int64_t batch_stride, head_stride, row_stride;
} ff_lse_tensor;

typedef struct {
  ff_tensor out;  // (batch, seqlen, num_heads, head_dim); read only
  ff_merge_dtype dtype;
  ff_lse_tensor lse;  // read only
} ff_merge_part;

typedef struct {
  ff_merge_part parts[FF_MERGE_MAX_PARTS];  // the first num_parts are used
  int num_parts;
  ff_tensor out;
  ff_merge_dtype out_dtype;
  ff_lse_tensor out_lse;  // optional: data NULL to skip
  int batch_size, seqlen, num_heads, head_dim;
} ff_merge_args;

ff_status ff_merge_states(const ff_merge_args* args, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif  // FORGE_FLASH_FLASH_API_H_
