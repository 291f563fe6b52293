// How plan_fwd cuts a grid's keys into splits (split-KV): the rules and the few facts of the
// device they read, host arithmetic only, so that tests/c_api/split_plan_test.cpp checks them
// with g++ alone. dispatch.cu measures the facts (device_facts) and picks the decode CTA shape
// (hopper_decode_shape) before asking grid_splits.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "forge_flash/limits.h"

namespace forge_flash {

// What the split rules, and plan_fwd's other choices, know of a kernel on a device.
struct DeviceFacts {
  int sm_count;
  int cc_major;     // compute capability
  int ctas_per_sm;  // occupancy of this kernel on this device
  bool sm90_code;   // the kernel runs as sm_90 code here (not JIT-compiled from older PTX)
  int64_t l2_bytes = 0;
};

// How full a grid of `ctas` keeps its waves of the CTAs the GPU holds at once (d): 1 when its
// last wave is full.
inline double wave_efficiency(int64_t ctas, const DeviceFacts& d) {
  const double waves = static_cast<double>(ctas) / (static_cast<double>(d.sm_count) * d.ctas_per_sm);
  return waves / std::ceil(waves);
}

// Split-KV only when the grid cannot fill the GPU: among split counts that change the
// steps per split, take the smallest whose wave efficiency is within 85% of the best.
inline int choose_num_splits(int64_t ctas, int n_steps, const DeviceFacts& d) {
  const int64_t capacity = static_cast<int64_t>(d.sm_count) * d.ctas_per_sm;
  if (n_steps <= 1 || ctas * 5 >= capacity * 4) return 1;
  const int max_splits = std::min<int>(FF_MAX_SPLITS, n_steps);
  auto efficiency = [&](int s) { return wave_efficiency(ctas * s, d); };
  auto distinct = [&](int s) {  // s splits that give a different step count per split
    return s == 1 || (n_steps + s - 1) / s != (n_steps + s - 2) / (s - 1);
  };
  double best = 0;
  for (int s = 1; s <= max_splits; ++s)
    if (distinct(s)) best = std::max(best, efficiency(s));
  for (int s = 1; s <= max_splits; ++s)
    if (distinct(s) && efficiency(s) >= 0.85 * best) return s;
  return 1;
}

// `splits` parts of n_steps steps, capped at FF_MAX_SPLITS and one step each, as cta_work hands
// them out (ceil(n_steps / splits) steps per split): fewer where the last ones would be empty.
inline int whole_step_splits(int64_t splits, int n_steps) {
  const int capped =
      static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(splits, std::min<int>(FF_MAX_SPLITS, n_steps))));
  const int per_split = (n_steps + capped - 1) / capped;
  return per_split > 0 ? (n_steps + per_split - 1) / per_split : 1;
}

// Hopper decode grids of fewer than two CTAs per SM (batch * KV heads): splits up to two CTAs
// per SM, where choose_num_splits fills all three a decode CTA may have. Measured on the H200
// (2026-12-02, docs/bench-raw/2026-12-02f-h200-decode-splits.txt, ...-full-grid.txt; 8 KV
// heads), two per SM beat three and one and a half at batch 1-16: one sequence of 32k-128k keys
// 2-3% faster, batch 2-4 at 8k-64k keys 3-5%, batch 8-16 1%; and at batch 32 (256 CTAs) one
// split beat choose_num_splits' three by 5% at 4k keys and 3% at 16k. Whole steps per split,
// none left empty.
constexpr int kSplitCtasPerSm = 2;
inline int hopper_decode_splits(int64_t ctas, int n_steps, const DeviceFacts& d) {
  return whole_step_splits(kSplitCtasPerSm * static_cast<int64_t>(d.sm_count) / ctas, n_steps);
}

// Hopper decode grids of at most one wave of 8-warp CTAs (DecodeWideConfig) run on those where
// they keep more K/V tiles in flight than the 4-warp plan: where an SM holds more of their warps
// than hopper_decode_splits' two 4-warp CTAs (head_dim 64: two 8-warp CTAs per SM), or where
// the grid has more CTAs than half the SMs: one unsplit wave of one CTA per SM instead of two
// splits per tile merged in clusters. Measured on the H200 (2026-12-02, docs/bench-history/2026-12-02.md; 32/8
// heads, one query, GPU time, against the 4-warp plan): head_dim 128 batch 12 and 16 over 4k
// keys 54 -> 52 and 67.7 -> 65.2 us (cuDNN 52.2, 65.2), over 8k 98 -> 95.5 and 124.5 -> 123.0;
// head_dim 64 batch 8, 16, 24 and 32 over 4k keys 5-17% faster (batch 24 60.6 -> 51.6, cuDNN
// 51.4), one sequence of 128k keys 72.0 -> 67.7, batch 2 over 8k keys 15.3 -> 15.6 (the one row
// that lost). Smaller grids at head_dim 128 keep 4 warps: an 8-warp grid split to one CTA per SM
// has the warps of the 4-warp plan's two per SM, and one sequence over 4k keys took 11.8 us
// against 11.0. Except paged steps on the IndexedKV instance (`row_pages`: pages of one key, or
// sizes the PagedKV instance does not take), whose warps look a block id up for every key row:
// the 8-warp grid gives each warp half the tiles of a split, and one sequence over 4k keys in
// pages of one key took 10.4 us against 11.9 (over 32k and 128k keys 0.7-1.0 us less, batch 4
// and 8 level; pages of 16 at one sequence over 4k keys lost 0.2 us there, so whole pages keep
// the rule above). And grids of at most one CTA per kWideMinSplits SMs over at least
// kWideMinKeys keys (one and two sequences of 8 KV heads): split to one 8-warp CTA per SM (8 or
// more splits, merged by the combine kernel) they beat the 4-warp plan's two per SM. H200,
// 2026-12-03 (docs/bench-history/2026-12-03.md), head_dim 128, us: one sequence over 8k keys 16.0 -> 15.5, 16k
// 23.7 -> 23.5, 32k 38.5 -> 38.0, 128k 126.4 -> 125.9; two over 32k 67.5 -> 67.2, over 128k
// 243.5 -> 242.7 (over 8k 25.3 -> 25.4); head_dim 96, one over 8k 14.3 -> 13.5. Over 4k keys
// they lost 6% (11.1 -> 11.8), and batch 4 over 16k (4 splits, in clusters of 4 one-per-SM CTAs)
// 10% (66.7 -> 73.8), hence the bounds.
constexpr int64_t kWideMinKeys = 8192;
constexpr int kWideMinSplits = 8;
inline bool takes_wide_decode(int64_t ctas, int64_t keys, const DeviceFacts& wide, int wide_warps, int warps,
                              bool row_pages) {
  const int64_t one_wave = static_cast<int64_t>(wide.sm_count) * wide.ctas_per_sm;
  const bool more_warps = wide.ctas_per_sm * wide_warps > kSplitCtasPerSm * warps;
  const bool long_split = keys >= kWideMinKeys && ctas * kWideMinSplits <= one_wave;
  return ctas <= one_wave && (more_warps || 2 * ctas > wide.sm_count || row_pages || long_split);
}

// Hopper decode grids of more CTAs than one wave of 8-warp ones (or than half the SMs, where
// none) and at most kShortWaveCtasPerSm 4-warp CTAs per SM, over at least kShortWaveMinKeys
// keys, run on CTAs of 3 warps split to fill one wave of those (4 per SM at head_dim 96 and
// 128: 3 splits from 133 to 165 CTAs). The 4-warp plan leaves most SMs one unsplit CTA, 4 K/V
// tiles in flight; the split grid keeps 9 per SM, merged in clusters of 3. Measured on the
// H200 (2026-12-03 00:24, in docs/bench-history/2026-12-02.md; 32/8 heads, one query, GPU time, against the 4-warp
// plan): head_dim 128, batch 17 (136 CTAs) over 4k / 16k keys 74.1 / 272.4 -> 73.0 / 257.3 us
// (cuDNN 70.9 / 259.7), over 32k 550.2 -> 517.8 (524.9), batch 18 over 8k 146.0 -> 141.0
// (143.4), batch 20 (160 CTAs) over 16k 306.8 -> 299.3 (306.4), over 4k level; head_dim 96,
// batch 17 over 4k 69.0 -> 64.0, batch 20 over 16k 280.9 -> 262.8; pages of one key at batch 17
// over 4k keys 90.4 -> 75.7. Over 1k-2k keys the splits' merge outweighs them (batch 17 and 20
// over 1k keys 6-8% slower, batch 17 over 2k 1.3%); from batch 24 (192 CTAs, 1.45 per SM) the
// 4-warp plan's warps fill the SMs (3 splits, two waves: 13-19% slower; 2 splits 0.5-5%).
constexpr double kShortWaveCtasPerSm = 1.25;
constexpr int64_t kShortWaveMinKeys = 4096;
inline bool takes_short_wave_split(int64_t ctas, int64_t keys, int sm_count) {
  return 2 * ctas > sm_count && static_cast<double>(ctas) <= kShortWaveCtasPerSm * sm_count &&
         keys >= kShortWaveMinKeys;
}

// The splits of a grid that fills one wave of its CTAs (the 8-warp grids, and the 3-warp ones
// of takes_short_wave_split), whole steps each.
inline int one_wave_splits(int64_t ctas, int n_steps, const DeviceFacts& d) {
  return whole_step_splits(static_cast<int64_t>(d.sm_count) * d.ctas_per_sm / ctas, n_steps);
}

// Hopper decode grids of two CTAs per SM and more run in waves of the CTAs the GPU holds at once
// (three 4-warp CTAs per SM at head_dim 128, four of 3 warps: kFullGridCtasPerSm). Where the last
// of up to four waves is at most 70% full, its CTAs stream long K/V after the others have
// finished, with fewer bytes in flight than the GPU needs: over caches of at least 8192 keys, 4
// splits per tile then cut the tail. Measured on the H200 (2026-12-02,
// docs/bench-raw/2026-12-02p-h200-full-grid-splits.txt,
// 2026-12-02q-h200-final-splits-more-waves.txt; 8 KV heads of 128, one query, against one split):
// batch 64 (1.29 waves) 4.5% faster at 8k keys, 6% at 16k, 7% at 32k (3-6 splits within 1% of each
// other; at 4k keys every count within 1%); at 16k keys batch 128 (2.59 waves) 3% faster, batch
// 160 (3.23) 4%, batch 176 (3.56) 1.5%; batch 96 at 8k (1.94 waves) and batch 128 at 4k keys one
// split stays best (70% lies between the last waves measured to gain, 23-59% full, and the one
// that did not, 94%), and from 4.5 waves (batch 224 and 256 at 8k keys) 4 splits lose 1.4-2.4%.
// Elsewhere choose_num_splits.
constexpr int kLastWaveSplitMinKeys = 8192;
constexpr int kLastWaveSplits = 4;
inline int hopper_full_grid_splits(int64_t ctas, int n_steps, int64_t keys, const DeviceFacts& d) {
  const double waves = static_cast<double>(ctas) / (static_cast<double>(d.sm_count) * d.ctas_per_sm);
  const double last_wave = waves - std::floor(waves);  // the last wave's share of a full one
  if (keys >= kLastWaveSplitMinKeys && waves > 1 && waves < 4 && last_wave > 0 && last_wave <= 0.7)
    return whole_step_splits(kLastWaveSplits, n_steps);
  return choose_num_splits(ctas, n_steps, d);
}

// A prefill grid that choose_num_splits would split for the SM80 kernel (whose grid counts 2-3
// CTAs per SM, so a small call leaves most of a wave empty) runs unsplit on the Hopper kernel
// where the Hopper grid (one CTA per SM) fills enough of the SMs: split, it would stay on the
// SM80 kernel (plan_fwd takes the Hopper kernel for unsplit calls only). How much is enough
// depends on the keys. Measured on the H100 (2026-12-05, docs/benchmarks.md, session 58; one
// sequence over 8 heads, GPU time from CUDA graphs, unsplit Hopper against split SM80):
//   - keys within the persistent kernel's reach (short_kv: at most 1024), where each split of the
//     SM80 grid holds little work: 1.70-2.00x at a fill of 0.30-0.48 (head_dim 64, 96, 128);
//   - longer keys (where the split SM80 grid runs at 210-260 TFLOP/s over 4k keys, 290-330 over
//     16k-64k): at head_dim 128 over 4k / 16k / 64k keys 1.01 / 0.84 / 0.83 at a fill of 0.30,
//     1.17 / 1.01 / 0.97 at 0.36, 1.42 / 1.24 / 1.22 at 0.48, 1.75-2.37 from 0.73; at head_dim
//     64 (the TMA-only instance's query blocks of 192 rows) 0.51-0.78 at 0.24, 0.63-0.92 at 0.36.
// So a quarter of the SMs for short keys, 0.45 for longer ones, 0.6 at head_dim 64 and below.
// The same rule at head_dim 192 and 256 (session 59, the same rows): 1.40-3.87x at fills of
// 0.30-0.48 over short keys, 1.51-2.35x over 4k and 64k keys from 0.48, level (0.99-1.01) where it
// keeps the split; and on variant calls at head_dim 128 (softcap, window, ALiBi, sinks) and 256
// (softcap with a window), 768 and 1k tokens: 1.52-2.64x.
// K/V read row by row through a block table or row indices (paged, indexed or left-padded
// caches: the IndexedKV instances, whose copies are cp.async, not TMA) over longer keys: 0.7,
// whatever the head dim. There the unsplit Hopper grid runs far below the dense one (1k queries
// over 4k keys at head_dim 128, pages of 16: 148 TFLOP/s against 342 dense), and the split SM80
// grid stays ahead longer (H100, session 60, docs/benchmarks.md; pages of 16 and 64 alike): at
// head_dim 128 over 4k keys 0.79 at a fill of 0.48, 1.03-1.05 at 0.55-0.67, 1.30 at 0.73; over
// 16k keys 0.67 at 0.48, 0.88 at 0.61, 1.07 at 0.73, 1.29 at 0.97; head_dim 96 over 4k 0.71 /
// 0.92 at 0.48 / 0.61; 256 over 4k 0.81 / 1.07 at 0.48 / 0.61, over 16k 0.79 / 1.12 at 0.48 /
// 0.73; 64 over 4k 1.30 at 0.73. Over short keys paged calls gain as dense ones do (1.07-1.96x at
// fills of 0.30-0.48).
// Paged calls the PagedKV twin loads through maps over the pages (pages that fit its tiles:
// paged_boxes.h; KvLoads::kPagedMaps) gain from lower fills (H100, session 64,
// docs/benchmarks.md; one sequence over 8 heads, pages of 16, GPU time from CUDA graphs, the
// unsplit twin against the split SM80 grid): at head_dim 128 over 4k keys 0.92 / 1.04 / 1.19 /
// 1.48 / 1.87 at 0.24 / 0.30 / 0.36 / 0.48 / 0.61, over 16k keys 0.97 / 1.19 / 1.57 at 0.36 /
// 0.48 / 0.61; at 96 over 4k 0.97-1.00 / 1.26 / 1.28-1.29 at 0.48 / 0.55 / 0.61, over 16k 0.83
// / 1.09 at 0.48 / 0.61; at 64 over 4k 1.09 / 1.33 / 1.71 at 0.36 / 0.48 / 0.61, over 16k 1.05
// at 0.48. So 0.3 above head_dim 96 (over 16k keys 3% lost at 0.36), 0.5 at 96, 0.35 at 64.
// The twin at 192 and 256 takes the 0.3 too. Over 16k keys (H100, session 66, one round) the
// split it makes below 0.3 beat the unsplit twin 1.68x at 256 (fill 0.18) and 1.21x at 192
// (0.24). At 0.30 and 0.42 over 4k keys the unsplit twin beat two splits 1.69x / 1.74x at 192
// and 1.36x / 1.51x at 256 (H100, session 67, GPU time from CUDA graphs).
enum class KvLoads {
  kMaps,        // dense or packed K/V through tensor maps (or the copies of their rows)
  kPagedMaps,   // the PagedKV twin: maps over the pages of a cache
  kCopiedRows,  // the IndexedKV instances: a table's rows, one copy each
};
constexpr double kHopperUnsplitShortKeysFill = 0.25;
constexpr double kHopperUnsplitFill = 0.45;
constexpr double kHopperUnsplitFillHeadDim64 = 0.6;
constexpr double kHopperUnsplitFillCopiedRows = 0.7;
constexpr double kHopperUnsplitFillPagedMaps = 0.3;
constexpr double kHopperUnsplitFillPagedMapsHeadDim96 = 0.5;
constexpr double kHopperUnsplitFillPagedMapsHeadDim64 = 0.35;
inline double hopper_unsplit_fill(bool short_kv, int head_dim, KvLoads kv) {
  if (short_kv) return kHopperUnsplitShortKeysFill;
  switch (kv) {
    case KvLoads::kCopiedRows:
      return kHopperUnsplitFillCopiedRows;
    case KvLoads::kPagedMaps:
      return head_dim > 96   ? kHopperUnsplitFillPagedMaps
             : head_dim > 64 ? kHopperUnsplitFillPagedMapsHeadDim96
                             : kHopperUnsplitFillPagedMapsHeadDim64;
    default:
      return head_dim <= 64 ? kHopperUnsplitFillHeadDim64 : kHopperUnsplitFill;
  }
}
inline bool hopper_prefill_unsplit(int64_t hopper_ctas, int sm_count, bool short_kv, int head_dim,
                                   KvLoads kv = KvLoads::kMaps) {
  return static_cast<double>(hopper_ctas) >= hopper_unsplit_fill(short_kv, head_dim, kv) * sm_count;
}

// A paged call on the PagedKV twin takes its wide instance at head_dim 64 and 96 (three
// consumers, 192-row query blocks: fwd_instantiate.cuh, sm90_paged_wide_info) where its grid's
// waves of one CTA an SM (both instances hold over half an SM's shared memory) cost less than
// the 128-row instance's. Over grids of 21-32 waves (H100, session 67, docs/benchmarks.md) a
// wide CTA took 1.29x a narrow one's time at 64 and 1.19-1.24x at 96 for 1.5x its rows: with 4/5
// of the narrow grid's waves or fewer it wins (16 against 21 waves: +8-11%; 1 against 2: 1.65x),
// with the same count it loses (a one-sequence grid of under a wave: -14-16%). Causal calls
// over short keys keep the narrow instance: its taller query blocks cross the diagonal in more
// masked tiles (over 1k keys -6% at 64, level at 96; over 2k-8k +6-15%). At 96 over pages of 64
// and more, whose loads are few and large, causal calls keep it too (-3% over 4k keys, level over
// 8k, where over pages of 16 they gained 11-15%).
constexpr int64_t kPagedWideCausalKeys = 2048;
constexpr int kPagedWideCausalPagesHeadDim96 = 64;  // pages below this take it at 96
inline bool takes_paged_wide(int64_t narrow_ctas, int64_t wide_ctas, int sm_count, bool causal, int64_t keys,
                             int head_dim, int page_size) {
  if (causal && (keys < kPagedWideCausalKeys || (head_dim > 64 && page_size >= kPagedWideCausalPagesHeadDim96)))
    return false;
  const int64_t narrow_waves = (narrow_ctas + sm_count - 1) / sm_count;
  const int64_t wide_waves = (wide_ctas + sm_count - 1) / sm_count;
  return 5 * wide_waves <= 4 * narrow_waves;
}

// A paged call planned on the persistent kernel (keys within kPersistentMaxKeys, dispatch.cu)
// takes the paged twin's persistent instance (HopperKernels::persistent_paged: a CTA an SM, its
// producer warp drawing the work tiles) where that beat the twin's plain launch (a CTA a work
// tile): at head_dim 64-192, causal or not. Over sequences of 512-1k tokens in pages of 16
// (H100, session 69, docs/benchmarks.md): causal +3-20% (64 +12%, 128 +10-20%, 192 +3%),
// non-causal 0.98-1.05; at 256 causal 0.97 and non-causal 0.94 (its 64-key tiles against the
// plain launch's 80): 256 keeps the plain launch. (Causal calls had run 12-34% slower on it in
// session 68: round_kv_bytes below says why.) head_dim: the Hopper tiles' (sm90_head_dim).
constexpr int kPagedPersistentMaxHeadDim = 192;
inline bool takes_paged_persistent(int head_dim) { return head_dim <= kPagedPersistentMaxHeadDim; }

// A persistent causal launch takes its work tiles by query block height in snake order
// (cta_work, p.causal_by_height) where it has more tiles than CTAs and the K/V all its CTAs read
// in a round (every (batch, head) pair's) fit in half the L2; larger calls keep the grouped order,
// whose resident CTAs read the K/V of few heads.
inline bool orders_causal_tiles_by_height(int64_t tiles, int64_t ctas, int64_t kv_bytes, const DeviceFacts& d) {
  return tiles > ctas && 2 * kv_bytes <= d.l2_bytes;
}

// The K/V bytes (2-byte elements) such a round reads, every sequence's keys once: a varlen
// call's packed rows (total_k); a paged call's, whose cache is no packed tensor (the C API gets
// total_k = 0 there), at most batch x max_seqlen_k, as a dense call's. Counted from total_k, a
// paged call's K/V was 0 bytes and every causal paged call went by height, out of L2: 0.67-0.90
// of the plain launch at head_dim 96-256 (H100, session 69, docs/benchmarks.md).
inline int64_t round_kv_bytes(bool varlen, bool paged, int64_t total_k, int64_t batch, int64_t seqlen_k,
                              int64_t heads_k, int64_t head_dim) {
  const int64_t rows = varlen && !paged ? total_k : batch * seqlen_k;
  return 2 * rows * heads_k * head_dim * 2;
}

// The split count of a grid of `ctas` CTAs whose query blocks each see n_steps steps (keys
// keys): Hopper decode grids by the rules above for their shape (one_wave: the 8-warp grids
// and the 3-warp ones of takes_short_wave_split), every other grid by choose_num_splits.
inline int grid_splits(int64_t ctas, int n_steps, int64_t keys, const DeviceFacts& d, bool hopper_decode,
                       bool one_wave) {
  if (!hopper_decode) return choose_num_splits(ctas, n_steps, d);
  if (one_wave) return one_wave_splits(ctas, n_steps, d);
  if (ctas < kSplitCtasPerSm * d.sm_count) return hopper_decode_splits(ctas, n_steps, d);
  return hopper_full_grid_splits(ctas, n_steps, keys, d);
}

}  // namespace forge_flash
