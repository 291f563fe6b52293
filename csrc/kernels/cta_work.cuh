// Which rows and K/V tiles a CTA owns: a sequence's extents on the device (varlen offsets,
// per-sequence key counts and left padding, clamped), the work tile (`cta_work`: the query block,
// its head and KV head, the causal diagonal or the window's band, the K/V tiles it walks), a
// row's target (query position and head, GQA packing) and the first rows of Q, K and V.
#pragma once

#include <limits.h>
#include <math.h>

#include "params.h"
#include "policies.h"
#include "tile_order.h"

namespace forge_flash {

__device__ __forceinline__ int clamp_int(int x, int lo, int hi) { return min(max(x, lo), hi); }
__device__ __forceinline__ int ceil_div(int a, int b) { return (a + b - 1) / b; }
template <int kValue>
struct IntConstant {
  static constexpr int value = kValue;
};

// Where a sequence lives and how long it is. Every length read from device memory is
// clamped, so malformed cu_seqlens / seqused_k cannot address out of bounds.
struct SeqExtent {
  int seqlen_q, seqlen_k;
  int64_t q_start, k_start;  // first row in the packed (varlen) tensors, else 0
};

// K/V addressing: with P::kIndexedKV the keys may be paged (cu_seqlens_k then only counts
// keys) or start late (left padding); other instances compile none of it. Any instance's keys
// may end with a K/V append's new ones (seqlen_new).
template <class P>
__device__ __forceinline__ SeqExtent sequence_extent(const FwdParams& p, int b) {
  SeqExtent e{p.seqlen_q, p.seqlen_k, 0, 0};
  const bool paged = P::kIndexedKV && p.block_table != nullptr;
  if (p.cu_seqlens_q != nullptr) {
    const int q0 = clamp_int(p.cu_seqlens_q[b], 0, p.total_q);
    const int q1 = clamp_int(p.cu_seqlens_q[b + 1], q0, p.total_q);
    const int k_rows = paged ? INT_MAX : p.total_k;
    const int k0 = clamp_int(p.cu_seqlens_k[b], 0, k_rows);
    const int k1 = clamp_int(p.cu_seqlens_k[b + 1], k0, k_rows);
    e.q_start = q0;
    e.k_start = paged ? 0 : k0;
    e.seqlen_q = min(q1 - q0, p.seqlen_q);
    e.seqlen_k = min(k1 - k0, p.seqlen_k);
  }
  // A K/V append (fused, or its own kernel just before: new_keys_in_cache, any instance): the
  // cached keys, then the new ones (C API: capacity >= seqlen_new).
  if (p.seqlen_new > 0)
    e.seqlen_k = clamp_int(p.seqused_k[b], 0, e.seqlen_k - p.seqlen_new) + p.seqlen_new;
  else if (p.seqused_k != nullptr)
    e.seqlen_k = clamp_int(p.seqused_k[b], 0, e.seqlen_k);
  // Left padding: the sequence's keys are rows [start, seqlen_k).
  if (P::kIndexedKV && !P::kPagesOnly && p.k_start != nullptr) {
    const int start = clamp_int(p.k_start[b], 0, e.seqlen_k);
    e.k_start += start;
    e.seqlen_k -= start;
  }
  return e;
}

// What one work tile (a CTA's launch, or one turn of a persistent CTA) computes: tile rows [m0, m0 + block_m) of one
// (batch, head) - or, with pack_gqa, of one (batch, KV head), whose rows are (query position, head in group) pairs -
// against K/V tiles [n_begin, n_end).
struct CtaWork {
  SeqExtent seq;
  int b, kv_b, cta_head, kv_head, group;  // kv_b: the K/V batch row (a cache batch index)
  int m0, rows;                           // first tile row; rows of this (batch, head)
  int diag;                               // seqlen_k - seqlen_q: bottom-right causal alignment
  // The diagonal keys of the query block's first and last rows, once per work tile (0 where no
  // causal mask, window or ALiBi reads them). The tile tests of causal, banded and ALiBi calls
  // read them at every K/V tile, where each had cost a division by the GQA group (about 30
  // instructions); hoisted here, causal prefill gained 3-10% (H200, 2026-12-02,
  // docs/bench-history/2026-12-02.md).
  int diag_first, diag_last;
  int n_begin, n_end;  // K/V tiles: tile t holds keys [key0 + t * block_n, + block_n)
  int key0;            // 0, or in (-block_n, 0] for tiles anchored at the band's end
};

// Causal launch order: heads in groups of this many; see cta_work.
constexpr int kCausalHeadGroup = 8;

// `tile` numbers the work tiles, in launch order: blockIdx.x for a CTA per tile. A kernel that
// works on `tiles_per_step` K/V tiles at once (one per warp: the decode kernel) gets splits of
// whole steps. kAnchorBand: a window's tiles end where the query block's band ends instead of
// on multiples of block_n (key0 < 0), so the band's keys fill whole tiles from that end: a
// 4096-key window seen by 128 query rows spans 4224 keys, 24 tiles of 176 keys anchored and
// 25 aligned to 0 (window 4096 over 32k causal tokens: 3.81-3.84x -> 3.94-4.01x faster than
// the causal call; H200, 2026-12-01). Only for loaders that take a negative first row (TMA
// zero-fills it); tile_needs_mask masks the keys below 0.
// kByHeight: the persistent kernel's walk (tile = blockIdx.x + round * gridDim.x), which may take
// a causal call's tiles by query block height (p.causal_by_height); other launches compile none
// of it.
template <class P, bool kAnchorBand = false, bool kByHeight = false>
__device__ __forceinline__ CtaWork cta_work(const FwdParams& p, int num_m_blocks, int block_m, int block_n, int tile,
                                            int tiles_per_step = 1) {
  CtaWork w;
  w.key0 = 0;
  const int heads_per_cta = p.pack_gqa ? p.num_heads_k : p.num_heads;
  int m_block, bh;  // query block, (batch, head) index
  // The divisions are FastDiv's (params.h, fast_div.h): `/` by a runtime value costs ~25
  // instructions, at the start of every work tile and before a decode CTA's first loads.
  if (kByHeight && p.causal_by_height) {
    // A persistent CTA takes tiles blockIdx.x, + gridDim.x, ... In the grouped order below, a
    // round of 132 tiles over groups of 8 heads x 8 query blocks (1k tokens) starts 4 tiles
    // later in the group's period each round, so most CTAs draw the same heights round after
    // round: one prompt of 1k tokens over 32 heads keeps its CTAs busy for 0.55 of the call,
    // counting each tile's K/V tiles (tests/c_api/split_plan_test.cpp; 0.97 here). Here every (batch,
    // head) pair's heaviest block comes first, then the next height, ..., and every other round
    // (counted back from the last, so that a partial last round keeps its CTAs' order) walks
    // the CTAs backwards: a CTA that drew a heavy tile draws a light one next. Every round then
    // reads every pair's K/V, so plan_fwd asks for it only where those fit in L2.
    const int i = by_height_index(tile, p.causal_round, p.causal_last_round);
    const int m_rev = p.causal_pairs.div(i);
    m_block = num_m_blocks - 1 - m_rev;
    bh = p.causal_pairs.mod(i, m_rev);
  } else if (p.is_causal) {
    // Causal work grows with the query block. Within a group of heads, the heaviest query
    // blocks of every head launch first, so the longest CTAs start early and the last wave
    // is short; the CTAs resident together read the K/V of few heads, which stay in L2.
    const int bh_total = p.batch * heads_per_cta;
    const int group = p.causal_group_tiles.div(tile), r = p.causal_group_tiles.mod(tile, group);
    const int heads_in_group = min(kCausalHeadGroup, bh_total - group * kCausalHeadGroup);
    // Every group but the last holds kCausalHeadGroup heads: a shift.
    const int m_rev = heads_in_group == kCausalHeadGroup ? r / kCausalHeadGroup : r / heads_in_group;
    m_block = num_m_blocks - 1 - m_rev;
    bh = group * kCausalHeadGroup + (r - m_rev * heads_in_group);
  } else {
    bh = p.m_blocks.div(tile);
    m_block = p.m_blocks.mod(tile, bh);
  }
  w.b = p.cta_heads.div(bh);
  w.kv_b = P::kIndexedKV && !P::kPagesOnly && p.kv_batch_idx != nullptr
               ? clamp_int(p.kv_batch_idx[w.b], 0, p.kv_batch_rows - 1)
               : w.b;
  w.cta_head = p.cta_heads.mod(bh, w.b);
  w.group = p.pack_gqa ? p.group : 1;
  w.kv_head = p.pack_gqa ? w.cta_head : p.heads_per_kv.div(w.cta_head);
  w.seq = sequence_extent<P>(p, w.b);
  w.rows = w.seq.seqlen_q * w.group;
  w.m0 = m_block * block_m;
  w.diag = w.seq.seqlen_k - w.seq.seqlen_q;
  // Only where read (causal, a window, ALiBi); measured level with computing them always
  // (decode at 4k-128k keys, windows, sinks; H200, 2026-12-02).
  w.diag_first = w.diag_last = 0;
  if (p.is_causal || (P::kBand && (p.window_left >= 0 || p.window_right >= 0)) ||
      (P::kAlibi && p.alibi_slopes != nullptr)) {
    w.diag_first = p.rows_per_query.div(w.m0) + w.diag;
    w.diag_last = p.rows_per_query.div(max(min(w.m0 + block_m, w.rows) - 1, 0)) + w.diag;
  }

  // Causal rows stop at their diagonal; a split owns an equal share of the tiles.
  const int n_blocks = ceil_div(w.seq.seqlen_k, block_n);
  w.n_end = n_blocks;
  w.n_begin = 0;
  if constexpr (P::kBand) {
    // The window's band: tiles wholly left of the first row's band or right of the last row's
    // are never visited (a sliding window costs what its band holds, not seqlen_k), and the
    // splits divide the band.
    if (w.m0 < w.rows) {
      // The band's keys: [lo, end).
      const int end =
          p.window_right >= 0 ? min(max(w.diag_last + 1 + p.window_right, 0), w.seq.seqlen_k) : w.seq.seqlen_k;
      const int lo = p.window_left >= 0 ? max(w.diag_first - p.window_left, 0) : 0;
      if (kAnchorBand) w.key0 = end - ceil_div(end, block_n) * block_n;
      w.n_end = ceil_div(end - w.key0, block_n);
      w.n_begin = min(w.n_end, (lo - w.key0) / block_n);
    }
    if (p.num_splits > 1) {
      const int span = max(w.n_end - w.n_begin, 0);
      const int per_split = ceil_div(ceil_div(span, tiles_per_step), p.num_splits) * tiles_per_step;
      w.n_begin += blockIdx.y * per_split;
      w.n_end = min(w.n_end, w.n_begin + per_split);
    }
    return w;
  }
  if (p.is_causal && w.m0 < w.rows) w.n_end = min(w.n_end, ceil_div(max(w.diag_last + 1, 0), block_n));
  if (p.num_splits > 1) {
    const int per_split = ceil_div(ceil_div(n_blocks, tiles_per_step), p.num_splits) * tiles_per_step;
    w.n_begin = blockIdx.y * per_split;
    w.n_end = min(w.n_end, w.n_begin + per_split);
  }
  return w;
}

// The output row a tile row stands for: query position and query head.
struct RowTarget {
  int q_pos, head;
};

__device__ __forceinline__ RowTarget row_target(const FwdParams& p, const CtaWork& w, int tile_row) {
  const int r = w.m0 + tile_row, q = p.rows_per_query.div(r);
  return {q, p.pack_gqa ? w.cta_head * w.group + p.rows_per_query.mod(r, q) : w.cta_head};
}

// Index of a row in the LSE layout (also the row index of the split-KV partials).
__device__ __forceinline__ int64_t lse_index(const FwdParams& p, const CtaWork& w, RowTarget t) {
  return p.cu_seqlens_q != nullptr ? static_cast<int64_t>(t.head) * p.total_q + w.seq.q_start + t.q_pos
                                   : (static_cast<int64_t>(w.b) * p.num_heads + t.head) * p.seqlen_q + t.q_pos;
}

template <typename T>
__device__ __forceinline__ const T* q_rows_base(const FwdParams& p, const CtaWork& w) {
  return static_cast<const T*>(p.q) + w.b * p.q_batch_stride + w.seq.q_start * p.q_row_stride;
}
// The first key row of this work tile's sequence and KV head. Paged K/V has no such row (each
// key is found through the block table, load_kv_tile): there it is the head's offset alone.
template <typename T, class P>
__device__ __forceinline__ const T* k_base(const FwdParams& p, const CtaWork& w) {
  const T* k = static_cast<const T*>(p.k) + w.kv_head * p.k_head_stride;
  if (P::kIndexedKV && p.block_table != nullptr) return k;
  return k + w.kv_b * p.k_batch_stride + w.seq.k_start * p.k_row_stride;
}
template <typename T, class P>
__device__ __forceinline__ const T* v_base(const FwdParams& p, const CtaWork& w) {
  const T* v = static_cast<const T*>(p.v) + w.kv_head * p.v_head_stride;
  if (P::kIndexedKV && p.block_table != nullptr) return v;
  return v + w.kv_b * p.v_batch_stride + w.seq.k_start * p.v_row_stride;
}

}  // namespace forge_flash
