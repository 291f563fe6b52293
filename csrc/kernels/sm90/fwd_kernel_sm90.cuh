// Hopper (sm_90a) forward kernel: the same tile program as the SM80 kernel, with the two
// matrix products on warpgroup MMAs (wgmma) reading Q, K and V straight from shared memory.
//
//   CTA = 2 warpgroups x 64 query rows; head_dim 64 or 128; K/V tiles of kBlockN keys,
//   a ring of 3 shared-memory stages filled by cp.async two tiles ahead.
//   S[last] = Q K[last]^T
//   for each K/V tile n, last to first:
//     issue S[n-1] = Q K[n-1]^T        (async: runs on the tensor cores during the softmax)
//     mask, online softmax on S[n]     (fwd_common.cuh)
//     issue O += P V[n]                (RS form: P from registers, V MN-major from smem)
//     wait; S[n] <- S[n-1]; barrier; refill tile n's stage with tile n-3
//
// Why this beats mma.sync on H100: wgmma reads its smem operands directly (no ldmatrix
// traffic through registers), so shared-memory bandwidth stops being the ceiling, and
// issuing the next Q K^T before the softmax overlaps the exponentials (the special-function
// unit's ~4 TFLOP/s) with tensor-core work. Tiles use the 128-byte-swizzle layout of
// sm90/wgmma.cuh (64-column blocks).
#pragma once

#include "../fwd_common.cuh"
#include "wgmma.cuh"

namespace forge_flash {

template <int kHeadDim_, int kBlockN_>
struct Sm90Config {
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kBlockM = 128;  // 2 warpgroups x 64 rows
  static constexpr int kBlockN = kBlockN_;
  static constexpr int kNThreads = 256;
  static constexpr int kStages = 3;
  static_assert(kHeadDim == 64 || kHeadDim == 128, "wgmma tiles are written for head_dim 64 and 128");
  static constexpr int kQBytes = kBlockM * kHeadDim * 2;
  static constexpr int kKVBytes = kBlockN * kHeadDim * 2;
  // + 1 KB so the tiles can start on a 1024-byte boundary (the swizzle atom).
  static constexpr int kSmemBytes = kQBytes + kStages * 2 * kKVBytes + 1024;
};

template <int kHeadDim>
using Sm90PrefillConfig = Sm90Config<kHeadDim, 128>;

template <typename T, typename Cfg>
__global__ void __launch_bounds__(Cfg::kNThreads, 1)
    fwd_kernel_sm90(const __grid_constant__ FwdParams p, const int num_m_blocks) {
#ifndef FORGE_FLASH_SM90A_ENABLED
  __trap();  // compiled for other targets only so that the kernel table links; never launched there
#else
  constexpr int kBlockM = Cfg::kBlockM, kBlockN = Cfg::kBlockN, kHeadDim = Cfg::kHeadDim;
  constexpr int kNThreads = Cfg::kNThreads;
  constexpr int kNTilesS = kBlockN / 8, kNTilesO = kHeadDim / 8;
  constexpr int kChunks = kHeadDim / 8;

  extern __shared__ unsigned char smem_raw[];
  const uint32_t smem_base = (smem_addr(smem_raw) + 1023u) & ~1023u;
  unsigned char* smem = smem_raw + (smem_base - smem_addr(smem_raw));
  const uint32_t sQ = smem_base;
  auto sK = [&](int stage) { return sQ + Cfg::kQBytes + stage * 2 * Cfg::kKVBytes; };
  auto sV = [&](int stage) { return sK(stage) + Cfg::kKVBytes; };

  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int warpgroup = warp / 4;
  const int tile_row = warp * 16 + lane / 4;  // this thread's first row (and +8)
  const CtaWork w = cta_work(p, num_m_blocks, kBlockM, kBlockN);
  if (w.m0 >= w.rows) return;
  const T* k_ptr = k_base<T>(p, w);
  const T* v_ptr = v_base<T>(p, w);

  constexpr int kRowStep = kNThreads / kChunks;
  const TileCopyLane copy{tid / kChunks, tid % kChunks, true};
  auto load_kv = [&](int stage, int n_block) {
    const auto k_off = [](int row, int chunk) { return sm90::tile_offset(kBlockN, row, chunk); };
    load_kv_tile<T, kBlockN, kRowStep>(sK(stage), k_ptr, p.k_row_stride, n_block * kBlockN, w.seq.seqlen_k, copy,
                                       k_off);
    load_kv_tile<T, kBlockN, kRowStep>(sV(stage), v_ptr, p.v_row_stride, n_block * kBlockN, w.seq.seqlen_k, copy,
                                       k_off);
  };

  float acc_o[kNTilesO][4];
  float row_max[2] = {-INFINITY, -INFINITY}, row_sum[2] = {0.f, 0.f};
#pragma unroll
  for (int j = 0; j < kNTilesO; ++j) acc_o[j][0] = acc_o[j][1] = acc_o[j][2] = acc_o[j][3] = 0.f;
  // wgmma takes accumulators as flat register arrays; same registers, same order.
  float (&o_flat)[kNTilesO * 4] = *reinterpret_cast<float (*)[kNTilesO * 4]>(&acc_o[0][0]);

  auto stage_of = [&](int n_block) { return (w.n_end - 1 - n_block) % Cfg::kStages; };
  float acc_s[kNTilesS][4];
  float (&s_flat)[kNTilesS * 4] = *reinterpret_cast<float (*)[kNTilesS * 4]>(&acc_s[0][0]);
  // S = Q K^T for this warpgroup's 64 rows, issued asynchronously.
  auto issue_qk = [&](float (&dst)[kNTilesS * 4], int n_block) {
    sm90::wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kHeadDim / 16; ++kk)
      sm90::wgmma_qk<T>(dst, sm90::desc_kmajor<kBlockM>(sQ + warpgroup * 64 * sm90::kSwizzleRowBytes, kk),
                        sm90::desc_kmajor<kBlockN>(sK(stage_of(n_block)), kk), kk > 0);
    sm90::wgmma_commit();
  };

  if (w.n_begin < w.n_end) {
    // Prologue: Q and the first three tiles, one commit group per tile (possibly empty) so
    // that "tile n-1 has landed" is always wait_group<1>.
    const auto q_off = [](int row, int chunk) { return sm90::tile_offset(kBlockM, row, chunk); };
    load_q_tile<T, kBlockM, kRowStep>(p, w, sQ, copy, q_off);
#pragma unroll
    for (int i = 0; i < Cfg::kStages; ++i) {
      if (w.n_end - 1 - i >= w.n_begin) load_kv(i, w.n_end - 1 - i);
      cp_async_commit();
    }
    cp_async_wait<Cfg::kStages - 1>();
    sm90::fence_proxy_async_smem();  // make cp.async's writes visible to the tensor cores
    __syncthreads();
    issue_qk(s_flat, w.n_end - 1);
    sm90::wgmma_wait<0>();
    sm90::fence_operand(s_flat);

    for (int n_block = w.n_end - 1; n_block >= w.n_begin; --n_block) {
      const bool has_next = n_block > w.n_begin;
      cp_async_wait<Cfg::kStages - 2>();  // tile n-1 landed (tile n long before)
      sm90::fence_proxy_async_smem();
      __syncthreads();

      float acc_next[kNTilesS][4];
      float (&next_flat)[kNTilesS * 4] = *reinterpret_cast<float (*)[kNTilesS * 4]>(&acc_next[0][0]);
      if (has_next) issue_qk(next_flat, n_block - 1);

      const int n0 = n_block * kBlockN;
      if (tile_needs_mask(p, w, n0, kBlockN)) mask_scores(acc_s, p, w, n0, tile_row, lane);
      online_softmax(acc_s, acc_o, row_max, row_sum, p.scale_log2);

      // ---- O += P V: P from registers (the S accumulator layout is the A layout) ----
      uint32_t a[kBlockN / 16][4];
      sm90::acc_to_a<T>(s_flat, a);
      sm90::fence_operand(o_flat);
      sm90::wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < kBlockN / 16; ++kk)
        sm90::wgmma_pv<T>(o_flat, a[kk], sm90::desc_mnmajor<kBlockN>(sV(stage_of(n_block)), kk), true);
      sm90::wgmma_commit();
      sm90::wgmma_wait<0>();
      sm90::fence_operand(o_flat);
      if (has_next) {
        sm90::fence_operand(next_flat);
#pragma unroll
        for (int i = 0; i < kNTilesS * 4; ++i) s_flat[i] = next_flat[i];
      }

      __syncthreads();  // both warpgroups are done with tile n's stage
      if (n_block - Cfg::kStages >= w.n_begin) load_kv(stage_of(n_block), n_block - Cfg::kStages);
      cp_async_commit();
    }
  }

  // ---- epilogue (shared with the SM80 kernel) ----
  float lse[2];
  finish_rows(acc_o, row_max, row_sum, p.scale, lse);
  if (p.num_splits > 1) {
    store_partials(p, w, acc_o, lse, tile_row, lane);
    return;
  }
  store_lse(p, w, lse, tile_row, lane);
  T* staging = reinterpret_cast<T*>(smem);  // the Q tile's space, kBlockM x kHeadDim
  __syncthreads();
  stage_output<T, kHeadDim>(staging, acc_o, tile_row, lane);
  __syncthreads();
  store_output<T, kHeadDim, kBlockM, kChunks, kNThreads>(p, w, staging, tid);
#endif
}

}  // namespace forge_flash
