// The softmax of a tile's logits: the online form (running maximum, rescale factor) and the
// bounded one (softcap's fixed offset), P = exp2(...) with each row's sum, O's rescale.
#pragma once

#include <math.h>

#include "ptx.cuh"

namespace forge_flash {

// S -> P = exp2(S * scale - offset) for one of a thread's two rows (`hi`) of an m16 slice;
// returns the row's sum of P over this thread's columns. Both softmax forms share it: the
// online one with the running maximum as the offset, the bounded one with a fixed offset.
// Every exp2 stays on the special-function unit. Moving some of them to the FMA pipe (a cubic
// for 2^f plus the exponent bits, FlashAttention-4's trick) was built five times and lost
// each time, at head_dim 64 and in the softcap's bounded softmax alike: a softmax here is paced
// by its warp's chain of latencies, not by that unit's throughput (docs/benchmarks.md, "Tried
// and lost", and the 2026-12-04 Nsight Compute stalls).
template <int kNT>
__device__ __forceinline__ float exponentiate_row(float (&s)[kNT][4], int hi, float scale, float offset) {
  float sum = 0.f;
#pragma unroll
  for (int j = 0; j < kNT; ++j)
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      float& x = s[j][hi * 2 + e];
      x = exp2_approx(fmaf(x, scale, -offset));
      sum += x;
    }
  return sum;
}

// One step of the online softmax for an m16 slice: new running max, S -> P =
// exp2(S * scale * log2(e) - max), the running sum rescaled, and the factor the O rows must
// be rescaled by (left to the caller, whose O may still be an in-flight wgmma accumulator).
// The row sum stays per thread until the end (the 4 lanes of a row are added once, in
// finish_rows). kBias: each row's logits are s + bias[hi] (scores_to_logits), and the running
// max holds logits, so the bias costs an add per row, not per score.
//
// kLazyMax: the running max rises only when a tile's maximum exceeds it by more than
// kLazyMaxSlack (base 2), so P stays below 2^8 (bf16 and fp16 hold it; O's and the sum's fp32
// too) and after a row's first tiles its max rarely moves. Returns whether any row of the warp
// moved, i.e. whether O needs its rescale (the warp skips it otherwise; the row sums' factor is
// then exactly 1). The LSE is exact either way: max * scale + log(sum) with the sum taken
// against the max actually used. The idea is FlashAttention-4's rescale threshold.
constexpr float kLazyMaxSlack = 8.f;
// kSumElsewhere: the caller sums P elsewhere (the Hopper kernel's kSumByMma: the tensor cores,
// beside O), so row_sum is left alone and the exponentials' adds are not compiled.
template <bool kBias, bool kLazyMax = false, bool kSumElsewhere = false, int kNT>
__device__ __forceinline__ bool softmax_step(float (&s)[kNT][4], float (&row_max)[2], float (&row_sum)[2],
                                             float scale_log2, float (&correction)[2], const float (&bias)[2]) {
  bool moved = false;
#pragma unroll
  for (int hi = 0; hi < 2; ++hi) {
    float mx = kBias ? -INFINITY : row_max[hi];
#pragma unroll
    for (int j = 0; j < kNT; ++j) mx = fmaxf(mx, fmaxf(s[j][hi * 2], s[j][hi * 2 + 1]));
    if constexpr (kBias) mx = fmaxf(row_max[hi], mx + bias[hi]);  // this thread's largest logit
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));          // the 4 lanes of a row
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    // Keeps the old max unless the new one is more than the slack above it (a row at -inf
    // takes any finite max; one that stays -inf keeps it).
    if constexpr (kLazyMax)
      if (!(mx * scale_log2 > row_max[hi] * scale_log2 + kLazyMaxSlack)) mx = row_max[hi];
    moved |= mx != row_max[hi];
    // A row that has seen only masked keys keeps max -inf; subtracting 0 instead keeps
    // every exponent -inf (p = 0) rather than NaN.
    const float max_scaled = mx == -INFINITY ? 0.f : mx * scale_log2;
    correction[hi] = exp2_approx(row_max[hi] * scale_log2 - max_scaled);
    row_max[hi] = mx;
    const float offset = kBias ? max_scaled - bias[hi] * scale_log2 : max_scaled;
    const float sum = exponentiate_row(s, hi, scale_log2, offset);
    if constexpr (!kSumElsewhere) row_sum[hi] = row_sum[hi] * correction[hi] + sum;
  }
  return kLazyMax ? __any_sync(0xffffffffu, moved) : true;
}

// The softmax of bounded logits (FwdParams::bounded_logits: softcap, no ALiBi, bf16 P). `t`
// holds softcap_tanh of each score, -inf where masked; the base-2 logit is
// softcap_log2 * t, and P = 2^(logit - offset) with the fixed offset: no running maximum, so no
// max reduction before the exponentials, no correction and no rescale of O. The row's
// maximum stays `offset` (finish_rows' LSE). Of the softcap's extra work per score (a tanh on
// the special-function unit beside the exp2), this takes back the max and the rescale: 4-5%
// of a softcapped call at head_dim 128, 8k tokens on the H200 (docs/bench-history/2026-12-01.md).
template <int kNT>
__device__ __forceinline__ void softmax_bounded(float (&t)[kNT][4], float (&row_sum)[2], float softcap_log2,
                                                float offset) {
#pragma unroll
  for (int hi = 0; hi < 2; ++hi) row_sum[hi] += exponentiate_row(t, hi, softcap_log2, offset);
}

template <int kNO>
__device__ __forceinline__ void rescale_rows(float (&o)[kNO][4], const float (&correction)[2]) {
#pragma unroll
  for (int hi = 0; hi < 2; ++hi)
#pragma unroll
    for (int j = 0; j < kNO; ++j) {
      o[j][hi * 2] *= correction[hi];
      o[j][hi * 2 + 1] *= correction[hi];
    }
}

template <bool kBias, int kNT, int kNO>
__device__ __forceinline__ void online_softmax(float (&s)[kNT][4], float (&o)[kNO][4], float (&row_max)[2],
                                               float (&row_sum)[2], float scale_log2, const float (&bias)[2]) {
  float correction[2];
  softmax_step<kBias>(s, row_max, row_sum, scale_log2, correction, bias);
  rescale_rows(o, correction);
}

// A row's sum from its 4 lanes' parts: an m16n8 accumulator spreads each row over a quad.
__device__ __forceinline__ float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

}  // namespace forge_flash
