// Global -> shared copies of Q and K/V tiles with cp.async: strided, through a block table
// (paged K/V; a thread's rows whole pages, or a warp's), zero-filled past the ends. The Hopper
// kernel's TMA loads are in sm90/pipeline.cuh.
#pragma once

#include "cta_work.cuh"
#include "ptx.cuh"

namespace forge_flash {

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

}  // namespace forge_flash
