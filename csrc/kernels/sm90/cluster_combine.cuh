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
// No "memory" clobber: peers' partials change only before the cluster barrier (itself a
// volatile asm with one, so these loads stay after it), and the compiler may batch them.
__device__ __forceinline__ float4 ld_peer_f32x4(uint32_t addr) {
  float4 x;
  asm volatile("ld.shared::cluster.v4.f32 {%0,%1,%2,%3}, [%4];\n"
               : "=f"(x.x), "=f"(x.y), "=f"(x.z), "=f"(x.w)
               : "r"(addr));
  return x;
}

// Each CTA of the cluster holds its split's merged partial for the tile's 16 rows in its own
// shared memory: normalised fp32 O at `o_base` (rows of kPitch floats; 0 for a split that
// saw no key) and the LSE at `lse_base` (-inf for it). Warp `warp` of cluster CTA `rank` merges rows warp * splits +
// rank, and every (warps * splits)-th row after it, so the rows spread over the cluster's SMs first.
template <typename T, int kHeadDim, int kPitch>
__device__ __forceinline__ void combine_splits_in_cluster(const FwdParams& p, const CtaWork& w, uint32_t o_base,
                                                          uint32_t lse_base, int warp, int warps, int lane) {
  constexpr int kRows = 16, kQuads = kHeadDim / 4;
  cluster_barrier();  // every split's partial is in place

  const int splits = p.num_splits;
  T* out_rows = static_cast<T*>(p.out) + w.b * p.o_batch_stride + w.seq.q_start * p.o_row_stride;
  for (int row = warp * splits + static_cast<int>(cluster_cta_rank()); row < kRows && w.m0 + row < w.rows;
       row += warps * splits) {
    // Lane s holds split s's LSE; weights exp(lse_s - max), 0 for a split that saw no key.
    const float split_lse = lane < splits ? ld_peer_f32(peer_smem(lse_base + row * 4, lane)) : -INFINITY;
    float mx = split_lse;
#pragma unroll
    for (int off = 16; off > 0; off /= 2) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
    const float weight = merge_weight(split_lse, mx);
    float weights[kMaxClusterSplits];
#pragma unroll
    for (int s = 0; s < kMaxClusterSplits; ++s) weights[s] = __shfl_sync(0xffffffffu, weight, s);
    float sum = 0.f;
#pragma unroll
    for (int s = 0; s < kMaxClusterSplits; ++s) sum += weights[s];  // fixed order
    const RowTarget t = row_target(p, w, row);
    const float keep = p.sinks != nullptr ? join_sink(p.sinks[t.head], mx, sum) : 1.f;  // once per row
    const float inv = sum != 0.f ? keep / sum : 0.f;

    T* dst = out_rows + t.q_pos * p.o_row_stride + t.head * p.o_head_stride;
    for (int c = lane; c < kQuads && c * 4 < p.head_dim; c += 32) {
      // Every split's load is issued before the first is used: one round trip to the peers
      // rather than one per split. (A split that saw no key holds zeros, weighted 0.)
      const uint32_t addr = o_base + (row * kPitch + c * 4) * 4;
      float4 x[kMaxClusterSplits];
#pragma unroll
      for (int s = 0; s < kMaxClusterSplits; ++s)
        x[s] = s < splits ? ld_peer_f32x4(peer_smem(addr, s)) : make_float4(0.f, 0.f, 0.f, 0.f);
      float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
      for (int s = 0; s < kMaxClusterSplits; ++s) {
        acc.x = fmaf(weights[s], x[s].x, acc.x), acc.y = fmaf(weights[s], x[s].y, acc.y);
        acc.z = fmaf(weights[s], x[s].z, acc.z), acc.w = fmaf(weights[s], x[s].w, acc.w);
      }
      *reinterpret_cast<uint2*>(dst + c * 4) =
          make_uint2(pack2<T>(acc.x * inv, acc.y * inv), pack2<T>(acc.z * inv, acc.w * inv));
    }
    if (p.lse != nullptr && lane == 0) p.lse[lse_index(p, w, t)] = merged_lse(mx, sum);
  }
  cluster_barrier();  // peers may still be reading this CTA's partial
}

#endif  // __CUDA_ARCH__ >= 900

}  // namespace forge_flash
