// FlashAttention-2 style forward kernel for SM80+ (mma.sync), written as a short
// program of tiles and stages:
//
//   load Q tile, load K[last]                                   (cp.async, swizzled smem)
//   for each K/V tile, last to first:
//     wait K; issue V load       S = Q K^T      (ldmatrix + mma.m16n8k16, fp32 accum)
//     mask (only tiles that straddle the causal diagonal or the sequence end)
//     wait V; issue next K load  online softmax (exp2, running max/sum per row)
//                                O += P V       (P stays in registers; V via ldmatrix.trans)
//   normalise O, write it through smem with 16-byte stores, write LSE
//
// One CTA owns kBlockM query rows of one (batch, head) - or, with pack_gqa, of one
// (batch, KV head), its rows being (query position, head in group) pairs - and walks a
// range of K/V tiles: all of them, or one split's share for split-KV.
#pragma once

#include <float.h>
#include <math.h>

#include "params.h"
#include "ptx.cuh"
#include "tile_config.h"

namespace forge_flash {

__device__ __forceinline__ int clamp_int(int x, int lo, int hi) { return min(max(x, lo), hi); }
__device__ __forceinline__ int ceil_div(int a, int b) { return (a + b - 1) / b; }

// Where this CTA's sequence lives and how long it is. Every length read from device
// memory is clamped, so malformed cu_seqlens / seqused_k cannot address out of bounds.
struct SeqExtent {
  int seqlen_q, seqlen_k;
  int64_t q_start, k_start;  // first row in the packed (varlen) tensors, else 0
};

__device__ __forceinline__ SeqExtent sequence_extent(const FwdParams& p, int b) {
  SeqExtent e{p.seqlen_q, p.seqlen_k, 0, 0};
  if (p.cu_seqlens_q != nullptr) {
    const int q0 = clamp_int(p.cu_seqlens_q[b], 0, p.total_q);
    const int q1 = clamp_int(p.cu_seqlens_q[b + 1], q0, p.total_q);
    const int k0 = clamp_int(p.cu_seqlens_k[b], 0, p.total_k);
    const int k1 = clamp_int(p.cu_seqlens_k[b + 1], k0, p.total_k);
    e.q_start = q0;
    e.k_start = k0;
    e.seqlen_q = min(q1 - q0, p.seqlen_q);
    e.seqlen_k = min(k1 - k0, p.seqlen_k);
  }
  if (p.seqused_k != nullptr) e.seqlen_k = clamp_int(p.seqused_k[b], 0, e.seqlen_k);
  return e;
}

// The output row a tile row stands for: query position and query head.
struct RowTarget {
  int q_pos, head;
};

template <typename T, typename Cfg>
__global__ void __launch_bounds__(Cfg::kNThreads)
    fwd_kernel(const __grid_constant__ FwdParams p, const int num_m_blocks) {
  constexpr int kBlockM = Cfg::kBlockM, kBlockN = Cfg::kBlockN;
  constexpr int kNThreads = Cfg::kNThreads, kMTiles = Cfg::kMTiles;
  constexpr int kChunks = Cfg::kChunks, kPitch = Cfg::kRowPitch;
  constexpr int kNTilesS = kBlockN / 8;          // n8 tiles of S per m16 tile
  constexpr int kNTilesO = Cfg::kHeadDim / 8;    // n8 tiles of O per m16 tile

  extern __shared__ __align__(128) unsigned char smem_raw[];
  T* sQ = reinterpret_cast<T*>(smem_raw);
  T* sK = sQ + Cfg::kSmemQElems;
  T* sV = sK + Cfg::kSmemKVElems;

  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  // Causal: the last query blocks see the most keys; launching them first keeps the
  // last wave short.
  const int m_slot = blockIdx.x % num_m_blocks;
  const int m_block = p.is_causal ? num_m_blocks - 1 - m_slot : m_slot;
  const int bh = blockIdx.x / num_m_blocks;
  const int split = blockIdx.y;
  const int heads_per_cta = p.pack_gqa ? p.num_heads_k : p.num_heads;
  const int b = bh / heads_per_cta, cta_head = bh % heads_per_cta;
  const int group = p.pack_gqa ? p.group : 1;  // query heads folded into rows
  const int kv_head = p.pack_gqa ? cta_head : cta_head / p.group;

  const SeqExtent seq = sequence_extent(p, b);
  const int rows = seq.seqlen_q * group;
  const int m0 = m_block * kBlockM;
  if (m0 >= rows) return;  // a shorter sequence of a varlen batch
  const int diag = seq.seqlen_k - seq.seqlen_q;  // bottom-right causal alignment

  auto row_target = [&](int tile_row) -> RowTarget {
    const int r = m0 + tile_row;
    return {r / group, p.pack_gqa ? cta_head * group + r % group : cta_head};
  };

  // Which K/V tiles this CTA visits: causal rows stop at their diagonal; a split owns
  // an equal share of the sequence's tiles.
  const int n_blocks = ceil_div(seq.seqlen_k, kBlockN);
  int n_end = n_blocks;
  if (p.is_causal) {
    const int last_q = (min(m0 + kBlockM, rows) - 1) / group;
    n_end = min(n_end, ceil_div(max(last_q + 1 + diag, 0), kBlockN));
  }
  int n_begin = 0;
  if (p.num_splits > 1) {
    const int per_split = ceil_div(n_blocks, p.num_splits);
    n_begin = split * per_split;
    n_end = min(n_end, n_begin + per_split);
  }
  const int first_q = m0 / group;  // smallest query position in the tile

  const T* q_ptr = static_cast<const T*>(p.q) + b * p.q_batch_stride + seq.q_start * p.q_row_stride;
  const T* k_ptr = static_cast<const T*>(p.k) + b * p.k_batch_stride +
                   seq.k_start * p.k_row_stride + kv_head * p.k_head_stride;
  const T* v_ptr = static_cast<const T*>(p.v) + b * p.v_batch_stride +
                   seq.k_start * p.v_row_stride + kv_head * p.v_head_stride;
  const int head_chunks = p.head_dim / 8;  // chunks with data; the rest are zero-filled

  // ---- Stage: global -> shared tile loads (16-byte cp.async, XOR-swizzled) ----
  // Each thread copies one 16-byte column chunk of every kRowStep-th row. The pitch's
  // padding chunks (routed head dims) are zero-filled and never read.
  constexpr int kPitchChunks = kPitch / 8;
  static_assert(kNThreads % kPitchChunks == 0, "a thread's chunk column is fixed");
  constexpr int kRowStep = kNThreads / kPitchChunks;
  const int ld_chunk = tid % kPitchChunks, ld_row0 = tid / kPitchChunks;
  const bool ld_chunk_ok = ld_chunk < head_chunks;
  auto smem_offset = [](int row, int chunk) { return row * kPitch + ((chunk ^ (row % 8)) * 8); };

  auto load_q = [&]() {
#pragma unroll
    for (int it = 0; it < kBlockM / kRowStep; ++it) {
      const int row = ld_row0 + it * kRowStep;
      const bool ok = ld_chunk_ok && m0 + row < rows;
      const RowTarget t = row_target(ok ? row : 0);
      const T* src = q_ptr + t.q_pos * p.q_row_stride + t.head * p.q_head_stride + ld_chunk * 8;
      cp_async_16(smem_addr(sQ + smem_offset(row, ld_chunk)), ok ? src : q_ptr, ok);
    }
  };
  // The source pointer advances by one row step per copy (a running pointer, not a
  // table of precomputed 64-bit addresses, which would cost two registers each).
  auto load_kv = [&](T* dst, const T* base, int64_t row_stride, int n_block) {
    const int n0 = n_block * kBlockN;
    const int rows_left = seq.seqlen_k - n0 - ld_row0;
    const T* src = base + (n0 + ld_row0) * row_stride + ld_chunk * 8;
    const uint32_t dst_addr = smem_addr(dst);
#pragma unroll
    for (int it = 0; it < kBlockN / kRowStep; ++it) {
      const int row = ld_row0 + it * kRowStep;
      const bool ok = ld_chunk_ok && it * kRowStep < rows_left;
      cp_async_16(dst_addr + smem_offset(row, ld_chunk) * 2, ok ? src : base, ok);
      src += kRowStep * row_stride;
    }
  };

  float acc_o[kMTiles][kNTilesO][4];
  float row_max[kMTiles][2], row_sum[kMTiles][2];
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt) {
#pragma unroll
    for (int j = 0; j < kNTilesO; ++j) acc_o[mt][j][0] = acc_o[mt][j][1] = acc_o[mt][j][2] = acc_o[mt][j][3] = 0.f;
    row_max[mt][0] = row_max[mt][1] = -INFINITY;
    row_sum[mt][0] = row_sum[mt][1] = 0.f;
  }

  // ldmatrix addressing. Every fragment starts on a multiple of 8 rows, so a lane's row
  // within the swizzle pattern is lane % 8 and its swizzled chunk for an even chunk base c
  // is c ^ x with x = lane_chunk ^ (lane % 8): only c % 8 varies at run time, so four
  // precomputed byte offsets per operand cover every k-step.
  const int warp_row0 = warp * kMTiles * 16;
  struct LaneAddr {
    uint32_t base;      // byte address of the lane's row, chunk 0
    uint32_t xor_[4];   // byte offset of swizzled chunk (2j ^ x), j = c % 8 / 2
    __device__ uint32_t at(int row_off, int chunk) const {  // chunk even, compile-time
      return base + row_off * kPitch * 2 + (chunk / 8) * 128 + xor_[(chunk % 8) / 2];
    }
  };
  auto lane_addr = [&](const T* tile, int lane_row, int lane_chunk) {
    LaneAddr a;
    a.base = smem_addr(tile) + lane_row * kPitch * 2;
    const int x = lane_chunk ^ (lane % 8);
#pragma unroll
    for (int j = 0; j < 4; ++j) a.xor_[j] = ((2 * j) ^ x) * 16;
    return a;
  };
  // A from Q: lanes 0-15 rows 0-15 at chunk c, lanes 16-31 the same rows at c + 1.
  const LaneAddr q_frag = lane_addr(sQ, warp_row0 + lane % 16, lane / 16);
  // B from K (keys are rows): matrices (keys 0-7, c), (0-7, c+1), (8-15, c), (8-15, c+1).
  const LaneAddr k_frag = lane_addr(sK, lane % 8 + (lane / 16) * 8, (lane / 8) % 2);
  // B from V, transposed: matrices (keys 0-7, c), (8-15, c), (0-7, c+1), (8-15, c+1).
  const LaneAddr v_frag = lane_addr(sV, lane % 16, lane / 16);

  if (n_begin < n_end) {
    // Prologue: Q, K and V of the first tile all in flight at once (a decode CTA may own
    // a single tile, so this saves it a whole memory round trip).
    load_q();
    load_kv(sK, k_ptr, p.k_row_stride, n_end - 1);
    cp_async_commit();
    load_kv(sV, v_ptr, p.v_row_stride, n_end - 1);
    cp_async_commit();

    // Walking from the last tile to the first puts the masked tiles (sequence end,
    // causal diagonal) in the first iterations; after them no tile needs a mask.
    for (int n_block = n_end - 1; n_block >= n_begin; --n_block) {
      if (n_block == n_end - 1) {
        cp_async_wait<1>();  // Q and K landed; V may still be in flight
        __syncthreads();
      } else {
        cp_async_wait<0>();
        __syncthreads();  // K[n] landed for everyone; every warp is done with V[n+1]
        load_kv(sV, v_ptr, p.v_row_stride, n_block);
        cp_async_commit();
      }

      // ---- S = Q K^T ----
      float acc_s[kMTiles][kNTilesS][4];
#pragma unroll
      for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
        for (int j = 0; j < kNTilesS; ++j) acc_s[mt][j][0] = acc_s[mt][j][1] = acc_s[mt][j][2] = acc_s[mt][j][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < Cfg::kHeadDim / 16; ++kk) {
        uint32_t a[kMTiles][4];
#pragma unroll
        for (int mt = 0; mt < kMTiles; ++mt)
          ldmatrix_x4(q_frag.at(mt * 16, 2 * kk), a[mt]);
#pragma unroll
        for (int nn = 0; nn < kBlockN / 16; ++nn) {
          uint32_t bk[4];
          ldmatrix_x4(k_frag.at(nn * 16, 2 * kk), bk);
#pragma unroll
          for (int mt = 0; mt < kMTiles; ++mt) {
            mma_16816<T>(acc_s[mt][2 * nn], a[mt], bk[0], bk[1]);
            mma_16816<T>(acc_s[mt][2 * nn + 1], a[mt], bk[2], bk[3]);
          }
        }
      }

      // ---- mask: keys past the sequence end, keys right of the causal diagonal ----
      const int n0 = n_block * kBlockN;
      const bool past_end = n0 + kBlockN > seq.seqlen_k;
      const bool crosses_diag = p.is_causal && n0 + kBlockN - 1 > first_q + diag;
      if (past_end || crosses_diag) {
#pragma unroll
        for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
          for (int half = 0; half < 2; ++half) {
            const int tile_row = warp_row0 + mt * 16 + lane / 4 + half * 8;
            int key_limit = seq.seqlen_k;  // keys >= key_limit are masked
            if (p.is_causal) key_limit = min(key_limit, (m0 + tile_row) / group + diag + 1);
#pragma unroll
            for (int j = 0; j < kNTilesS; ++j)
#pragma unroll
              for (int e = 0; e < 2; ++e) {
                const int key = n0 + j * 8 + (lane % 4) * 2 + e;
                if (key >= key_limit) acc_s[mt][j][half * 2 + e] = -INFINITY;
              }
          }
      }

      cp_async_wait<0>();
      __syncthreads();  // V[n] landed; every warp is done reading K[n]
      if (n_block > n_begin) {
        load_kv(sK, k_ptr, p.k_row_stride, n_block - 1);  // overlaps softmax and P V
        cp_async_commit();
      }

      // ---- online softmax: new running max, rescale O and the running sum ----
#pragma unroll
      for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          float mx = row_max[mt][half];
#pragma unroll
          for (int j = 0; j < kNTilesS; ++j)
            mx = fmaxf(mx, fmaxf(acc_s[mt][j][half * 2], acc_s[mt][j][half * 2 + 1]));
          mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));  // the 4 lanes of a row
          mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
          // A row that has seen only masked keys keeps max -inf; subtracting 0 instead
          // keeps every exponent -inf (p = 0) rather than NaN.
          const float max_scaled = mx == -INFINITY ? 0.f : mx * p.scale_log2;
          const float correction = exp2_approx(row_max[mt][half] * p.scale_log2 - max_scaled);
          row_max[mt][half] = mx;
          float sum = 0.f;
#pragma unroll
          for (int j = 0; j < kNTilesS; ++j)
#pragma unroll
            for (int e = 0; e < 2; ++e) {
              float& s = acc_s[mt][j][half * 2 + e];
              s = exp2_approx(fmaf(s, p.scale_log2, -max_scaled));
              sum += s;
            }
          row_sum[mt][half] = row_sum[mt][half] * correction + sum;
#pragma unroll
          for (int j = 0; j < kNTilesO; ++j) {
            acc_o[mt][j][half * 2] *= correction;
            acc_o[mt][j][half * 2 + 1] *= correction;
          }
        }

      // ---- O += P V: the S accumulators, packed to 16 bits, are the A fragments ----
#pragma unroll
      for (int kk = 0; kk < kBlockN / 16; ++kk) {
        uint32_t a[kMTiles][4];
#pragma unroll
        for (int mt = 0; mt < kMTiles; ++mt) {
          a[mt][0] = pack2<T>(acc_s[mt][2 * kk][0], acc_s[mt][2 * kk][1]);
          a[mt][1] = pack2<T>(acc_s[mt][2 * kk][2], acc_s[mt][2 * kk][3]);
          a[mt][2] = pack2<T>(acc_s[mt][2 * kk + 1][0], acc_s[mt][2 * kk + 1][1]);
          a[mt][3] = pack2<T>(acc_s[mt][2 * kk + 1][2], acc_s[mt][2 * kk + 1][3]);
        }
#pragma unroll
        for (int dd = 0; dd < Cfg::kHeadDim / 16; ++dd) {
          uint32_t bv[4];
          ldmatrix_x4_trans(v_frag.at(kk * 16, 2 * dd), bv);
#pragma unroll
          for (int mt = 0; mt < kMTiles; ++mt) {
            mma_16816<T>(acc_o[mt][2 * dd], a[mt], bv[0], bv[1]);
            mma_16816<T>(acc_o[mt][2 * dd + 1], a[mt], bv[2], bv[3]);
          }
        }
      }
    }
  }

  // ---- epilogue: 1/l, LSE; a row that saw no key gets O = 0 and LSE = -inf ----
  float lse[kMTiles][2];
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      float l = row_sum[mt][half];
      l += __shfl_xor_sync(0xffffffffu, l, 1);
      l += __shfl_xor_sync(0xffffffffu, l, 2);
      const bool empty = !(l > 0.f);
      const float inv = empty ? 0.f : 1.f / l;
      lse[mt][half] = empty ? -INFINITY : row_max[mt][half] * p.scale + logf(l);
#pragma unroll
      for (int j = 0; j < kNTilesO; ++j) {
        acc_o[mt][j][half * 2] *= inv;
        acc_o[mt][j][half * 2 + 1] *= inv;
      }
    }

  const bool is_varlen = p.cu_seqlens_q != nullptr;
  auto lse_index = [&](const RowTarget& t) -> int64_t {
    return is_varlen ? static_cast<int64_t>(t.head) * p.total_q + seq.q_start + t.q_pos
                     : (static_cast<int64_t>(b) * p.num_heads + t.head) * p.seqlen_q + t.q_pos;
  };

  if (p.num_splits > 1) {
    // Split-KV: fp32 partial O and LSE straight from registers; the combine kernel merges.
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int tile_row = warp_row0 + mt * 16 + lane / 4 + half * 8;
        if (m0 + tile_row >= rows) continue;
        const int64_t idx = split * p.num_rows + lse_index(row_target(tile_row));
        if (lane % 4 == 0) p.partial_lse[idx] = lse[mt][half];
        float* dst = p.partial_o + idx * p.head_dim;
#pragma unroll
        for (int j = 0; j < kNTilesO; ++j) {
          const int col = j * 8 + (lane % 4) * 2;
          if (col < p.head_dim)
            *reinterpret_cast<float2*>(dst + col) = make_float2(acc_o[mt][j][half * 2], acc_o[mt][j][half * 2 + 1]);
        }
      }
    return;
  }

  if (p.lse != nullptr && lane % 4 == 0) {
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int tile_row = warp_row0 + mt * 16 + lane / 4 + half * 8;
        if (m0 + tile_row < rows) p.lse[lse_index(row_target(tile_row))] = lse[mt][half];
      }
  }

  // O -> smem (the Q tile's space, same swizzle) -> 16-byte coalesced global stores.
  __syncthreads();  // every warp is done reading sQ
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int row = warp_row0 + mt * 16 + lane / 4 + half * 8;
#pragma unroll
      for (int j = 0; j < kNTilesO; ++j) {
        const uint32_t packed = pack2<T>(acc_o[mt][j][half * 2], acc_o[mt][j][half * 2 + 1]);
        *reinterpret_cast<uint32_t*>(sQ + smem_offset(row, j) + (lane % 4) * 2) = packed;
      }
    }
  __syncthreads();
  T* o_ptr = static_cast<T*>(p.out) + b * p.o_batch_stride + seq.q_start * p.o_row_stride;
#pragma unroll
  for (int i = tid; i < kBlockM * kChunks; i += kNThreads) {
    const int row = i / kChunks, c = i % kChunks;
    if (m0 + row >= rows || c >= head_chunks) continue;
    const RowTarget t = row_target(row);
    T* dst = o_ptr + t.q_pos * p.o_row_stride + t.head * p.o_head_stride + c * 8;
    *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(sQ + smem_offset(row, c));
  }
}

}  // namespace forge_flash
