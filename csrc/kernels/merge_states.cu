// The public merge of partial attention states (ff_merge_states): one warp per output row.
//
// A lane first reads every part's LSE of its row (the same address across the warp: one
// broadcast load per part) and works out the weights itself, so the warp needs no shuffle or
// shared memory. It then owns columns lane, lane + 32, ...: its loads of a row are coalesced
// across the warp, and the four columns of an unrolled step are in flight together. Part
// dtypes are read at run time (a branch that is uniform across the grid): the common call
// merges a float32 running state with a 16-bit block, and a template per dtype mix would
// multiply instantiations for no measurable gain on a memory-bound loop.
//
// In place: `out` may be one of the parts. Each element is read and then written by the same
// lane, and the LSE is written only after the whole warp has read every part's LSE.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "lse_merge.cuh"
#include "merge_states.h"

namespace forge_flash {
namespace {

constexpr int kColumnSteps = 4;  // columns per lane in flight: 4 x 32 covers head_dim 128

__device__ __forceinline__ float load_element(const void* base, ff_merge_dtype dtype, int64_t i) {
  switch (dtype) {
    case FF_MERGE_FLOAT32:
      return static_cast<const float*>(base)[i];
    case FF_MERGE_FLOAT16:
      return __half2float(static_cast<const __half*>(base)[i]);
    default:
      return __bfloat162float(static_cast<const __nv_bfloat16*>(base)[i]);
  }
}

__device__ __forceinline__ void store_element(void* base, ff_merge_dtype dtype, int64_t i, float x) {
  switch (dtype) {
    case FF_MERGE_FLOAT32:
      static_cast<float*>(base)[i] = x;
      break;
    case FF_MERGE_FLOAT16:
      static_cast<__half*>(base)[i] = __float2half_rn(x);
      break;
    default:
      static_cast<__nv_bfloat16*>(base)[i] = __float2bfloat16_rn(x);
  }
}

__device__ __forceinline__ int64_t element_size(ff_merge_dtype dtype) { return dtype == FF_MERGE_FLOAT32 ? 4 : 2; }

__device__ __forceinline__ int64_t row_offset(const ff_tensor& t, int64_t b, int64_t s, int64_t h) {
  return b * t.batch_stride + s * t.row_stride + h * t.head_stride;
}

__device__ __forceinline__ int64_t lse_offset(const ff_lse_tensor& t, int64_t b, int64_t s, int64_t h) {
  return b * t.batch_stride + h * t.head_stride + s * t.row_stride;
}

__global__ void __launch_bounds__(kMergeRowsPerCta * 32) merge_states_kernel(const __grid_constant__ ff_merge_args a) {
  const int lane = threadIdx.x % 32;
  // Rows in (batch, seqlen, head) order: consecutive warps write consecutive heads of a token.
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kMergeRowsPerCta + threadIdx.x / 32;
  const int64_t h = row % a.num_heads, token = row / a.num_heads;
  const int64_t s = token % a.seqlen, b = token / a.seqlen;
  if (b >= a.batch_size) return;

  float lse[FF_MERGE_MAX_PARTS];
  float mx = -INFINITY;
#pragma unroll
  for (int i = 0; i < FF_MERGE_MAX_PARTS; ++i) {
    if (i >= a.num_parts) break;
    const ff_lse_tensor& t = a.parts[i].lse;
    lse[i] = t.data[lse_offset(t, b, s, h)];
    mx = fmaxf(mx, lse[i]);
  }
  float weight[FF_MERGE_MAX_PARTS];
  float sum = 0.f;
#pragma unroll
  for (int i = 0; i < FF_MERGE_MAX_PARTS; ++i) {
    if (i >= a.num_parts) break;
    weight[i] = merge_weight(lse[i], mx);
    sum += weight[i];  // fixed order: deterministic
  }
  // sum == 0: no part saw a key and nothing is accumulated (out 0); a NaN sum stays NaN.
  const float inv = sum == 0.f ? 0.f : 1.f / sum;

  for (int c0 = lane; c0 < a.head_dim; c0 += 32 * kColumnSteps) {
    float acc[kColumnSteps] = {};
#pragma unroll
    for (int i = 0; i < FF_MERGE_MAX_PARTS; ++i) {
      if (i >= a.num_parts) break;
      if (lse[i] == -INFINITY) continue;  // weighs 0: its out is never read (it may hold anything)
      const ff_merge_part& part = a.parts[i];
      const char* base =
          static_cast<const char*>(part.out.data) + row_offset(part.out, b, s, h) * element_size(part.dtype);
#pragma unroll
      for (int u = 0; u < kColumnSteps; ++u) {
        const int col = c0 + 32 * u;
        if (col < a.head_dim) acc[u] = fmaf(weight[i], load_element(base, part.dtype, col), acc[u]);
      }
    }
    char* dst = static_cast<char*>(a.out.data) + row_offset(a.out, b, s, h) * element_size(a.out_dtype);
#pragma unroll
    for (int u = 0; u < kColumnSteps; ++u) {
      const int col = c0 + 32 * u;
      if (col < a.head_dim) store_element(dst, a.out_dtype, col, acc[u] * inv);
    }
  }
  __syncwarp();  // every lane has read the parts' LSEs (out_lse may be one of them)
  if (lane == 0 && a.out_lse.data != nullptr) a.out_lse.data[lse_offset(a.out_lse, b, s, h)] = merged_lse(mx, sum);
}

}  // namespace

cudaError_t launch_merge_states(const ff_merge_args& args, cudaStream_t stream) {
  const int64_t rows = static_cast<int64_t>(args.batch_size) * args.seqlen * args.num_heads;
  const int64_t ctas = (rows + kMergeRowsPerCta - 1) / kMergeRowsPerCta;
  if (ctas == 0) return cudaSuccess;
  merge_states_kernel<<<static_cast<unsigned>(ctas), kMergeRowsPerCta * 32, 0, stream>>>(args);
  return cudaGetLastError();
}

}  // namespace forge_flash
