// Split-KV combine: merges the per-split partial outputs of one output row
//   lse = log(sum_s exp(lse_s)),  O = sum_s exp(lse_s - lse) * O_s
// summing the splits in a fixed order, so the result is deterministic.
#pragma once

#include <math.h>

#include "params.h"

namespace forge_flash {

constexpr int kCombineWarps = 4;
constexpr int kMaxSplits = 128;

template <typename T>
__global__ void __launch_bounds__(kCombineWarps * 32) combine_kernel(const __grid_constant__ FwdParams p) {
  __shared__ float weights[kCombineWarps][kMaxSplits];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kCombineWarps + warp;
  if (row >= p.num_rows) return;

  float max_lse = -INFINITY;
  for (int s = lane; s < p.num_splits; s += 32) max_lse = fmaxf(max_lse, p.partial_lse[s * p.num_rows + row]);
#pragma unroll
  for (int off = 16; off > 0; off /= 2) max_lse = fmaxf(max_lse, __shfl_xor_sync(0xffffffffu, max_lse, off));

  float sum = 0.f;
  for (int s = lane; s < p.num_splits; s += 32) {
    const float lse_s = p.partial_lse[s * p.num_rows + row];
    // A split that saw no key has LSE -inf and contributes nothing (its O is never read).
    const float w = max_lse == -INFINITY ? 0.f : expf(lse_s - max_lse);
    weights[warp][s] = w;
    sum += w;
  }
#pragma unroll
  for (int off = 16; off > 0; off /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, off);
  __syncwarp();
  const bool empty = !(sum > 0.f);
  const float inv_sum = empty ? 0.f : 1.f / sum;

  // Which output element this LSE index stands for.
  int64_t out_offset;
  if (p.cu_seqlens_q != nullptr) {
    const int64_t head = row / p.total_q, tq = row % p.total_q;
    out_offset = tq * p.o_row_stride + head * p.o_head_stride;
  } else {
    const int64_t q = row % p.seqlen_q, bh = row / p.seqlen_q;
    out_offset = (bh / p.num_heads) * p.o_batch_stride + q * p.o_row_stride + (bh % p.num_heads) * p.o_head_stride;
  }
  T* out = static_cast<T*>(p.out) + out_offset;
  for (int d = lane * 2; d < p.head_dim; d += 64) {
    float acc0 = 0.f, acc1 = 0.f;
    for (int s = 0; s < p.num_splits; ++s) {
      const float w = weights[warp][s];
      if (w == 0.f) continue;
      const float2 o = *reinterpret_cast<const float2*>(p.partial_o + (s * p.num_rows + row) * p.head_dim + d);
      acc0 = fmaf(w, o.x, acc0);
      acc1 = fmaf(w, o.y, acc1);
    }
    out[d] = static_cast<T>(acc0 * inv_sum);
    out[d + 1] = static_cast<T>(acc1 * inv_sum);
  }
  if (p.lse != nullptr && lane == 0) p.lse[row] = empty ? -INFINITY : max_lse + logf(sum);
}

}  // namespace forge_flash
