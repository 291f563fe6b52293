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
//    A query row that sees no key gets output 0 and LSE -inf (the sink's logit with sinks).
//  * softmax_scale: any finite value (0 and negative included).
//  * Options (ff_attn_options; all zero = none), with offset = seqlen_k - seqlen_q of
//    the sequence: a window (query i sees key j iff i + offset - left <= j <= i + offset + right,
//    -1 unbounded; is_causal forces right = 0), softcap (scores = softcap * tanh(scale * q.k /
//    softcap)), ALiBi (scores -= slope * |i + offset - j|), sinks (a logit per head in every
//    row's softmax denominator, value 0), paged K/V (k/v are (num_blocks, page_size, heads_k, d)
//    and key t of sequence b is row t % page_size of block block_table[b][t / page_size]), a
//    cache batch index (not with paging) and per-sequence key starts (uniform batches only).
//  * Limits (head dims, alignment, strides): forge_flash/limits.h.
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

#include "forge_flash/limits.h"

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

// The dtype enums hold one enumerator that is not a dtype, INT32_MIN: with it every int32 is
// a value the enum may hold, so a bad code from a C caller (or a binding's cast) reaches the
// API's check, which refuses it, where otherwise reading it in C++ would be undefined
// behaviour (an enum without it holds only the values its enumerators' bits span).
typedef enum { FF_DTYPE_FLOAT16 = 0, FF_DTYPE_BFLOAT16 = 1, FF_DTYPE_ANY_INT32_ = INT32_MIN } ff_dtype;

// A 4-D (batch, seqlen, heads, head_dim) view; for varlen tensors batch_stride is ignored.
typedef struct {
  void* data;
  int64_t batch_stride;  // elements
  int64_t row_stride;    // elements between consecutive tokens
  int64_t head_stride;   // elements between consecutive heads
} ff_tensor;

// The variants and the K/V addressing of one call; all zero means none of them (so callers
// that zero-initialise their arguments keep plain attention). Device arrays are read by the
// kernels, never by the host; every index read from them is clamped in the kernels.
typedef struct {
  int has_window;                 // 0: no window (the two edges are ignored)
  int window_left, window_right;  // keys around the aligned diagonal; -1 = unbounded
  float softcap;                  // 0 = off; else > 0 and finite
  const float* alibi_slopes;      // optional float32 (num_heads,), or (batch, num_heads):
  int64_t alibi_batch_stride;     //   elements between batch rows (0: one slope per head)
  const float* sinks;             // optional float32 (num_heads,)
  const int32_t* block_table;     // optional paged K/V: int32 (batch, max_blocks)
  int64_t block_table_stride;     //   elements between batch rows of block_table
  int max_blocks;                 //   columns of block_table
  int page_size, num_blocks;      //   k/v (num_blocks, page_size, heads_k, d): batch_stride = block
  const int32_t* kv_batch_idx;    // optional (batch,): sequence b reads k/v batch row kv_batch_idx[b]
  int kv_batch_rows;              //   rows of k/v (their batch extent) with kv_batch_idx
  const int32_t* k_start;         // optional (batch,): sequence b's keys start at k_start[b]
  // Nonzero: the launch may begin while the previous kernel in the stream is still running
  // (programmatic dependent launch, compute capability 9.0+ with sm_90 code; ignored where
  // not available). The kernels wait for that kernel's completion before their first memory
  // access, so this changes timing only: after ff_append_kv, the attention's launch and start
  // overlap the append's tail.
  int programmatic_launch;
  // Split-KV: 0 = the dispatcher chooses; n >= 1 = split each query block's keys into n parts
  // (1 = no split), fewer where the keys hold fewer of the kernel's K/V steps or n exceeds
  // FF_MAX_SPLITS (FlashAttention's num_splits). The answer is the same up to rounding.
  int num_splits;
} ff_attn_options;

typedef struct {
  ff_tensor q, k, v, out;    // q/out: (batch, seqlen_q, num_heads, d); k/v: (batch, seqlen_k, num_heads_k, d)
  float* softmax_lse;        // optional, (batch, num_heads, seqlen_q)
  const int32_t* seqused_k;  // optional, (batch,): row b uses only the first seqused_k[b] keys
                             // (clamped to [0, seqlen_k] on the device; used for KV caches)
  int batch_size, seqlen_q, seqlen_k, num_heads, num_heads_k, head_dim;
  float softmax_scale;
  int is_causal;
  ff_dtype dtype;
  ff_attn_options options;  // all zero for none; with paging, seqlen_k = keys a
                            // sequence can address (max_blocks * page_size at most)
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
  ff_attn_options options;  // paged K/V: cu_seqlens_k counts each sequence's keys and total_k
                            // is ignored; kv_batch_idx and k_start are not taken here
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

typedef enum {
  FF_MERGE_FLOAT16 = 0,
  FF_MERGE_BFLOAT16 = 1,
  FF_MERGE_FLOAT32 = 2,
  FF_MERGE_ANY_INT32_ = INT32_MIN,  // not a dtype: see ff_dtype
} ff_merge_dtype;

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

// ---- Appending new keys/values to a KV cache (flash_attn_with_kvcache's first step) ----
// ff_append_kv writes k/v (batch, seqlen_new, num_heads_k, head_dim) into the caches in one
// launch: new key i of sequence b goes to key position t = cache_seqlens[b] + i of that
// sequence's cache (FlashAttention-2's positions; left padding counts as cached keys):
//  * contiguous caches (cache_batch, cache_seqlen, num_heads_k, head_dim): row
//    cache_batch_idx[b] (b without it), key t;
//  * paged caches (num_blocks, page_size, num_heads_k, head_dim) with block_table: row
//    t % page_size of block block_table[b][t / page_size] (cache_batch = num_blocks,
//    cache_seqlen = page_size; no cache_batch_idx: select the block table rows instead).
// With rotary tables (cos/sin (seqlen_ro, rotary_dim / 2)), the keys are rotated at their
// positions before they are stored (k itself is read only), and q (optional) is rotated into
// q_out: query i of sequence b at cache_seqlens[b] + i when query_per_token, else all at
// cache_seqlens[b]. The first rotary_dim features rotate in pairs, (2j, 2j + 1) when
// rotary_interleaved, else (j, j + rotary_dim / 2); with c, s = cos/sin[position][j] in float32,
// x0' = x0 * c - x1 * s and x1' = x0 * s + x1 * c (each product and sum rounded to float32, no
// fused multiply-add), rounded once to the dtype; every other feature is copied bit for bit.
// seqlens_out (optional) receives cache_seqlens[b] + seqlen_new: the attention's key counts.
// Device values are read by the kernel only, never by the host: every index is clamped
// (positions to [0, capacity - 1], rotary rows to [0, seqlen_ro - 1], cache rows and block
// ids into the cache), so invalid values never address memory outside the tensors.
// Layouts: any non-negative strides in elements with a contiguous last dimension, each base
// aligned to its element; 16-byte aligned bases and strides that are multiples of 8 elements
// take vectorised accesses. q_out must not overlap q, k, v or the caches, nor seqlens_out
// cache_seqlens; k and v must not overlap the caches. No workspace; the launch never allocates
// or synchronises, so it can be captured in a CUDA graph.
typedef struct {
  const void* data;                // (seqlen_ro, rotary_dim / 2), read only
  int64_t row_stride, col_stride;  // elements
} ff_rotary_table;

typedef struct {
  ff_tensor k, v;                          // (batch, seqlen_new, num_heads_k, head_dim); read only
  ff_tensor k_cache, v_cache;              // (cache_batch, cache_seqlen, num_heads_k, head_dim)
  ff_tensor q, q_out;                      // optional, with rotary: (batch, seqlen_q, num_heads, head_dim)
  const int32_t* cache_seqlens;            // (batch,): keys cached per sequence
  int32_t* seqlens_out;                    // optional (batch,): cache_seqlens + seqlen_new
  const int32_t* cache_batch_idx;          // optional (batch,): cache row of sequence b (contiguous)
  const int32_t* block_table;              // optional paged caches: (batch, max_blocks)
  int64_t block_table_stride;              //   elements between batch rows
  int max_blocks;                          //   columns
  int cache_batch, cache_seqlen;           // the caches' first two extents (paged: num_blocks, page_size)
  ff_rotary_table rotary_cos, rotary_sin;  // optional (data NULL): no rotary
  ff_merge_dtype rotary_dtype;             // of both tables: float16, bfloat16 or float32
  int rotary_dim, seqlen_ro;               // rotary_dim even, in [2, head_dim]
  int rotary_interleaved, query_per_token;
  int batch_size, seqlen_new, seqlen_q, num_heads, num_heads_k, head_dim;
  ff_dtype dtype;           // of k, v, the caches, q and q_out
  int programmatic_launch;  // as in ff_attn_options: overlap the previous kernel's tail
} ff_append_kv_args;

ff_status ff_append_kv(const ff_append_kv_args* args, cudaStream_t stream);

// ---- A decode step with its K/V append fused into the attention (one launch) ----
// ff_attn_fwd_append(attn, append) computes what ff_append_kv(append) followed by
// ff_attn_fwd(attn) would, where attn's k/v are the caches and attn.seqused_k the keys cached
// before the new ones, with the q rotation done as the attention loads q: new key i of sequence
// b is stored at cache_seqlens[b] + i (rotated), sequence b attends to cache_seqlens[b] +
// seqlen_new keys, and attn.q is read rotated as ff_append_kv would have written q_out. The
// attention kernel takes the new keys from append.k/v itself, so nothing waits for another
// grid; except where the attention's instance loads cached keys early (plain scores over a
// contiguous cache without cache_batch_idx, or over power-of-two pages of at least 8 keys up
// to head_dim 64, 16 above), and with rotary tables over any contiguous cache: there the call
// makes the two launches itself (the append kernel, which with rotary tables rotates q into the
// workspace, which then needs room for it; the attention loads the cached keys while the
// append runs). The two describe one step:
//  * append.k_cache / v_cache are attn.k / v (same data and strides); attn.seqused_k is
//    append.cache_seqlens; the paging (block_table, its stride and width, num_blocks =
//    cache_batch, page_size = cache_seqlen) or cache_batch_idx = kv_batch_idx is the same;
//  * dtype, head_dim, num_heads, num_heads_k, batch_size and seqlen_q are the same;
//  * append.q, q_out and seqlens_out are NULL.
// Both are checked as the two entry points check them. Where the step does not fuse (the
// attention does not run on the decode kernel: more than 16 query rows per KV head, or left
// padding (k_start), or layouts without 16-byte accesses, or nothing to attend), it returns
// FF_ERROR_UNSUPPORTED and launches nothing, so that the caller makes the two calls.
ff_status ff_attn_fwd_append(const ff_fwd_args* attn, const ff_append_kv_args* append, void* workspace,
                             size_t* workspace_bytes, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif  // FORGE_FLASH_FLASH_API_H_
