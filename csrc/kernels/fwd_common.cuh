// The parts of the forward tile program that do not depend on how the matrix products are
// computed: which rows and K/V tiles a CTA owns, masking, the online softmax, and the
// epilogue writes. Shared by the SM80 (mma.sync) and SM90 (wgmma) kernels.
//
// Register layout both kernels use for an m16 slice of an accumulator (S or O): a thread
// holds acc[j][hi * 2 + e] = element (row lane / 4 + 8 * hi, column 8 * j + 2 * (lane % 4) + e).
// This is the C layout of mma.m16n8k16 and, per warp, the accumulator layout of wgmma m64nNk16.
#pragma once

#include <limits.h>
#include <math.h>

#include "lse_merge.cuh"
#include "params.h"
#include "policies.h"
#include "ptx.cuh"

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
template <class P, bool kAnchorBand = false>
__device__ __forceinline__ CtaWork cta_work(const FwdParams& p, int num_m_blocks, int block_m, int block_n, int tile,
                                            int tiles_per_step = 1) {
  CtaWork w;
  w.key0 = 0;
  const int heads_per_cta = p.pack_gqa ? p.num_heads_k : p.num_heads;
  int m_block, bh;  // query block, (batch, head) index
  // The divisions are FastDiv's (params.h, fast_div.h): `/` by a runtime value costs ~25
  // instructions, at the start of every work tile and before a decode CTA's first loads.
  if (p.is_causal) {
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

// Global -> shared tile copies (16-byte cp.async). A thread copies one 16-byte column
// chunk of every kRowStep-th row; `offset(row, chunk)` is the byte offset of that chunk in
// the kernel's shared-memory layout. Chunks past head_dim and rows past the end are
// zero-filled (no global read), so routed head dims and tails need no other care.
struct TileCopyLane {
  int row0, chunk;
  bool chunk_ok;
};

// Passes of kRowStep rows over a Q tile of kRows: the last may overrun it where kRowStep does
// not divide kRows (a decode CTA of 3 warps copies 6 of 16 rows per pass at head_dim 128), and
// its lanes past the tile copy nothing (a zero-filling copy there would land in the next
// buffer). Where kRowStep divides kRows the check folds away.
constexpr int q_copy_passes(int rows, int row_step) { return (rows + row_step - 1) / row_step; }
__device__ __forceinline__ constexpr bool q_copy_row_in_tile(int rows, int row_step, int row) {
  return rows % row_step == 0 || row < rows;
}

template <typename T, int kRows, int kRowStep, class Offset>
__device__ __forceinline__ void load_q_tile(const FwdParams& p, const CtaWork& w, uint32_t dst, TileCopyLane lane,
                                            Offset offset) {
  const T* base = q_rows_base<T>(p, w);
#pragma unroll
  for (int it = 0; it < q_copy_passes(kRows, kRowStep); ++it) {
    const int row = lane.row0 + it * kRowStep;
    if (!q_copy_row_in_tile(kRows, kRowStep, row)) continue;  // a last pass past the tile
    const bool ok = lane.chunk_ok && w.m0 + row < w.rows;
    const RowTarget t = row_target(p, w, ok ? row : 0);
    const T* src = base + t.q_pos * p.q_row_stride + t.head * p.q_head_stride + lane.chunk * 8;
    cp_async_16(dst + offset(row, lane.chunk), ok ? src : base, ok);
  }
}

// The source pointer advances by one row step per copy (a running pointer rather than a
// table of precomputed 64-bit addresses, which would cost two registers each).
template <typename T, int kRows, int kRowStep, class Offset>
__device__ __forceinline__ void load_kv_tile(uint32_t dst, const T* base, int64_t row_stride, int n0, int seqlen_k,
                                             TileCopyLane lane, Offset offset) {
  const int rows_left = seqlen_k - n0 - lane.row0;
  const T* src = base + (n0 + lane.row0) * row_stride + lane.chunk * 8;
#pragma unroll
  for (int it = 0; it < kRows / kRowStep; ++it) {
    const bool ok = lane.chunk_ok && it * kRowStep < rows_left;
    cp_async_16(dst + offset(lane.row0 + it * kRowStep, lane.chunk), ok ? src : base, ok);
    src += kRowStep * row_stride;
  }
}

// Paged K/V (P::kIndexedKV): key t of the sequence is row t % page_size of block
// block_table[b][t / page_size], `base` the KV head's offset. Block ids and table columns are
// clamped, so a bad table can never address outside the cache.
//
// Block ids before copies: the table loads are independent and unconditional (a clamped
// column is always a valid address), so a group of them issues back to back and waits for one
// table round trip, not one per row. (With a load, a wait and a copy per row - the compiler
// does not move a load across the copies' asm - the decode kernel's SASS serialised 16 table
// round trips per K or V tile.) Groups of up to 8 rows keep few ids in registers, which the
// SM90 producer warps' small register budget holds. No division per row either: a lane's rows are
// kRowStep apart, so after the first row's page position each next one is a fixed step.
template <typename T, int kRows, int kRowStep, class Offset>
__device__ __forceinline__ void load_kv_tile_paged(const FwdParams& p, const CtaWork& w, uint32_t dst, const T* base,
                                                   int64_t block_stride, int64_t row_stride, int n0, TileCopyLane lane,
                                                   Offset offset) {
  constexpr int kIters = kRows / kRowStep;
  constexpr int kGroup = kIters % 8 == 0 ? 8 : kIters % 4 == 0 ? 4 : kIters % 2 == 0 ? 2 : 1;
  const int32_t* table = p.block_table + w.b * p.block_table_stride;
  const int start = static_cast<int>(w.seq.k_start);  // past the left padding
  const int page = p.page_size;
  // The K/V loops walk tiles from the last to the first (a decode CTA's warps in turn), so the
  // tiles below this one come next: their table entries go to L1 now, and those tiles' table
  // loads are L1 hits rather than L2 round trips (without this and the grouped loads, paged
  // decode ran 1.5-3.4x slower than contiguous on the H200, 2026-11-30).
  if (lane.row0 == 0 && lane.chunk < 4) {
    const int ahead = n0 - (lane.chunk + 1) * kRows + start;
    if (ahead >= 0) prefetch_l1(table + min(ahead / page, p.max_blocks - 1));
  }
  // Pages of a power-of-two size (the usual ones) divide by a shift.
  const bool shift = p.page_shift >= 0;
  const int first = n0 + lane.row0 + start;
  int column = shift ? first >> p.page_shift : first / page;
  int row = first - column * page;
  const int step_columns = shift ? kRowStep >> p.page_shift : kRowStep / page;
  const int step_rows = kRowStep - step_columns * page;
  auto step = [&] {
    row += step_rows, column += step_columns;
    if (row >= page) row -= page, ++column;
  };
#pragma unroll
  for (int g = 0; g < kIters; g += kGroup) {
    int block[kGroup];
    const int group_row = row, group_column = column;
#pragma unroll
    for (int i = 0; i < kGroup; ++i, step()) block[i] = __ldg(table + min(column, p.max_blocks - 1));
    row = group_row, column = group_column;  // again for the rows: 2 registers, not kGroup
#pragma unroll
    for (int i = 0; i < kGroup; ++i, step()) {
      const int r = lane.row0 + (g + i) * kRowStep;
      const bool ok = lane.chunk_ok && n0 + r < w.seq.seqlen_k;
      const T* src = base + clamp_int(block[i], 0, p.num_blocks - 1) * block_stride + row * row_stride + lane.chunk * 8;
      cp_async_16(dst + offset(r, lane.chunk), ok ? src : base, ok);
    }
  }
}

// Paged K/V for a warp that copies its tiles alone (the decode kernel). Its lanes copy blocks
// of kIters consecutive rows (lane row group g: rows g * kIters .. + kIters - 1, one 16-byte
// column chunk each), not every kRowStep-th row as load_kv_tile does, so that with pages of at
// least kIters keys a lane's rows lie in one page. Three ways, chosen per CTA, none with a
// branch per row:
//
//   one page per lane (power-of-two pages >= kIters keys, blocks not shifted off their
//   alignment by left padding: pages of 16-256 at head_dim 128): the lane loads its own
//   block id (`lane_pages`) and its rows then step like a contiguous cache's;
//   pages of one key: lane j holds the block id of the tile's key j and each row takes its
//   own by shuffle, with no page arithmetic;
//   any other page size: lane i holds the block id of the tile's i-th page (a tile of <= 32
//   keys spans at most 32 pages), each row takes its own by shuffle and steps a (page, row)
//   pair.
//
// Each way one table load per lane and tile, a K/V step ahead, off the copies' critical path
// (with the ids loaded next to the copies, the table round trip delayed every tile: one
// 32k-key sequence took 1.6x the contiguous time on the H200, 2026-11-30). Before these three
// loops, run-length variants (a page test, a shuffle and an address per run of rows, five
// unrolled copies of each K and V load) made the paged kernel's SASS 5x the contiguous one's,
// and it executed 17-28% more instructions; at one warp per scheduler (one sequence), or in the
// tail of a batch of 64, its time followed: 1.11-1.17x the contiguous kernel with pages of 16
// (H200, 2026-12-01).
__device__ __forceinline__ int first_page(const FwdParams& p, int cache_key) {
  return p.page_shift >= 0 ? cache_key >> p.page_shift : cache_key / p.page_size;
}
struct PagedWarpCopy {
  bool one_page;  // the same for every lane of the CTA
  int row0;       // the lane's first row in the tile: its row group times kIters
};
// kOnePage: the caller's instance runs only where that holds (P::kPagesOnly).
template <int kIters, bool kOnePage = false>
__device__ __forceinline__ PagedWarpCopy paged_warp_copy(const FwdParams& p, const CtaWork& w, TileCopyLane lane) {
  static_assert((kIters & (kIters - 1)) == 0, "blocks of a power-of-two row count");
  const bool one_page = kOnePage || (p.page_shift >= 0 && p.page_size >= kIters && (w.seq.k_start & (kIters - 1)) == 0);
  return {one_page, lane.row0 * kIters};
}
// The block id `lane` holds for the tile of keys [n0, n0 + 32 at most): its rows' page, or the
// tile's lane-th page. Columns and ids are clamped here, once per tile, so no copy can address
// outside the table or the cache.
__device__ __forceinline__ int lane_pages(const FwdParams& p, const CtaWork& w, int n0, int lane, PagedWarpCopy c) {
  const int32_t* table = p.block_table + w.b * p.block_table_stride;
  const int tile_key = n0 + static_cast<int>(w.seq.k_start);  // the cache's numbering
  const int column = c.one_page ? first_page(p, tile_key + c.row0) : first_page(p, tile_key) + lane;
  return clamp_int(__ldg(table + min(column, p.max_blocks - 1)), 0, p.num_blocks - 1);
}
template <typename T, int kRows, int kRowStep, class Offset>
__device__ __forceinline__ void load_kv_tile_paged_warp(const FwdParams& p, const CtaWork& w, uint32_t dst,
                                                        const T* base, int64_t block_stride, int64_t row_stride, int n0,
                                                        TileCopyLane lane, Offset offset, PagedWarpCopy c, int pages) {
  static_assert(kRows <= 32, "a tile's pages fit the warp's lanes");
  constexpr int kIters = kRows / kRowStep;
  const int tile_key = n0 + static_cast<int>(w.seq.k_start);
  const int key0 = tile_key + c.row0;  // the lane's first key
  const int rows_left = w.seq.seqlen_k - n0 - c.row0;
  // Byte addresses from unsigned 32-bit ids and rows (both >= 0): one wide multiply-add each,
  // where signed element offsets took a sign extension, three multiplies and a shift per row.
  const char* chunk_base = reinterpret_cast<const char*>(base + lane.chunk * 8);
  const uint64_t block_bytes = static_cast<uint64_t>(block_stride) * sizeof(T);
  const uint64_t row_bytes = static_cast<uint64_t>(row_stride) * sizeof(T);
  auto page_row = [&](int block, int row) {
    return reinterpret_cast<const T*>(chunk_base + static_cast<uint32_t>(block) * block_bytes +
                                      static_cast<uint32_t>(row) * row_bytes);
  };
  if (c.one_page) {
    const T* src = page_row(pages, key0 & (p.page_size - 1));
#pragma unroll
    for (int it = 0; it < kIters; ++it) {
      const bool ok = lane.chunk_ok && it < rows_left;
      cp_async_16(dst + offset(c.row0 + it, lane.chunk), ok ? src : base, ok);
      src += row_stride;
    }
    return;
  }
  if (p.page_size == 1) {  // a page per key: lane j holds the block of the tile's key j
#pragma unroll
    for (int it = 0; it < kIters; ++it) {
      const int block = __shfl_sync(0xffffffffu, pages, c.row0 + it);
      const bool ok = lane.chunk_ok && it < rows_left;
      cp_async_16(dst + offset(c.row0 + it, lane.chunk), ok ? page_row(block, 0) : base, ok);
    }
    return;
  }
  const int tile_column = first_page(p, tile_key);
  int column = first_page(p, key0);
  int row = key0 - column * p.page_size;
  // Not unrolled: pages of other sizes only need to be right, and unrolled at each of the
  // decode kernel's four tile loads this loop made up nearly a third of its SASS (the IndexedKV
  // instance 6.4k instructions this way, 9.1k unrolled), code the usual page sizes jump over.
#pragma unroll 1
  for (int it = 0; it < kIters; ++it) {
    const int block = __shfl_sync(0xffffffffu, pages, column - tile_column);
    const bool ok = lane.chunk_ok && it < rows_left;
    cp_async_16(dst + offset(c.row0 + it, lane.chunk), ok ? page_row(block, row) : base, ok);
    if (++row == p.page_size) row = 0, ++column;
  }
}

// A K or V tile of this work tile: strided rows, or (P::kIndexedKV) rows through the block
// table. Other instances compile only the strided copy.
template <typename T, int kRows, int kRowStep, class P, class Offset>
__device__ __forceinline__ void load_kv(const FwdParams& p, const CtaWork& w, uint32_t dst, const T* base,
                                        int64_t block_stride, int64_t row_stride, int n0, TileCopyLane lane,
                                        Offset offset) {
  if constexpr (P::kIndexedKV) {
    if (p.block_table != nullptr) {
      load_kv_tile_paged<T, kRows, kRowStep>(p, w, dst, base, block_stride, row_stride, n0, lane, offset);
      return;
    }
  }
  load_kv_tile<T, kRows, kRowStep>(dst, base, row_stride, n0, w.seq.seqlen_k, lane, offset);
}

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

// What a work tile's two rows of this thread end with: the factor O is multiplied by (1 / l, 0
// for a row that saw no key) and the LSE = max * scale + log(l) (-inf for such a row). A NaN
// score makes l NaN, and the row NaN: bad data is never turned into 0. With `sinks` (variant
// kernels, base-2 running max) each row's head's sink joins its denominator; only the last
// merge of a row may add it (split partials and a decode CTA's warps leave it out).
// kSumsWhole: each of a row's 4 lanes already holds the whole row sum (the Hopper kernel's
// kSumByMma), so the 4 lanes' parts are not added. The log is the special-function unit's, as
// in lse_merge.cuh: this runs once per work tile, in its epilogue. It reads no O, so a kernel
// may run it while its last O += P V is still in flight (the persistent Hopper kernel).
struct RowEnds {
  float inv[2], lse[2];
};
template <bool kSumsWhole = false>
__device__ __forceinline__ RowEnds row_ends(const float (&row_max)[2], const float (&row_sum)[2], float scale,
                                            const float* sinks = nullptr) {
  RowEnds e;
#pragma unroll
  for (int hi = 0; hi < 2; ++hi) {
    float l = kSumsWhole ? row_sum[hi] : quad_sum(row_sum[hi]);
    float mx = row_max[hi] * scale, keep = 1.f;  // natural log from here
    if (sinks != nullptr) keep = join_sink(sinks[hi], mx, l);
    const bool empty = l == 0.f;
    e.inv[hi] = empty ? 0.f : keep / l;
    e.lse[hi] = empty ? -INFINITY : mx + __logf(l);
  }
  return e;
}

// O /= l and the LSE (row_ends).
template <bool kSumsWhole = false, int kNO>
__device__ __forceinline__ void finish_rows(float (&o)[kNO][4], const float (&row_max)[2], const float (&row_sum)[2],
                                            float scale, float (&lse)[2], const float* sinks = nullptr) {
  const RowEnds e = row_ends<kSumsWhole>(row_max, row_sum, scale, sinks);
  rescale_rows(o, e.inv);
  lse[0] = e.lse[0], lse[1] = e.lse[1];
}

// The sink logits of this thread's two rows, for finish_rows (P::kSinks instances, on a row's
// last merge), or nullptr.
__device__ __forceinline__ const float* row_sinks(const FwdParams& p, const CtaWork& w, int tile_row,
                                                  float (&buffer)[2]) {
  if (p.sinks == nullptr) return nullptr;
#pragma unroll
  for (int hi = 0; hi < 2; ++hi) {
    const int row = tile_row + 8 * hi;
    buffer[hi] = p.sinks[row_target(p, w, w.m0 + row < w.rows ? row : 0).head];
  }
  return buffer;
}

// Split-KV: this split's normalised fp32 O and LSE, straight from registers.
template <int kNO>
__device__ __forceinline__ void store_partials(const FwdParams& p, const CtaWork& w, const float (&o)[kNO][4],
                                               const float (&lse)[2], int tile_row, int lane) {
#pragma unroll
  for (int hi = 0; hi < 2; ++hi) {
    const int row = tile_row + 8 * hi;
    if (w.m0 + row >= w.rows) continue;
    const int64_t idx = blockIdx.y * p.num_rows + lse_index(p, w, row_target(p, w, row));
    if (lane % 4 == 0) p.partial_lse[idx] = lse[hi];
    float* dst = p.partial_o + idx * p.head_dim;
#pragma unroll
    for (int j = 0; j < kNO; ++j) {
      const int col = j * 8 + (lane % 4) * 2;
      if (col < p.head_dim) *reinterpret_cast<float2*>(dst + col) = make_float2(o[j][hi * 2], o[j][hi * 2 + 1]);
    }
  }
}

__device__ __forceinline__ void store_lse(const FwdParams& p, const CtaWork& w, const float (&lse)[2], int tile_row,
                                          int lane) {
  if (p.lse == nullptr || lane % 4 != 0) return;
#pragma unroll
  for (int hi = 0; hi < 2; ++hi) {
    const int row = tile_row + 8 * hi;
    if (w.m0 + row < w.rows) p.lse[lse_index(p, w, row_target(p, w, row))] = lse[hi];
  }
}

// Where this thread's two rows of a work tile's output go (row `tile_row` and + 8), and whether
// each is a row of the sequence: work that reads no O, which the persistent Hopper kernel does
// while its last O += P V is in flight.
template <typename T>
struct OutputRows {
  T* dst[2];
  bool valid[2];
};
template <typename T>
__device__ __forceinline__ OutputRows<T> output_rows(const FwdParams& p, const CtaWork& w, int tile_row) {
  OutputRows<T> rows;
  T* o_ptr = static_cast<T*>(p.out) + w.b * p.o_batch_stride + w.seq.q_start * p.o_row_stride;
#pragma unroll
  for (int hi = 0; hi < 2; ++hi) {
    const int row = tile_row + 8 * hi;
    rows.valid[hi] = w.m0 + row < w.rows;  // the quad's row; every lane still shuffles
    const RowTarget target = row_target(p, w, rows.valid[hi] ? row : 0);
    rows.dst[hi] = o_ptr + target.q_pos * p.o_row_stride + target.head * p.o_head_stride;
  }
  return rows;
}

// This thread's part of two output rows as 16-bit pairs: packed[j][hi] holds columns 8 j + 2 t
// and + 1 of row hi (the accumulator layout, lane t of a quad), the form store_packed_rows takes.
template <typename T, int kNO>
__device__ __forceinline__ void pack_rows(const float (&o)[kNO][4], uint32_t (&packed)[kNO][2]) {
#pragma unroll
  for (int j = 0; j < kNO; ++j)
#pragma unroll
    for (int hi = 0; hi < 2; ++hi) packed[j][hi] = pack2<T>(o[j][hi * 2], o[j][hi * 2 + 1]);
}

// The output straight from registers, for kernels that cannot wait for a staging barrier (the
// persistent Hopper kernel). In the accumulator layout lane t of a quad holds columns
// 8 j + 2 t, +1 of its row for every 8-column slice j: stored as they are, every 4-byte store
// of a warp touches 8 rows and half of each 32-byte sector. So each group of 4 slices is
// transposed within the quad first (two rounds of shuffles), after which lane t holds all 8
// columns of slice 4 g + t: one 16-byte store per lane and group, a quarter of the store
// instructions, whole sectors.
template <typename T, int kNO>
__device__ __forceinline__ void store_packed_rows(const OutputRows<T>& rows, const uint32_t (&packed)[kNO][2],
                                                  int head_dim, int lane) {
  static_assert(kNO % 4 == 0, "whole groups of 4 slices: head_dim a multiple of 32");
  const int t = lane % 4;
#pragma unroll
  for (int hi = 0; hi < 2; ++hi) {
#pragma unroll
    for (int g = 0; g < kNO / 4; ++g) {
      uint32_t a[4];
#pragma unroll
      for (int s = 0; s < 4; ++s) a[s] = packed[4 * g + s][hi];
      // a[s] of lane t is element (t, s) of the quad's 4x4 matrix; afterwards it is (s, t).
      // Round 1 swaps (t, s) with (t ^ 1, s ^ 1) where bit 0 of s and t differ, round 2 the
      // same with bit 1.
#pragma unroll
      for (int bit = 1; bit <= 2; bit *= 2)
#pragma unroll
        for (int s = 0; s < 4; ++s) {
          if (s & bit) continue;  // the slot pair (s, s + bit)
          const bool upper = t & bit;
          const uint32_t sent = __shfl_xor_sync(0xffffffffu, upper ? a[s] : a[s + bit], bit);
          if (upper)
            a[s] = sent;
          else
            a[s + bit] = sent;
        }
      const int col = (4 * g + t) * 8;
      if (rows.valid[hi] && col < head_dim)
        *reinterpret_cast<uint4*>(rows.dst[hi] + col) = make_uint4(a[0], a[1], a[2], a[3]);
    }
  }
}
template <typename T, int kNO>
__device__ __forceinline__ void store_output_rows(const OutputRows<T>& rows, const float (&o)[kNO][4], int head_dim,
                                                  int lane) {
  uint32_t packed[kNO][2];
  pack_rows<T>(o, packed);
  store_packed_rows<T>(rows, packed, head_dim, lane);
}

// The output goes through shared memory so that global stores are 16 bytes wide and
// coalesced. Staging layout: rows of kPitch elements, 16-byte chunk c of row r at c ^ (r % 8).
template <int kPitch>
__device__ __forceinline__ int staging_offset(int row, int chunk) {
  return row * kPitch + ((chunk ^ (row & 7)) * 8);  // rows >= 0: & is % without a sign fix-up
}

template <typename T, int kPitch, int kNO>
__device__ __forceinline__ void stage_output(T* smem, const float (&o)[kNO][4], int tile_row, int lane) {
#pragma unroll
  for (int hi = 0; hi < 2; ++hi) {
    const int row = tile_row + 8 * hi;
#pragma unroll
    for (int j = 0; j < kNO; ++j)
      *reinterpret_cast<uint32_t*>(smem + staging_offset<kPitch>(row, j) + (lane % 4) * 2) =
          pack2<T>(o[j][hi * 2], o[j][hi * 2 + 1]);
  }
}

// After a barrier: the staged tile -> global, one 16-byte chunk per thread per step.
template <typename T, int kPitch, int kBlockM, int kChunks, int kNThreads>
__device__ __forceinline__ void store_output(const FwdParams& p, const CtaWork& w, const T* smem, int tid) {
  T* o_ptr = static_cast<T*>(p.out) + w.b * p.o_batch_stride + w.seq.q_start * p.o_row_stride;
  const int head_chunks = p.head_dim / 8;
#pragma unroll
  for (int i = tid; i < kBlockM * kChunks; i += kNThreads) {
    const int row = i / kChunks, c = i % kChunks;
    if (w.m0 + row >= w.rows || c >= head_chunks) continue;
    const RowTarget t = row_target(p, w, row);
    T* dst = o_ptr + t.q_pos * p.o_row_stride + t.head * p.o_head_stride + c * 8;
    *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(smem + staging_offset<kPitch>(row, c));
  }
}

}  // namespace forge_flash
