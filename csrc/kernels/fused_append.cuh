// The K/V append of a decode step, fused into the decode kernel (ff_attn_fwd_append).
//
// flash_attn_with_kvcache's step is "write the new keys/values into the cache at
// cache_seqlens[b], rotate q and the new keys, then attend over the cache". As two launches
// (append_kv_kernel.cuh, then the attention) the attention waits for the append's whole grid:
// its chain of dependent loads (the length, the block id, the write) and its completion added
// 1.6-6.6 us per step on the H200 at batch 1-64 (docs/bench-history/2026-12-01.md), where issue 15 allows 2.
// Here the attention needs nothing from another grid:
//
//   q:        rotated as it is loaded (registers -> shared memory), every CTA its own tile;
//   new keys: the sequence's last seqlen_new keys; the warp whose K or V tile holds them
//             overwrites those rows of the tile (landed from the cache's stale rows) with
//             k_new / v_new, k rotated on the way, before the tile's matrix product;
//   cache:    the same warp stores them into the cache, in one CTA per KV head (no other CTA
//             reads those rows from the cache: every one that needs them takes them from
//             k_new / v_new, so the stores race with nothing but reads whose data is replaced).
//
// Rotation is rotary.cuh's, so the cache and the attention see the bits the append kernel and
// the torch ops (kvcache_append.apply_rotary) produce.
#pragma once

#include "fwd_common.cuh"
#include "rotary.cuh"

namespace forge_flash {

// A thread's share of the Q tile of a fused append with rotary tables: each row rotated at its
// position (the first new key's, plus the query's token when query_per_token), in two steps.
// `load` issues every global load (q, GPT-NeoX partners, the tables' angles) and the kernel
// issues it before its first K/V copies, so q and the angles arrive with, not after, the first
// tiles; `store` rotates and writes the rows to the tile's generic shared address, rows and
// chunks past the tile's end zero, as load_q_tile's copies leave them. (No shared store comes
// between the loads: through a generic pointer it may alias them, and interleaved they would
// take a memory round trip per row.)
template <typename T, int kRows, int kRowStep>
struct RotatedQTile {
  static constexpr int kIters = q_copy_passes(kRows, kRowStep);
  rotary::Unit x[kIters], partner[kIters];
  rotary::Angles angles[kIters];
  bool here[kIters];

  __device__ __forceinline__ void load(const FwdParams& p, const CtaWork& w, TileCopyLane lane, int first_new_key) {
    const T* base = q_rows_base<T>(p, w);
    const int e0 = lane.chunk * 8;
#pragma unroll
    for (int it = 0; it < kIters; ++it) {
      const int row = lane.row0 + it * kRowStep;
      x[it] = partner[it] = rotary::Unit{};
      // else the row stays zero (and a last pass past the tile stores nothing)
      here[it] = lane.chunk_ok && q_copy_row_in_tile(kRows, kRowStep, row) && w.m0 + row < w.rows;
      if (here[it]) {
        const RowTarget t = row_target(p, w, row);
        const uint16_t* src =
            reinterpret_cast<const uint16_t*>(base + t.q_pos * p.q_row_stride + t.head * p.q_head_stride);
        rotary::load_unit<true>(src, e0, p.head_dim, x[it]);
        partner[it] = rotary::rotary_partner<true>(p.rotary, src, e0, p.head_dim);
        angles[it] = rotary::load_angles(p.rotary, e0, first_new_key + (p.rotary_query_per_token ? t.q_pos : 0));
      }
    }
  }

  template <class Offset>
  __device__ __forceinline__ void store(const FwdParams& p, unsigned char* smem, TileCopyLane lane, Offset offset) {
    const int e0 = lane.chunk * 8;
#pragma unroll
    for (int it = 0; it < kIters; ++it)
      if (here[it]) rotary::rotate_unit_by<T>(p.rotary, e0, angles[it], partner[it], x[it]);
#pragma unroll
    for (int it = 0; it < kIters; ++it)
      if (q_copy_row_in_tile(kRows, kRowStep, lane.row0 + it * kRowStep))
        *reinterpret_cast<uint4*>(smem + offset(lane.row0 + it * kRowStep, lane.chunk)) = x[it].vector;
  }
};

// The address of key `key` (the sequence's numbering) of the cache `base` (k_base / v_base):
// strided rows, or through the block table (id clamped into the cache).
template <typename T>
__device__ __forceinline__ T* cache_key_row(const FwdParams& p, const CtaWork& w, const T* base, int64_t block_stride,
                                            int64_t row_stride, int key) {
  if (p.block_table == nullptr) return const_cast<T*>(base + static_cast<int64_t>(key) * row_stride);
  const int column = first_page(p, key);
  const int block = __ldg(p.block_table + w.b * p.block_table_stride + min(column, p.max_blocks - 1));
  return const_cast<T*>(base + clamp_int(block, 0, p.num_blocks - 1) * block_stride +
                        static_cast<int64_t>(key - column * p.page_size) * row_stride);
}

// One lane's share of one new key: its k (with the GPT-NeoX partner unit and the angles, for the
// rotation) and v units. Loaded before the tiles they go into land (load_new_key), so that the
// patch after the landing waits for no memory.
struct NewKeyUnits {
  rotary::Unit k, k_partner, v;
  rotary::Angles angles;
};

// New key i (cache position first_new_key + i).
template <typename T>
__device__ __forceinline__ NewKeyUnits load_new_key(const FwdParams& p, const CtaWork& w, int i, int e0,
                                                    int first_new_key) {
  const uint16_t* k_row =
      reinterpret_cast<const uint16_t*>(static_cast<const T*>(p.k_new) + w.b * p.k_new_batch_stride +
                                        i * p.k_new_row_stride + w.kv_head * p.k_new_head_stride);
  const uint16_t* v_row =
      reinterpret_cast<const uint16_t*>(static_cast<const T*>(p.v_new) + w.b * p.v_new_batch_stride +
                                        i * p.v_new_row_stride + w.kv_head * p.v_new_head_stride);
  NewKeyUnits u;
  rotary::load_unit<true>(k_row, e0, p.head_dim, u.k);
  rotary::load_unit<true>(v_row, e0, p.head_dim, u.v);
  u.k_partner = rotary::rotary_partner<true>(p.rotary, k_row, e0, p.head_dim);
  u.angles = rotary::load_angles(p.rotary, e0, first_new_key + i);
  return u;
}

// The new keys in the K/V tiles of keys [n0, n0 + kRows): [lo, hi) of k_new's rows.
struct NewKeySpan {
  int lo, hi;
};
__device__ __forceinline__ NewKeySpan new_keys_in_tile(const FwdParams& p, int n0, int rows, int first_new_key) {
  return {max(n0 - first_new_key, 0), min(n0 + rows - first_new_key, p.seqlen_new)};
}

// The new keys of the K and V tiles of keys [n0, n0 + kRows) at `k_tile` / `v_tile` (landed,
// the warp synchronised): rows first_new_key + i take k_new / v_new row i (k rotated at that
// position), and `stores` puts them into the cache too. One warp; a lane keeps its copy lane's
// chunk column and every kRowStep-th row, as the tile copies do; `first` holds the units of
// the lane's first row (load_new_key), the later rows (more new keys than a pass of the warp
// covers) are loaded here.
template <typename T, int kRows, int kRowStep, class Offset>
__device__ __forceinline__ void patch_new_keys(const FwdParams& p, const CtaWork& w, unsigned char* k_tile,
                                               unsigned char* v_tile, int n0, int first_new_key, bool stores,
                                               TileCopyLane lane, Offset offset, const NewKeyUnits& first) {
  if (!lane.chunk_ok) return;  // chunks past head_dim stay zero
  const T* k_cache = k_base<T, IndexedKV>(p, w);
  const T* v_cache = v_base<T, IndexedKV>(p, w);
  const int e0 = lane.chunk * 8;
  const NewKeySpan span = new_keys_in_tile(p, n0, kRows, first_new_key);
  for (int i = span.lo + lane.row0; i < span.hi; i += kRowStep) {
    const int key = first_new_key + i;
    NewKeyUnits u = i == span.lo + lane.row0 ? first : load_new_key<T>(p, w, i, e0, first_new_key);
    rotary::rotate_unit_by<T>(p.rotary, e0, u.angles, u.k_partner, u.k);
    *reinterpret_cast<uint4*>(k_tile + offset(key - n0, lane.chunk)) = u.k.vector;
    *reinterpret_cast<uint4*>(v_tile + offset(key - n0, lane.chunk)) = u.v.vector;
    if (stores) {
      *reinterpret_cast<uint4*>(cache_key_row(p, w, k_cache, p.k_batch_stride, p.k_row_stride, key) + e0) = u.k.vector;
      *reinterpret_cast<uint4*>(cache_key_row(p, w, v_cache, p.v_batch_stride, p.v_row_stride, key) + e0) = u.v.vector;
    }
  }
}

}  // namespace forge_flash
