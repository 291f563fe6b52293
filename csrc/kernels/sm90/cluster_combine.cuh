// Split-KV combine inside a thread-block cluster (Hopper, decode tiles).
//
// The splits of one decode tile are launched as one cluster (grid.y = cluster.y = splits).
// Each CTA leaves its partial result in its own shared memory; after a cluster barrier every
// CTA merges a share of the tile's rows by reading its peers' shared memory directly
// (distributed shared memory, `ld.shared::cluster`), in split order, so the result is
// deterministic. Compared with partials in global memory plus a combine kernel, this saves a
// kernel launch (host time, and the GPU's gap between the two kernels) and the workspace
// allocation, which is what short-cache decode steps are made of.
#pragma once

#include "../fwd_common.cuh"

namespace forge_flash {

// Most splits one cluster holds: 16 is the largest cluster H100 schedules (a non-portable
// size, enabled per kernel by the dispatcher); the dispatcher falls back to 8 if needed.
constexpr int kMaxClusterSplits = 16;

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900

// All threads of the cluster arrive and wait; release/acquire order shared-memory writes
// before the barrier with peers' reads after it.
__device__ __forceinline__ void cluster_barrier() {
  asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;\n" ::: "memory");
}
__device__ __forceinline__ uint32_t cluster_cta_rank() {
  uint32_t rank;
  asm volatile("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(rank));
  return rank;
}
// The address of the same shared-memory location in cluster CTA `rank`.
__device__ __forceinline__ uint32_t peer_smem(uint32_t addr, uint32_t rank) {
  uint32_t peer;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(peer) : "r"(addr), "r"(rank));
  return peer;
}
__device__ __forceinline__ float ld_peer_f32(uint32_t addr) {
  float x;
  asm volatile("ld.shared::cluster.f32 %0, [%1];\n" : "=f"(x) : "r"(addr) : "memory");
  return x;
}
__device__ __forceinline__ float4 ld_peer_f32x4(uint32_t addr) {
  float4 x;
  asm volatile("ld.shared::cluster.v4.f32 {%0,%1,%2,%3}, [%4];\n"
               : "=f"(x.x), "=f"(x.y), "=f"(x.z), "=f"(x.w)
               : "r"(addr)
               : "memory");
  return x;
}

// One warp per CTA, 16 tile rows: `o` and `lse` are this split's normalised O and LSE in the
// m16 accumulator layout (fwd_common.cuh). `smem` is free to reuse (no tile copies in flight).
template <typename T, int kHeadDim>
__device__ __forceinline__ void combine_splits_in_cluster(const FwdParams& p, const CtaWork& w,
                                                          const float (&o)[kHeadDim / 8][4], const float (&lse)[2],
                                                          unsigned char* smem, int lane) {
  constexpr int kRows = 16, kQuads = kHeadDim / 4;
  float* part_o = reinterpret_cast<float*>(smem);  // [kRows][kHeadDim]
  float* part_lse = part_o + kRows * kHeadDim;     // [kRows]

  // 1. This split's partial into its own shared memory.
  __syncwarp();  // the warp's last reads of the K/V tiles are done
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int row = lane / 4 + 8 * half;
#pragma unroll
    for (int j = 0; j < kHeadDim / 8; ++j)
      *reinterpret_cast<float2*>(part_o + row * kHeadDim + j * 8 + (lane % 4) * 2) =
          make_float2(o[j][half * 2], o[j][half * 2 + 1]);
    if (lane % 4 == 0) part_lse[row] = lse[half];
  }
  cluster_barrier();

  // 2. Rows rank, rank + splits, ... merged from every split, in split order.
  const int splits = p.num_splits;
  const uint32_t o_base = smem_addr(part_o), lse_base = smem_addr(part_lse);
  T* out_rows = static_cast<T*>(p.out) + w.b * p.o_batch_stride + w.seq.q_start * p.o_row_stride;
  for (int row = cluster_cta_rank(); row < kRows && w.m0 + row < w.rows; row += splits) {
    // Lane s holds split s's LSE; weights exp(lse_s - max), 0 for a split that saw no key.
    const float split_lse = lane < splits ? ld_peer_f32(peer_smem(lse_base + row * 4, lane)) : -INFINITY;
    float mx = split_lse;
#pragma unroll
    for (int off = 16; off > 0; off /= 2) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
    const float weight = mx == -INFINITY ? 0.f : expf(split_lse - mx);
    float weights[kMaxClusterSplits];
#pragma unroll
    for (int s = 0; s < kMaxClusterSplits; ++s) weights[s] = __shfl_sync(0xffffffffu, weight, s);
    float sum = 0.f;
#pragma unroll
    for (int s = 0; s < kMaxClusterSplits; ++s) sum += weights[s];  // fixed order
    const float inv = sum > 0.f ? 1.f / sum : 0.f;

    const RowTarget t = row_target(p, w, row);
    T* dst = out_rows + t.q_pos * p.o_row_stride + t.head * p.o_head_stride;
    for (int c = lane; c < kQuads && c * 4 < p.head_dim; c += 32) {
      float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
      for (int s = 0; s < kMaxClusterSplits; ++s) {
        if (s >= splits || weights[s] == 0.f) continue;  // an empty split's O is never read
        const float4 x = ld_peer_f32x4(peer_smem(o_base + (row * kHeadDim + c * 4) * 4, s));
        acc.x = fmaf(weights[s], x.x, acc.x), acc.y = fmaf(weights[s], x.y, acc.y);
        acc.z = fmaf(weights[s], x.z, acc.z), acc.w = fmaf(weights[s], x.w, acc.w);
      }
      *reinterpret_cast<uint2*>(dst + c * 4) =
          make_uint2(pack2<T>(acc.x * inv, acc.y * inv), pack2<T>(acc.z * inv, acc.w * inv));
    }
    if (p.lse != nullptr && lane == 0) p.lse[lse_index(p, w, t)] = sum > 0.f ? mx + logf(sum) : -INFINITY;
  }
  cluster_barrier();  // peers may still be reading this CTA's partial
}

#endif  // __CUDA_ARCH__ >= 900

}  // namespace forge_flash
