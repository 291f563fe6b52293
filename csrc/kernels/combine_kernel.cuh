// Split-KV combine: merges the per-split partial outputs of one output row
//   lse = log(sum_s exp(lse_s)),  O = sum_s exp(lse_s - lse) * O_s
// summing the splits in a fixed order, so the result is deterministic.
//
// One CTA per output row, whose global loads go out together so that the CTA waits about one
// memory latency, not one per step or per split:
//   1. thread t loads split t's LSE and, beside it, the partial O of its first kChunk splits
//      (thread (group g, column quad c) owns splits g, g + groups, ... of 4 columns);
//   2. the largest LSE and the weights' sum (shuffles, two barriers);
//   3. the weighted sum of the loaded partials in split order (further chunks where a row has
//      more than kChunk * groups splits), then the groups' sums in group order.
// Before (phase 1 on one warp, reading every LSE twice, then the partials a few at a time)
// this kernel took 9.4 us of a 134 us decode over 128k keys with 43 splits (H200, Nsight
// Compute, 2026-12-01); cuDNN's reduction took 4.0.
#pragma once

#include <math.h>

#include "fwd_common.cuh"
#include "grid_dependency.cuh"
#include "params.h"

namespace forge_flash {

constexpr int kCombineThreads = 128;
constexpr int kMaxSplits = FF_MAX_SPLITS;
static_assert(kMaxSplits <= kCombineThreads, "one LSE per thread");

// Thread (group g, column quad c) of a row's CTA sums splits g, g + groups, ... of 4 columns.
__host__ __device__ constexpr int combine_groups(int head_dim) { return kCombineThreads / (head_dim / 4); }

// kChunk: partials per thread in flight at once. launch_fwd takes the short chunk where it
// covers every split (few splits over many rows: batched decode), the long one otherwise.
constexpr int kCombineShortChunk = 4, kCombineLongChunk = 16;

template <typename T, int kChunk>
__global__ void __launch_bounds__(kCombineThreads) combine_kernel(const __grid_constant__ FwdParams p) {
  // Launched programmatically on Hopper (launch_fwd): its CTAs are placed while the split
  // kernel still runs and wait here until its partials are complete and visible.
  wait_for_previous_grid();
  constexpr int kWarps = kCombineThreads / 32;
  __shared__ float weights[kMaxSplits];
  __shared__ float warp_max[kWarps], warp_sum[kWarps];
  __shared__ float reduce[kCombineThreads * 4];
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int64_t row = blockIdx.x;
  const int splits = p.num_splits;
  const int quads = p.head_dim / 4;
  const int groups = combine_groups(p.head_dim);  // >= 2: head_dim <= 256
  const int c = tid % quads, g = tid / quads;
  const float4 zero = make_float4(0.f, 0.f, 0.f, 0.f);

  // 1. This thread's LSE and first chunk of partials.
  const float lse = tid < splits ? p.partial_lse[tid * p.num_rows + row] : -INFINITY;
  float4 o[kChunk];
  auto load_chunk = [&](int first) {
#pragma unroll
    for (int k = 0; k < kChunk; ++k) {
      const int s = first + g + k * groups;
      o[k] = g < groups && s < splits
                 ? *reinterpret_cast<const float4*>(p.partial_o + (s * p.num_rows + row) * p.head_dim + c * 4)
                 : zero;
    }
  };
  load_chunk(0);

  // 2. Largest LSE, weights exp(lse_s - max) (0 for a split that saw no key; a NaN partial
  //    stays NaN), their sum.
  float mx = lse;
#pragma unroll
  for (int off = 16; off > 0; off /= 2) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
  if (lane == 0) warp_max[warp] = mx;
  __syncthreads();
#pragma unroll
  for (int w = 0; w < kWarps; ++w) mx = fmaxf(mx, warp_max[w]);
  const float weight = merge_weight(lse, mx);
  weights[tid] = weight;
  float sum = weight;
#pragma unroll
  for (int off = 16; off > 0; off /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, off);
  if (lane == 0) warp_sum[warp] = sum;
  __syncthreads();
  sum = 0.f;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) sum += warp_sum[w];
  float keep = 1.f;
  if (p.sinks != nullptr) {  // the sink joins each row once, here, not in every split
    const int64_t head = p.cu_seqlens_q != nullptr ? row / p.total_q : (row / p.seqlen_q) % p.num_heads;
    keep = join_sink(p.sinks[head], mx, sum);
  }
  const bool empty = sum == 0.f;  // NaN partials keep the row NaN

  // 3. Weighted sum of the partials; an empty split's partial O is never used.
  float4 acc = zero;
  for (int first = 0;;) {
#pragma unroll
    for (int k = 0; k < kChunk; ++k) {
      const int s = first + g + k * groups;
      const float w = s < splits ? weights[s] : 0.f;
      if (w != 0.f) {
        acc.x = fmaf(w, o[k].x, acc.x), acc.y = fmaf(w, o[k].y, acc.y);
        acc.z = fmaf(w, o[k].z, acc.z), acc.w = fmaf(w, o[k].w, acc.w);
      }
    }
    first += kChunk * groups;
    if (first >= splits) break;
    load_chunk(first);
  }
  reinterpret_cast<float4*>(reduce)[tid] = acc;
  __syncthreads();
  if (g != 0) return;
  for (int other = 1; other < groups; ++other) {
    const float4 x = reinterpret_cast<const float4*>(reduce)[other * quads + c];
    acc.x += x.x, acc.y += x.y, acc.z += x.z, acc.w += x.w;
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
  if (p.lse != nullptr && tid == 0) p.lse[row] = merged_lse(mx, sum);
}

}  // namespace forge_flash
