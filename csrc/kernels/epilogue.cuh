// The end of a work tile: each row's 1 / l and LSE (sinks joined in the last merge), and the
// writes of O, the LSE and split-KV partials, from registers or through shared memory.
#pragma once

#include "cta_work.cuh"
#include "lse_merge.cuh"
#include "ptx.cuh"
#include "softmax.cuh"

namespace forge_flash {

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
