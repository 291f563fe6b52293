// The split rules of plan_fwd (csrc/kernels/split_plan.h) on the host, over every grid of up to
// 1200 CTAs and 300 steps on GPUs of 66, 108 and 132 SMs holding 1-4 CTAs each:
//   - what cta_work hands out: ceil(n_steps / splits) steps per split, none left empty;
//   - each rule's bound: at most FF_MAX_SPLITS and one step a split; Hopper decode grids of
//     fewer than two CTAs per SM split to at most two per SM, one-wave grids to at most one wave,
//     a grid that fills 80% of a wave not at all; a Hopper prefill grid that fills enough of the
//     SMs stays unsplit (hopper_prefill_unsplit);
//   - the persistent kernel's causal order by height hands out every tile once, more evenly than
//     the grouped order on the shapes it is for;
//   - choose_num_splits keeps a wave efficiency within 85% of the best split count's;
//   - the paged twin's wide instance (takes_paged_wide) never takes as many waves as the narrow;
//   - the paged twin's persistent instance (takes_paged_persistent) where it was measured to win;
//   - the decisions the rules' comments record as measured on the H200 or H100 (132 SMs).
// Prints the first failures and exits non-zero on any. Run by tests/c_api/test_split_plan.py.
#include "../../csrc/kernels/split_plan.h"

#include <algorithm>
#include <cstdio>
#include <vector>

#include "../../csrc/kernels/tile_order.h"

using forge_flash::DeviceFacts;

namespace {

int failures = 0;
void fail(const char* what, long a, long b, long c) {
  if (failures++ < 10) std::printf("FAIL %s (%ld, %ld, %ld)\n", what, a, b, c);
}

// cta_work's hand-out: split i of `splits` walks steps [i * per, min(n, (i + 1) * per)).
bool every_split_has_steps(int splits, int n) {
  const int per = (n + splits - 1) / splits;
  for (int i = 0; i < splits; ++i)
    if (i * per >= n) return false;
  return true;
}

// The splits a rule may return for n_steps steps: 1, or whole steps each and none empty.
void check_bounds(const char* rule, int splits, long ctas, int n_steps) {
  if (splits < 1 || splits > FF_MAX_SPLITS || (splits > 1 && splits > n_steps))
    fail(rule, ctas, n_steps, splits);
  else if (n_steps > 0 && !every_split_has_steps(splits, n_steps))
    fail("an empty split", ctas, n_steps, splits);
}

// The share of its last wave a grid fills, as wave_efficiency reckons it, computed here anew.
double efficiency(long ctas, const DeviceFacts& d) {
  const long capacity = static_cast<long>(d.sm_count) * d.ctas_per_sm;
  const long waves = (ctas + capacity - 1) / capacity;
  return static_cast<double>(ctas) / static_cast<double>(waves * capacity);
}

}  // namespace

int main() {
  using namespace forge_flash;
  for (int n = 1; n <= 300; ++n)
    for (int s = 1; s <= 200; ++s) {
      const int got = whole_step_splits(s, n);
      check_bounds("whole_step_splits", got, s, n);
      if (got > s) fail("whole_step_splits: more than asked", s, n, got);
    }

  long grids = 0;
  for (int sms : {66, 108, 132})
    for (int per_sm = 1; per_sm <= 4; ++per_sm) {
      const DeviceFacts d{sms, 9, per_sm, true};
      const long capacity = static_cast<long>(sms) * per_sm;
      for (long ctas = 1; ctas <= 1200; ++ctas)
        for (int n_steps = 1; n_steps <= 300; n_steps += (n_steps < 40 ? 1 : 7)) {
          ++grids;
          const int general = choose_num_splits(ctas, n_steps, d);
          check_bounds("choose_num_splits", general, ctas, n_steps);
          if (ctas * 5 >= capacity * 4 && general != 1) fail("a full grid split", ctas, n_steps, general);
          // Within 85% of the best efficiency over the counts that leave no split empty.
          double best = 0;
          for (int s = 1; s <= std::min<int>(FF_MAX_SPLITS, n_steps); ++s)
            if (every_split_has_steps(s, n_steps)) best = std::max(best, efficiency(ctas * s, d));
          if (n_steps > 1 && ctas * 5 < capacity * 4 && efficiency(ctas * general, d) < 0.85 * best - 1e-12)
            fail("choose_num_splits below 85% of the best", ctas, n_steps, general);

          const long keys = static_cast<long>(n_steps) * 64;
          const int decode = grid_splits(ctas, n_steps, keys, d, true, false);
          check_bounds("grid_splits (decode)", decode, ctas, n_steps);
          if (ctas < 2L * sms && ctas * decode > 2L * sms) fail("more than two CTAs per SM", ctas, n_steps, decode);
          const int wave = grid_splits(ctas, n_steps, keys, d, true, true);
          check_bounds("grid_splits (one wave)", wave, ctas, n_steps);
          if (ctas <= capacity && ctas * wave > capacity) fail("more than one wave", ctas, n_steps, wave);
          if (grid_splits(ctas, n_steps, keys, d, false, false) != general)
            fail("grid_splits is not choose_num_splits off Hopper decode", ctas, n_steps, general);
        }
    }

  // The decisions the comments record (H200: 132 SMs; head_dim 128 decode, 8 KV heads: three
  // 4-warp CTAs per SM; here a step is 64 keys).
  const DeviceFacts h200{132, 9, 3, true};
  const struct {
    long batch;
    long keys;
    int splits;
    const char* what;
  } decode_rows[] = {
      {64, 8192, 4, "batch 64 (1.29 waves) over 8k keys: 4 splits"},
      {64, 32768, 4, "batch 64 over 32k keys: 4 splits"},
      {128, 16384, 4, "batch 128 (2.59 waves) over 16k keys: 4 splits"},
      {96, 8192, 1, "batch 96 (1.94 waves) over 8k keys: one split"},
      {128, 4096, 1, "batch 128 over 4k keys: one split"},
      {224, 8192, 1, "batch 224 (4.5 waves) over 8k keys: one split"},
      {32, 16384, 1, "batch 32 (256 CTAs): one split, at most two CTAs per SM"},
      {1, 131072, 33, "one sequence over 128k keys: up to two CTAs per SM, 33 splits"},
  };
  for (const auto& r : decode_rows) {
    const int n_steps = static_cast<int>(r.keys / 64);
    const int got = grid_splits(r.batch * 8, n_steps, r.keys, h200, true, false);
    if (got != r.splits) {
      std::printf("FAIL %s: got %d\n", r.what, got);
      ++failures;
    }
  }
  // Hopper prefill grids (one CTA per SM) left unsplit: from a quarter of the SMs over short keys
  // however K/V load, 0.45 over longer ones, 0.6 of them at head_dim 64 and below; over longer
  // keys read row by row (paged or indexed caches, copied) 0.7 at every head dim; over longer
  // keys through maps over pages 0.3 above head_dim 96, 0.5 at 65-96, 0.35 at 64 and below.
  const KvLoads all_loads[] = {KvLoads::kMaps, KvLoads::kPagedMaps, KvLoads::kCopiedRows};
  for (int sms : {66, 108, 132})
    for (long ctas = 1; ctas <= 4L * sms; ++ctas)
      for (int head_dim : {64, 80, 96, 128, 256}) {
        for (KvLoads kv : all_loads)
          if (hopper_prefill_unsplit(ctas, sms, true, head_dim, kv) != (4 * ctas >= sms))
            fail("hopper_prefill_unsplit (short keys)", ctas, sms, head_dim);
        const double need = head_dim <= 64 ? 0.6 : 0.45;
        if (hopper_prefill_unsplit(ctas, sms, false, head_dim) != (ctas >= need * sms))
          fail("hopper_prefill_unsplit (long keys)", ctas, sms, head_dim);
        if (hopper_prefill_unsplit(ctas, sms, false, head_dim, KvLoads::kCopiedRows) != (10 * ctas >= 7 * sms))
          fail("hopper_prefill_unsplit (long keys, copied rows)", ctas, sms, head_dim);
        auto at_least = [&](long num, long den) { return den * ctas >= num * sms; };  // num / den of the SMs
        const bool paged_unsplit = head_dim > 96 ? at_least(3, 10) : head_dim > 64 ? at_least(1, 2) : at_least(7, 20);
        if (hopper_prefill_unsplit(ctas, sms, false, head_dim, KvLoads::kPagedMaps) != paged_unsplit)
          fail("hopper_prefill_unsplit (long keys, paged maps)", ctas, sms, head_dim);
      }
  // The measured rows (132 SMs, one sequence over 8 heads): query blocks of 128 rows, at 192 for
  // head_dim 64 over long keys (dense).
  // Copied rows (paged, IndexedKV): 1k / 1.5k queries over 4k keys at head_dim 128, 1.5k at 64
  // (session 60). Paged maps (the PagedKV twin, 128 rows): 768-1280 queries over 4k keys at 128
  // and 96 (session 64).
  constexpr KvLoads kM = KvLoads::kMaps, kP = KvLoads::kPagedMaps, kC = KvLoads::kCopiedRows;
  const struct {
    long tokens, rows;
    bool short_kv;
    int head_dim;
    bool unsplit;
    KvLoads kv;
  } prefill_rows[] = {
      {2048, 128, true, 128, true, kM},  {768, 128, true, 128, true, kM},   {640, 128, true, 64, true, kM},
      {512, 128, true, 128, false, kM},  {768, 128, false, 128, false, kM}, {1024, 128, false, 128, true, kM},
      {1024, 192, false, 64, false, kM}, {2048, 192, false, 64, true, kM},  {1024, 128, false, 128, false, kC},
      {1536, 128, false, 128, true, kC}, {1536, 128, false, 64, true, kC},  {768, 128, true, 128, true, kC},
      {768, 128, false, 128, true, kP},  {1024, 128, false, 96, false, kP}, {1280, 128, false, 96, true, kP},
      {1536, 128, false, 64, true, kP},  {256, 128, false, 128, false, kP},
  };
  for (const auto& r : prefill_rows)
    if (hopper_prefill_unsplit((r.tokens + r.rows - 1) / r.rows * 8, 132, r.short_kv, r.head_dim, r.kv) != r.unsplit) {
      std::printf("FAIL one sequence of %ld tokens over 8 heads of %d (short keys %d, K/V loads %d): unsplit %d\n",
                  r.tokens, r.head_dim, r.short_kv, static_cast<int>(r.kv), !r.unsplit);
      ++failures;
    }
  // The paged twin's wide instance (takes_paged_wide), on the rows that chose it (132 SMs, H100,
  // session 67): batches of 16k tokens over hidden 2048 (32 heads of 64, 21 of 96), one sequence
  // over 8 heads; 128- and 192-row query blocks.
  const struct {
    long tokens, batch, heads;
    bool causal;
    long keys;
    int head_dim, page;
    bool wide;
  } paged_rows[] = {
      {1024, 16, 32, false, 1024, 64, 16, true}, {1024, 16, 32, true, 1024, 64, 16, false},
      {2048, 8, 32, true, 2048, 64, 16, true},   {2048, 8, 32, true, 2048, 64, 64, true},
      {8192, 2, 32, false, 8192, 64, 16, true},  {8192, 2, 32, true, 8192, 64, 16, true},
      {4096, 4, 32, true, 4096, 64, 64, true},   {1024, 16, 21, false, 1024, 96, 16, true},
      {1024, 16, 21, true, 1024, 96, 16, false}, {2048, 8, 21, true, 2048, 96, 16, true},
      {4096, 4, 21, true, 4096, 96, 16, true},   {8192, 2, 21, true, 8192, 96, 16, true},
      {4096, 4, 21, true, 4096, 96, 64, false},  {8192, 2, 21, true, 8192, 96, 64, false},
      {4096, 4, 21, false, 4096, 96, 64, true},  {2048, 1, 8, false, 4096, 64, 16, false},
      {1536, 1, 8, false, 4096, 96, 16, false},  {3072, 1, 8, false, 4096, 96, 16, true},
  };
  for (const auto& r : paged_rows) {
    const long narrow = (r.tokens + 127) / 128 * r.batch * r.heads, wide = (r.tokens + 191) / 192 * r.batch * r.heads;
    if (takes_paged_wide(narrow, wide, 132, r.causal, r.keys, r.head_dim, r.page) != r.wide) {
      std::printf(
          "FAIL paged: %ld sequences of %ld queries over %ld keys, %ld heads of %d, pages of %d, causal %d: "
          "wide %d\n",
          r.batch, r.tokens, r.keys, r.heads, r.head_dim, r.page, r.causal, !r.wide);
      ++failures;
    }
  }
  // The paged twin's persistent instance (takes_paged_persistent) on the head dims measured
  // (H100, session 69: 512-1k tokens a sequence, pages of 16): level or faster at 64-192, causal
  // and not; slower at 256.
  const struct {
    int head_dim;
    bool persistent;
  } paged_short_rows[] = {{64, true}, {96, true}, {128, true}, {192, true}, {256, false}};
  for (const auto& r : paged_short_rows)
    if (forge_flash::takes_paged_persistent(r.head_dim) != r.persistent) {
      std::printf("FAIL paged persistent: head_dim %d: persistent %d\n", r.head_dim, !r.persistent);
      ++failures;
    }
  // No head dim and no grid takes it with more waves than the narrow grid, nor with the same count.
  for (int head_dim : {64, 96})
    for (long narrow = 1; narrow <= 2000; narrow += 7)
      for (long wide = narrow * 2 / 3; wide <= narrow; ++wide)
        if (takes_paged_wide(narrow, wide, 132, false, 1 << 20, head_dim, 16) &&
            (wide + 131) / 132 >= (narrow + 131) / 132)
          fail("takes_paged_wide (waves)", narrow, wide, head_dim);

  // The persistent kernel's causal order by height (tile_order.h): every work tile once, for every
  // grid of 1-300 CTAs and 1-5 rounds.
  for (int grid = 1; grid <= 300; ++grid)
    for (int tiles = 1; tiles <= 5 * grid; tiles += (grid > 40 ? 7 : 1)) {
      const FastDiv rounds(grid);
      std::vector<int> seen(tiles, 0);
      for (int t = 0; t < tiles; ++t) {
        const int i = by_height_index(t, rounds, (tiles - 1) / grid);
        if (i < 0 || i >= tiles || seen[i]++) fail("by_height_index: not a permutation", grid, tiles, t);
      }
    }
  // How evenly 132 CTAs share causal work tiles (each costs its query block's K/V tiles: height
  // m_blocks - m_rev) in the grouped order of cta_work and by height: one prompt of 1k tokens
  // over 32 heads (8 blocks of 128 rows), 512 x 64 heads, 1k x 64, 2k x 16.
  auto evenness = [](int m_blocks, int pairs, bool by_height) {
    const int tiles = m_blocks * pairs, grid = std::min(132, tiles);
    std::vector<long> load(grid, 0);
    for (int t = 0; t < tiles; ++t) {
      int m_rev;
      if (by_height) {
        m_rev = by_height_index(t, FastDiv(grid), (tiles - 1) / grid) / pairs;
      } else {  // cta_work's grouped order: groups of 8 heads, heaviest blocks first
        const int group = t / (8 * m_blocks), r = t % (8 * m_blocks);
        m_rev = r / std::min(8, pairs - group * 8);
      }
      load[t % grid] += m_blocks - m_rev;
    }
    long sum = 0, most = 0;
    for (long l : load) sum += l, most = std::max(most, l);
    return static_cast<double>(sum) / grid / most;
  };
  const struct {
    int m_blocks, pairs;
  } causal_rows[] = {{8, 32}, {4, 64}, {8, 64}, {16, 16}};
  for (const auto& r : causal_rows) {
    const double grouped = evenness(r.m_blocks, r.pairs, false), by_height = evenness(r.m_blocks, r.pairs, true);
    std::printf("causal %d blocks x %d heads: grouped %.3f, by height %.3f\n", r.m_blocks, r.pairs, grouped, by_height);
    if (grouped > 0.65 || by_height < 0.95) fail("by height: not more even", r.m_blocks, r.pairs, 0);
  }
  // The rule: more tiles than CTAs and K/V within half the L2 (50 MB on an H100 and H200).
  const DeviceFacts hopper{132, 9, 1, true, 50 * 1024 * 1024};
  const long kv_1k_32 = 2L * 32 * 1024 * 128 * 2;  // one prompt of 1k tokens, 32 KV heads of 128
  if (!orders_causal_tiles_by_height(256, 132, kv_1k_32, hopper)) fail("1k x 32 heads: by height", 256, 132, 0);
  if (orders_causal_tiles_by_height(128, 128, kv_1k_32, hopper)) fail("one round: by height", 128, 128, 0);
  if (orders_causal_tiles_by_height(2048, 132, 16 * kv_1k_32 / 2, hopper))
    fail("16k tokens x 16 heads: by height", 2048, 132, 0);
  // The bytes the rule weighs: a varlen call's packed rows, a paged call's (total_k 0: its keys
  // are in a cache) batch x max_seqlen_k, as a dense call's. 16 sequences of 1k keys over 16 KV
  // heads of 128 (64 MB) are past half the L2 every way; one prompt of 1k keys is within it.
  const long kv_16k_16 = 2L * 16 * 1024 * 16 * 128 * 2;
  if (round_kv_bytes(true, false, 16 * 1024, 16, 1024, 16, 128) != kv_16k_16 ||
      round_kv_bytes(true, true, 0, 16, 1024, 16, 128) != kv_16k_16 ||
      round_kv_bytes(false, true, 0, 16, 1024, 16, 128) != kv_16k_16 ||
      round_kv_bytes(false, false, 0, 16, 1024, 16, 128) != kv_16k_16)
    fail("round_kv_bytes: 16 x 1k keys", 16, 1024, 128);
  if (round_kv_bytes(true, false, 1000, 16, 1024, 16, 128) != 2L * 1000 * 16 * 128 * 2)
    fail("round_kv_bytes: varlen counts total_k", 16, 1024, 128);
  for (const bool varlen : {false, true})
    if (orders_causal_tiles_by_height(2048, 132, round_kv_bytes(varlen, true, 0, 16, 1024, 16, 128), hopper))
      fail("paged 16 x 1k keys: by height", 2048, 132, varlen);
  std::printf("%ld grids: %s\n", grids, failures ? "FAILED" : "all hold");
  return failures ? 1 : 0;
}
