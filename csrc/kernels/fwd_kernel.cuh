// FlashAttention-2 style forward kernel for SM80+ (mma.sync), written as a short
// program of tiles and stages:
//
//   load Q tile, K[last], V[last]                              (cp.async, swizzled smem)
//   for each K/V tile, last to first:
//     wait K; issue V load       S = Q K^T      (ldmatrix + mma.m16n8k16, fp32 accum)
//     mask (only tiles that straddle the causal diagonal or the sequence end)
//     wait V; issue next K load  online softmax (exp2, running max/sum per row)
//                                O += P V       (P stays in registers; V via ldmatrix.trans)
//   normalise O, write it through smem with 16-byte stores, write LSE
//   (split-KV: write this split's partial instead, to the workspace for the combine kernel,
//   or on Hopper decode tiles merge the splits within their cluster: sm90/cluster_combine.cuh)
//
// The row/tile bookkeeping, softmax and epilogue live in fwd_common.cuh (shared with the
// SM90 wgmma kernel); this file is the SM80 data path.
#pragma once

#include "fwd_common.cuh"
#include "sm90/cluster_combine.cuh"
#include "tile_config.h"

namespace forge_flash {

template <typename T, typename Cfg>
__global__ void __launch_bounds__(Cfg::kNThreads)
    fwd_kernel(const __grid_constant__ FwdParams p, const int num_m_blocks) {
  constexpr int kBlockM = Cfg::kBlockM, kBlockN = Cfg::kBlockN;
  constexpr int kNThreads = Cfg::kNThreads, kMTiles = Cfg::kMTiles;
  constexpr int kPitch = Cfg::kRowPitch;
  constexpr int kNTilesS = kBlockN / 8;        // n8 tiles of S per m16 tile
  constexpr int kNTilesO = Cfg::kHeadDim / 8;  // n8 tiles of O per m16 tile

  extern __shared__ __align__(128) unsigned char smem_raw[];
  T* sQ = reinterpret_cast<T*>(smem_raw);
  T* sK = sQ + Cfg::kSmemQElems;
  T* sV = sK + Cfg::kSmemKVElems;

  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const CtaWork w = cta_work(p, num_m_blocks, kBlockM, kBlockN, blockIdx.x);
  if (w.m0 >= w.rows) return;  // a shorter sequence of a varlen batch
  const T* k_ptr = k_base<T>(p, w);
  const T* v_ptr = v_base<T>(p, w);

  // Tile copies into rows of kPitch elements, XOR-swizzled (chunk c of row r at c ^ r % 8)
  // so that ldmatrix reads are free of bank conflicts. The pitch's padding chunks (routed
  // head dims) are zero-filled and never read.
  constexpr int kPitchChunks = kPitch / 8;
  static_assert(kNThreads % kPitchChunks == 0, "a thread's chunk column is fixed");
  constexpr int kRowStep = kNThreads / kPitchChunks;
  const TileCopyLane copy{tid / kPitchChunks, tid % kPitchChunks, tid % kPitchChunks < p.head_dim / 8};
  const auto offset = [](int row, int chunk) { return static_cast<uint32_t>(staging_offset<kPitch>(row, chunk) * 2); };
  const uint32_t sQ_addr = smem_addr(sQ), sK_addr = smem_addr(sK), sV_addr = smem_addr(sV);
  auto load_k = [&](int n_block) {
    load_kv_tile<T, kBlockN, kRowStep>(sK_addr, k_ptr, p.k_row_stride, n_block * kBlockN, w.seq.seqlen_k, copy, offset);
  };
  auto load_v = [&](int n_block) {
    load_kv_tile<T, kBlockN, kRowStep>(sV_addr, v_ptr, p.v_row_stride, n_block * kBlockN, w.seq.seqlen_k, copy, offset);
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
    uint32_t base;                                          // byte address of the lane's row, chunk 0
    uint32_t xor_[4];                                       // byte offset of swizzled chunk (2j ^ x), j = c % 8 / 2
    __device__ uint32_t at(int row_off, int chunk) const {  // chunk even, compile-time
      return base + row_off * kPitch * 2 + (chunk / 8) * 128 + xor_[(chunk % 8) / 2];
    }
  };
  auto lane_addr = [&](uint32_t tile, int lane_row, int lane_chunk) {
    LaneAddr a;
    a.base = tile + lane_row * kPitch * 2;
    const int x = lane_chunk ^ (lane % 8);
#pragma unroll
    for (int j = 0; j < 4; ++j) a.xor_[j] = ((2 * j) ^ x) * 16;
    return a;
  };
  // A from Q: lanes 0-15 rows 0-15 at chunk c, lanes 16-31 the same rows at c + 1.
  const LaneAddr q_frag = lane_addr(sQ_addr, warp_row0 + lane % 16, lane / 16);
  // B from K (keys are rows): matrices (keys 0-7, c), (0-7, c+1), (8-15, c), (8-15, c+1).
  const LaneAddr k_frag = lane_addr(sK_addr, lane % 8 + (lane / 16) * 8, (lane / 8) % 2);
  // B from V, transposed: matrices (keys 0-7, c), (8-15, c), (0-7, c+1), (8-15, c+1).
  const LaneAddr v_frag = lane_addr(sV_addr, lane % 16, lane / 16);

  if (w.n_begin < w.n_end) {
    // Prologue: Q, K and V of the first tile all in flight at once (a decode CTA may own
    // a single tile, so this saves it a whole memory round trip).
    load_q_tile<T, kBlockM, kRowStep>(p, w, sQ_addr, copy, offset);
    load_k(w.n_end - 1);
    cp_async_commit();
    load_v(w.n_end - 1);
    cp_async_commit();

    for (int n_block = w.n_end - 1; n_block >= w.n_begin; --n_block) {
      if (n_block == w.n_end - 1) {
        cp_async_wait<1>();  // Q and K landed; V may still be in flight
        __syncthreads();
      } else {
        cp_async_wait<0>();
        __syncthreads();  // K[n] landed for everyone; every warp is done with V[n+1]
        load_v(n_block);
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
        for (int mt = 0; mt < kMTiles; ++mt) ldmatrix_x4(q_frag.at(mt * 16, 2 * kk), a[mt]);
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
      const int n0 = n_block * kBlockN;
      if (tile_needs_mask(p, w, n0, kBlockN)) {
#pragma unroll
        for (int mt = 0; mt < kMTiles; ++mt) mask_scores(acc_s[mt], p, w, n0, warp_row0 + mt * 16 + lane / 4, lane);
      }

      cp_async_wait<0>();
      __syncthreads();  // V[n] landed; every warp is done reading K[n]
      if (n_block > w.n_begin) {
        load_k(n_block - 1);  // overlaps the softmax and P V
        cp_async_commit();
      }

#pragma unroll
      for (int mt = 0; mt < kMTiles; ++mt) online_softmax(acc_s[mt], acc_o[mt], row_max[mt], row_sum[mt], p.scale_log2);

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

  // ---- epilogue ----
  float lse[kMTiles][2];
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt) finish_rows(acc_o[mt], row_max[mt], row_sum[mt], p.scale, lse[mt]);
  if (p.num_splits > 1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    if constexpr (kNThreads == 32 && kMTiles == 1) {  // decode tiles: one warp, 16 rows
      if (p.cluster_combine) {
        combine_splits_in_cluster<T, Cfg::kHeadDim>(p, w, acc_o[0], lse[0], smem_raw, lane);
        return;
      }
    }
#endif
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt) store_partials(p, w, acc_o[mt], lse[mt], warp_row0 + mt * 16 + lane / 4, lane);
    return;
  }
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt) store_lse(p, w, lse[mt], warp_row0 + mt * 16 + lane / 4, lane);
  __syncthreads();  // every warp is done reading sQ: it becomes the output staging tile
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt) stage_output<T, kPitch>(sQ, acc_o[mt], warp_row0 + mt * 16 + lane / 4, lane);
  __syncthreads();
  store_output<T, kPitch, kBlockM, Cfg::kChunks, kNThreads>(p, w, sQ, tid);
}

}  // namespace forge_flash
