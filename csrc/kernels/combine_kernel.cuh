// Split-KV combine: merges the per-split partial outputs of one output row
//   lse = log(sum_s exp(lse_s)),  O = sum_s exp(lse_s - lse) * O_s
// summing the splits in a fixed order, so the result is deterministic.
//
// One CTA per output row. The partials of a row are splits x head_dim floats scattered over
// the workspace, so the CTA spreads the splits over thread groups (each thread owns 4
// columns) to keep many independent loads in flight; a loop over splits in one thread would
// wait one memory latency per split.
#pragma once

#include <math.h>

#include "fwd_common.cuh"
#include "params.h"

namespace forge_flash {

constexpr int kCombineThreads = 128;
constexpr int kMaxSplits = 128;

template <typename T>
__global__ void __launch_bounds__(kCombineThreads) combine_kernel(const __grid_constant__ FwdParams p) {
  __shared__ float weights[kMaxSplits];
  __shared__ float reduce[kCombineThreads * 4];
  __shared__ float row_stats[2];  // max LSE, sum of weights
  const int tid = threadIdx.x;
  const int64_t row = blockIdx.x;

  // 1. LSE of every split -> max, weights exp(lse_s - max) (0 for a split that saw no key).
  if (tid < 32) {
    float mx = -INFINITY;
    for (int s = tid; s < p.num_splits; s += 32) mx = fmaxf(mx, p.partial_lse[s * p.num_rows + row]);
#pragma unroll
    for (int off = 16; off > 0; off /= 2) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
    float sum = 0.f;
    for (int s = tid; s < p.num_splits; s += 32) {
      const float lse = p.partial_lse[s * p.num_rows + row];
      const float w = lse == -INFINITY ? 0.f : expf(lse - mx);  // a NaN partial stays NaN
      weights[s] = w;
      sum += w;
    }
#pragma unroll
    for (int off = 16; off > 0; off /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, off);
    if (tid == 0) row_stats[0] = mx, row_stats[1] = sum;
  }
  __syncthreads();
  float mx = row_stats[0], sum = row_stats[1], keep = 1.f;
  if (p.sinks != nullptr) {  // the sink joins each row once, here, not in every split
    const int64_t head = p.cu_seqlens_q != nullptr ? row / p.total_q : (row / p.seqlen_q) % p.num_heads;
    keep = join_sink(p.sinks[head], mx, sum);
  }
  const bool empty = sum == 0.f;  // NaN partials keep the row NaN

  // 2. Weighted sum of the partial outputs: thread (group g, column quad c) sums splits
  //    g, g + groups, ...; the groups are then added in a fixed order.
  const int quads = p.head_dim / 4;
  const int groups = kCombineThreads / quads;  // >= 2: head_dim <= 256
  const int c = tid % quads, g = tid / quads;
  float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
  if (g < groups) {
#pragma unroll 4
    for (int s = g; s < p.num_splits; s += groups) {
      const float w = weights[s];
      if (w == 0.f) continue;  // an empty split's partial O is never read
      const float4 o = *reinterpret_cast<const float4*>(p.partial_o + (s * p.num_rows + row) * p.head_dim + c * 4);
      acc.x = fmaf(w, o.x, acc.x), acc.y = fmaf(w, o.y, acc.y);
      acc.z = fmaf(w, o.z, acc.z), acc.w = fmaf(w, o.w, acc.w);
    }
  }
  reinterpret_cast<float4*>(reduce)[tid] = acc;
  __syncthreads();
  if (g != 0) return;
  for (int other = 1; other < groups; ++other) {
    const float4 o = reinterpret_cast<const float4*>(reduce)[other * quads + c];
    acc.x += o.x, acc.y += o.y, acc.z += o.z, acc.w += o.w;
  }

  // Which output element this LSE index stands for.
  int64_t out_offset;
  if (p.cu_seqlens_q != nullptr) {
    const int64_t head = row / p.total_q, tq = row % p.total_q;
    out_offset = tq * p.o_row_stride + head * p.o_head_stride;
  } else {
    const int64_t q = row % p.seqlen_q, bh = row / p.seqlen_q;
    out_offset = (bh / p.num_heads) * p.o_batch_stride + q * p.o_row_stride + (bh % p.num_heads) * p.o_head_stride;
  }
  const float inv = empty ? 0.f : keep / sum;
  T* out = static_cast<T*>(p.out) + out_offset + c * 4;
  out[0] = static_cast<T>(acc.x * inv), out[1] = static_cast<T>(acc.y * inv);
  out[2] = static_cast<T>(acc.z * inv), out[3] = static_cast<T>(acc.w * inv);
  if (p.lse != nullptr && tid == 0) p.lse[row] = empty ? -INFINITY : mx + logf(sum);
}

}  // namespace forge_flash
