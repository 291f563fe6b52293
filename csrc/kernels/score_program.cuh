// The score program of one K/V tile, from raw scores to the softmax's logits: which tiles need
// a mask, the causal or band mask as bit prefixes, the score transform (softcap, ALiBi) and the
// facts of a tile the policies (policies.h) decide on.
#pragma once

#include "cta_work.cuh"
#include "ptx.cuh"

namespace forge_flash {

// Only tiles that cross the sequence end or the causal diagonal need a mask. Walking the
// K/V tiles from last to first puts those in the first iterations.
__device__ __forceinline__ bool tile_needs_mask(const FwdParams& p, const CtaWork& w, int n0, int block_n) {
  return n0 + block_n > w.seq.seqlen_k || (p.is_causal && n0 + block_n - 1 > w.diag_first);
}

// -inf for the scores of row `hi` whose keys lie outside [lo, end). A thread holds keys
// first + 8 j + e (e = 0, 1) of each row of an m16 slice, first = n0 + 2 (lane % 4).
//
// On sm_90 as bits: in the order b = 2 j + e the offsets 8 j + e rise, so the kept keys are the
// bits from columns_below(lo - first) to columns_below(end - first), and ptxas moves 7 bits at
// once into predicates (R2P). A score then costs one FSEL, not an add, a compare and the FSEL:
// the masked path of a 128-key tile is 43-52 SASS instructions shorter in the Hopper instances
// (sm_90a, CUDA 13.0), and the AllVariants TMA-only instance at head_dim 128 drops its 72 bytes
// of spills (7 reloads per K/V tile). Elsewhere a compare per score: on sm_80 the SM80 kernel,
// at 255 registers, spilled a K/V address for the counts (24 bytes, a reload per K/V tile), and
// the decode kernel's 32-key tiles (kNT 4) gain little while the bits cost its 3-warp paged
// instance at head_dim 64 two registers (127 -> 129: 4 CTAs per SM instead of 5). Measured on
// the H200 (2026-12-03, docs/bench-history/2026-12-03.md): causal head_dim 64 at 512-1k tokens +1-2%, a
// gpt-oss-like window of 128 with sinks 4-5% less time, the window of 4096 over 32k tokens
// 1% less; unmasked rows level. The BandSinks instance at head_dim 64 (160 registers) now
// reloads 3 spilled values per K/V tile; its window call is faster all the same.
__device__ __forceinline__ int columns_below(int offset) {
  offset = max(offset, 0);
  return 2 * (offset >> 3) + min(offset & 7, 2);
}
template <int kNT>
__device__ __forceinline__ void keep_keys(float (&s)[kNT][4], int hi, int first, int lo, int end) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  constexpr bool kBits = kNT >= 8;
#else
  constexpr bool kBits = false;
#endif
  if constexpr (kBits) {
    constexpr int kWords = (2 * kNT + 31) / 32;
    const int begin = columns_below(lo - first), stop = columns_below(end - first);
    uint32_t keep[kWords];
#pragma unroll
    for (int i = 0; i < kWords; ++i) {  // the high word of (0 : ~0) << min(n, 32): the first n bits
      const auto prefix = [&](int n) {
        return __funnelshift_lc(0xffffffffu, 0u, static_cast<unsigned>(max(n - 32 * i, 0)));
      };
      keep[i] = prefix(stop) & ~prefix(begin);
    }
#pragma unroll
    for (int j = 0; j < kNT; ++j)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int b = 2 * j + e;
        if (!((keep[b / 32] >> (b % 32)) & 1u)) s[j][hi * 2 + e] = -INFINITY;
      }
  } else {
#pragma unroll
    for (int j = 0; j < kNT; ++j)
#pragma unroll
      for (int e = 0; e < 2; ++e)
        if (first + 8 * j + e < lo || first + 8 * j + e >= end) s[j][hi * 2 + e] = -INFINITY;
  }
}

// -inf for keys past the sequence end and keys right of the causal diagonal, for the two
// rows (tile_row, tile_row + 8) this thread holds of an m16 slice.
template <int kNT>
__device__ __forceinline__ void mask_scores(float (&s)[kNT][4], const FwdParams& p, const CtaWork& w, int n0,
                                            int tile_row, int lane) {
  const int first_key = n0 + (lane % 4) * 2;
#pragma unroll
  for (int hi = 0; hi < 2; ++hi) {
    int key_limit = w.seq.seqlen_k;  // keys >= key_limit are masked
    if (p.is_causal) key_limit = min(key_limit, p.rows_per_query.div(w.m0 + tile_row + 8 * hi) + w.diag + 1);
    keep_keys(s, hi, first_key, first_key, key_limit);  // no key below the first
  }
}

// ---- The band mask (P::kBand) and the score transform (P::kScoreMods) ------------------------
// Without P::kScoreMods scores stay raw: the mask writes -inf and softmax_step folds the scale
// into its exp2. With it, a call with a softcap or a scale <= 0 first turns every score into a
// base-2 logit (score_mod: the softcap, then the ALiBi bias, each as FlashAttention defines
// them), then masks by the window; the softmax then runs with scale_log2 = 1 and the LSE with
// lse_scale = ln 2. Other calls keep raw scores (ALiBi's bias divided by the scale) and scale
// in the exp2 (FwdParams::score_scale = 1).

// The window's keys for one tile row: [lo, hi] (the causal diagonal is window_right = 0).
struct KeyBand {
  int lo, hi;
};
__device__ __forceinline__ KeyBand key_band(const FwdParams& p, const CtaWork& w, int tile_row) {
  const int pos = p.rows_per_query.div(w.m0 + tile_row) + w.diag;  // the row's diagonal key
  KeyBand band{0, w.seq.seqlen_k - 1};
  if (p.window_left >= 0) band.lo = max(band.lo, pos - p.window_left);
  if (p.window_right >= 0) band.hi = min(band.hi, pos + p.window_right);
  return band;
}

// Whether a K/V tile needs the element mask: it crosses the sequence end or some row's band edge.
template <class P>
__device__ __forceinline__ bool tile_needs_mask(const FwdParams& p, const CtaWork& w, int n0, int block_n) {
  if constexpr (!P::kBand) {
    return tile_needs_mask(p, w, n0, block_n);
  } else {
    if (n0 + block_n > w.seq.seqlen_k || n0 < 0) return true;  // past the end, or before key 0 (anchored)
    return (p.window_right >= 0 && n0 + block_n - 1 > w.diag_first + p.window_right) ||
           (p.window_left >= 0 && n0 < w.diag_last - p.window_left);
  }
}

// -inf for the keys outside each of this thread's two rows' bands (P::kBand).
template <int kNT>
__device__ __forceinline__ void mask_band(float (&s)[kNT][4], const FwdParams& p, const CtaWork& w, int n0,
                                          int tile_row, int lane) {
  const int first_key = n0 + (lane % 4) * 2;
#pragma unroll
  for (int hi = 0; hi < 2; ++hi) {
    const KeyBand band = key_band(p, w, tile_row + 8 * hi);
    keep_keys(s, hi, first_key, band.lo, band.hi + 1);
  }
}

// The softcap's tanh(scale * s / softcap) of one score, before its factor softcap * log2(e)
// (score_mod multiplies by it; softmax_bounded folds it into its exponent).
__device__ __forceinline__ float softcap_tanh(float s, const FwdParams& p) { return tanh_approx(s * p.score_scale); }

// The score transform's constants of this thread's two rows of an m16 slice (tile_row and
// tile_row + 8), read once per work tile: ALiBi's slope in score_mod's units and the row's
// diagonal key. Rows past the sequence take row 0's (their results are never stored).
struct ScoreRows {
  float slope[2];
  int pos[2];
};
template <class P>
__device__ __forceinline__ ScoreRows score_rows(const FwdParams& p, const CtaWork& w, int tile_row) {
  ScoreRows r{};
  if constexpr (P::kAlibi) {
    if (p.alibi_slopes != nullptr) {
#pragma unroll
      for (int hi = 0; hi < 2; ++hi) {
        const int row = tile_row + 8 * hi;
        const RowTarget t = row_target(p, w, w.m0 + row < w.rows ? row : 0);
        r.slope[hi] = p.alibi_slopes[w.b * p.alibi_batch_stride + t.head] * p.alibi_scale;
        r.pos[hi] = t.q_pos + w.diag;
      }
    }
  }
  return r;
}

// What the score program of one K/V tile of keys [n0, n0 + block_n) needs to know for the
// query block's rows (tile_facts): whether it needs the element mask, and whether every key a
// row keeps lies on one side of its diagonal key (side -1: at or before it, +1: at or after it,
// 0: neither), where ALiBi's distance |pos - key| is linear in the key. Computed for the whole
// block, so the choice is uniform across the warps.
struct TileFacts {
  int n0;
  bool needs_mask;
  int side;
};
template <class P>
__device__ __forceinline__ int alibi_side(const FwdParams& p, const CtaWork& w, int n0, int block_n) {
  if constexpr (P::kAlibi) {
    // Under the causal mask every key a row keeps lies at or before its diagonal key, so a tile
    // across the diagonal takes the one-sided bias too; the mask then drops the keys after it.
    if (p.alibi_slopes != nullptr)
      return p.is_causal || n0 + block_n - 1 <= w.diag_first ? -1 : n0 >= w.diag_last ? 1 : 0;
  }
  return 0;
}
template <class P>
__device__ __forceinline__ TileFacts tile_facts(const FwdParams& p, const CtaWork& w, int n0, int block_n) {
  return {n0, tile_needs_mask<P>(p, w, n0, block_n), alibi_side<P>(p, w, n0, block_n)};
}

// ALiBi's distance per score for row `hi` of a tile whose keys lie on both sides of some row's
// diagonal key: |pos - key| = |d0 - c| with d0 = pos - (n0 + 2 (lane % 4)) from one conversion
// per row and the column's constant c = 8 j + e (an int-to-float conversion per score ran at
// the special-function rate: ALiBi was 30% slower than plain attention at head_dim 128 on the
// H200, 2026-11-30).
template <int kNT>
__device__ __forceinline__ void alibi_row_across(float (&s)[kNT][4], int hi, float slope, float d0) {
#pragma unroll
  for (int j = 0; j < kNT; ++j)
#pragma unroll
    for (int e = 0; e < 2; ++e) s[j][hi * 2 + e] -= slope * fabsf(d0 - static_cast<float>(j * 8 + e));
}
__device__ __forceinline__ float alibi_d0(const TileFacts& tile, const ScoreRows& rows, int hi, int lane) {
  return static_cast<float>(rows.pos[hi] - (tile.n0 + (lane % 4) * 2));
}

// ALiBi: minus the slope times the key's distance from the row's diagonal, in the units of the
// scores (alibi_scale). The logit of a score is s + bias[hi]: the part of the bias that is the
// same for all of a row's keys in a tile is left to the softmax (softmax_step<true>).
template <int kNT>
__device__ __forceinline__ void alibi_scores(float (&s)[kNT][4], const TileFacts& tile, const ScoreRows& rows, int lane,
                                             float (&bias)[2]) {
#pragma unroll
  for (int hi = 0; hi < 2; ++hi) {
    const float slope = rows.slope[hi], d0 = alibi_d0(tile, rows, hi, lane);
    if (tile.side != 0) {
      // All keys on one side: -slope |d0 - c| = step * c - step * d0 with step = -side * slope,
      // one multiply-add by an immediate per score; -step * d0 goes to the softmax.
      const float step = tile.side < 0 ? slope : -slope;
#pragma unroll
      for (int j = 0; j < kNT; ++j)
#pragma unroll
        for (int e = 0; e < 2; ++e) s[j][hi * 2 + e] = fmaf(step, static_cast<float>(j * 8 + e), s[j][hi * 2 + e]);
      bias[hi] = -step * d0;
    } else {
      alibi_row_across(s, hi, slope, d0);
    }
  }
}

// The score transform: softcap * tanh(scale * s / softcap) or scale * s as base-2 logits (or s
// left raw: score_scale 1), then ALiBi (alibi_scores). tanh.approx is one special-function
// instruction (relative error 2^-11, below the 16-bit P it feeds). Without ALiBi bias is 0.
template <int kNT>
__device__ __forceinline__ void score_mod(float (&s)[kNT][4], const FwdParams& p, const TileFacts& tile,
                                          const ScoreRows& rows, int lane, float (&bias)[2]) {
  if (p.softcap > 0.f) {
#pragma unroll
    for (int j = 0; j < kNT; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) s[j][e] = p.softcap_log2 * softcap_tanh(s[j][e], p);
  } else if (p.score_scale != 1.f) {  // 1: the softmax scales (windows, sinks, paged K/V)
#pragma unroll
    for (int j = 0; j < kNT; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) s[j][e] *= p.score_scale;
  }
  if (p.alibi_slopes != nullptr) alibi_scores(s, tile, rows, lane, bias);
}

// The policies' mask of one K/V tile for an m16 slice (a tile that needs one).
template <class P, int kNT>
__device__ __forceinline__ void mask_tile(float (&s)[kNT][4], const FwdParams& p, const CtaWork& w, int n0,
                                          int tile_row, int lane) {
  if constexpr (P::kBand)
    mask_band(s, p, w, n0, tile_row, lane);
  else
    mask_scores(s, p, w, n0, tile_row, lane);
}

// The score program of one K/V tile for an m16 slice: the score transform, then the mask
// where the tile needs one. The logits are s + bias[hi] (score_mod, ALiBi alone; else 0).
template <class P, int kNT>
__device__ __forceinline__ void scores_to_logits(float (&s)[kNT][4], const FwdParams& p, const CtaWork& w,
                                                 const TileFacts& tile, const ScoreRows& rows, int tile_row, int lane,
                                                 float (&bias)[2]) {
  bias[0] = bias[1] = 0.f;
  if constexpr (P::kScoreMods) score_mod(s, p, tile, rows, lane, bias);
  if constexpr (P::kAlibiOnly) {
    if (p.alibi_slopes != nullptr) alibi_scores(s, tile, rows, lane, bias);
  }
  if (tile.needs_mask) mask_tile<P>(s, p, w, tile.n0, tile_row, lane);
}

}  // namespace forge_flash
