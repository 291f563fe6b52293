// The LSE-weighted merge of normalised partial attention results over disjoint key sets:
//   lse = log(sum_s exp(lse_s)),  O = sum_s exp(lse_s - lse) * O_s.
// Used wherever partials meet: a decode CTA's warps, the splits of a cluster, and the
// public merge kernel (merge_states.cu). Part s weighs exp(lse_s - max_s lse_s), computed
// against the largest LSE so no exponential overflows.
//
// Special values, on purpose:
//  * a part that saw no key (LSE -inf) weighs exactly 0, so if no part saw a key every
//    weight is 0 and the row stays O = 0 with LSE -inf;
//  * a NaN LSE gives a NaN weight, so NaN reaches the merged O and LSE instead of being
//    dropped (fmaxf ignores NaN when the callers take the maximum, so the test here is on
//    the part's own LSE, not on the maximum).
//
// The exponentials and logarithms are the special-function unit's (__expf, __logf: one
// ex2.approx / lg2.approx and a multiply; __expf within 2 + 1.2 |x| ulp, __logf 3 ulp or 2^-21
// absolute near 1, far below the 16-bit outputs' rounding), not expf's and logf's ~10 and ~25
// instructions. These merges run in the tail of a decode CTA and in the combine kernel, after
// the last load, where nothing hides their instructions: the accurate forms had cost 0.5-0.6 us
// of every short decode step (one sequence over 4k keys 11.1 -> 10.4-10.5 us, batch 4 over 4k
// 23.5 -> 22.8-22.9; H200, 2026-12-03, docs/bench-history/2026-12-03.md).
#pragma once

#include <math.h>

namespace forge_flash {

__device__ __forceinline__ float merge_weight(float lse, float max_lse) {
  return lse == -INFINITY ? 0.f : __expf(lse - max_lse);
}

// The merged LSE from the largest part LSE and the sum of the weights (NaN stays NaN).
__device__ __forceinline__ float merged_lse(float max_lse, float weight_sum) {
  return weight_sum == 0.f ? -INFINITY : max_lse + __logf(weight_sum);
}

// A sink logit joins a row's merge (the variant kernels' sinks, added once per row, in its last
// merge). The row holds (mx, sum): weights
// exp(x - mx) of its keys, natural log. Returns the factor its output must be multiplied by.
__device__ __forceinline__ float join_sink(float sink, float& mx, float& sum) {
  const float m = fmaxf(mx, sink);
  const float keep = mx == -INFINITY ? 0.f : __expf(mx - m);
  sum = sum * keep + __expf(sink - m);
  mx = m;
  return keep;
}

}  // namespace forge_flash
