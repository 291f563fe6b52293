// FlashAttention-2 style forward kernel for SM80+ (mma.sync), written as a short
// program of tiles and stages:
//
//   load Q tile, K[last], V[last]                              (cp.async, swizzled smem)
//   for each K/V tile, last to first:
//     wait K; issue V load       S = Q K^T      (ldmatrix + mma.m16n8k16, fp32 accum)
//     (score transform: P::kScoreMods), mask (only tiles that cross the sequence end or a band edge)
//     wait V; issue next K load  online softmax (exp2, running max/sum per row)
//                                O += P V       (P stays in registers; V via ldmatrix.trans)
//   normalise O, write it through smem with 16-byte stores, write LSE
//   (split-KV: write this split's partial instead, to the workspace for the combine kernel)
//
// The row/tile bookkeeping, softmax and epilogue live in fwd_common.cuh (shared with the
// SM90 wgmma kernel), the warp's matrix products in warp_mma.cuh (shared with the decode
// kernel); this file is the SM80 prefill data path: warps own query rows.
#pragma once

#include "fwd_common.cuh"
#include "grid_dependency.cuh"
#include "tile_config.h"
#include "warp_mma.cuh"

namespace forge_flash {

// P: the kernel's policies (policies.h: K/V addressing, mask, score transform, sinks).
template <typename T, typename Cfg, class P>
__global__ void __launch_bounds__(Cfg::kNThreads)
    fwd_kernel(const __grid_constant__ FwdParams p, const int num_m_blocks) {
  constexpr int kBlockM = Cfg::kBlockM, kBlockN = Cfg::kBlockN;
  constexpr int kNThreads = Cfg::kNThreads, kMTiles = Cfg::kMTiles;
  constexpr int kPitch = Cfg::kRowPitch;
  constexpr int kNTilesS = kBlockN / 8;        // n8 tiles of S per m16 tile
  constexpr int kNTilesO = Cfg::kHeadDim / 8;  // n8 tiles of O per m16 tile

  wait_for_previous_grid();  // a programmatic launch (after the K/V append) starts early
  extern __shared__ __align__(128) unsigned char smem_raw[];
  T* sQ = reinterpret_cast<T*>(smem_raw);
  T* sK = sQ + Cfg::kSmemQElems;
  T* sV = sK + Cfg::kSmemKVElems;

  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const CtaWork w = cta_work<P>(p, num_m_blocks, kBlockM, kBlockN, blockIdx.x);
  if (w.m0 >= w.rows) return;  // a shorter sequence of a varlen batch
  const T* k_ptr = k_base<T, P>(p, w);
  const T* v_ptr = v_base<T, P>(p, w);

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
    load_kv<T, kBlockN, kRowStep, P>(p, w, sK_addr, k_ptr, p.k_batch_stride, p.k_row_stride, n_block * kBlockN, copy,
                                     offset);
  };
  auto load_v = [&](int n_block) {
    load_kv<T, kBlockN, kRowStep, P>(p, w, sV_addr, v_ptr, p.v_batch_stride, p.v_row_stride, n_block * kBlockN, copy,
                                     offset);
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

  const int warp_row0 = warp * kMTiles * 16;
  ScoreRows rows[kMTiles];
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt) rows[mt] = score_rows<P>(p, w, warp_row0 + mt * 16 + lane / 4);
  const auto q_frag = q_lane<kPitch>(sQ_addr, warp_row0, lane);
  const auto k_frag = k_lane<kPitch>(sK_addr, lane);
  const auto v_frag = v_lane<kPitch>(sV_addr, lane);

  if (w.n_begin < w.n_end) {
    // Prologue: Q, K and V of the first tile all in flight at once (a split may own a
    // single tile, so this saves it a whole memory round trip).
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

      float acc_s[kMTiles][kNTilesS][4];
      qk_scores<T, kMTiles, kBlockN, Cfg::kHeadDim>(acc_s, q_frag, k_frag);
      const TileFacts tile = tile_facts<P>(p, w, n_block * kBlockN, kBlockN);
      float bias[kMTiles][2];
#pragma unroll
      for (int mt = 0; mt < kMTiles; ++mt)
        scores_to_logits<P>(acc_s[mt], p, w, tile, rows[mt], warp_row0 + mt * 16 + lane / 4, lane, bias[mt]);

      cp_async_wait<0>();
      __syncthreads();  // V[n] landed; every warp is done reading K[n]
      if (n_block > w.n_begin) {
        load_k(n_block - 1);  // overlaps the softmax and P V
        cp_async_commit();
      }

#pragma unroll
      for (int mt = 0; mt < kMTiles; ++mt)
        online_softmax<P::kAlibi>(acc_s[mt], acc_o[mt], row_max[mt], row_sum[mt], p.scale_log2, bias[mt]);

      pv_accumulate<T, kMTiles, kBlockN, Cfg::kHeadDim>(acc_o, acc_s, v_frag);
    }
  }

  // ---- epilogue ----
  float lse[kMTiles][2];
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt) {
    float sink_buffer[2];  // a split's partial leaves the sink to the combine kernel
    const float* sinks =
        P::kSinks && p.num_splits == 1 ? row_sinks(p, w, warp_row0 + mt * 16 + lane / 4, sink_buffer) : nullptr;
    finish_rows(acc_o[mt], row_max[mt], row_sum[mt], p.lse_scale, lse[mt], sinks);
  }
  if (p.num_splits > 1) {
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
