// Hopper (sm_90a) synchronisation for a warp-specialised kernel: mbarriers that carry "this
// stage is full / empty" between a producer warpgroup and the consumer warpgroups, named
// barriers that order the consumers' turns on the tensor cores, and the register
// reallocation that gives the consumers the producer's unused registers.
//
// All of these are single PTX instructions (PTX ISA 8.x: mbarrier, cp.async.mbarrier.arrive,
// bar.sync / bar.arrive, setmaxnreg). Only kernels compiled for sm_90a reference them.
#pragma once

#include <stdint.h>

#include "wgmma.cuh"

namespace forge_flash {
namespace sm90 {

#ifdef FORGE_FLASH_SM90A_ENABLED

// ---- mbarrier: a 64-bit shared-memory barrier with an expected arrival count and a phase
// bit that flips each time the count is reached. Waiters name the phase parity they wait on.
__device__ __forceinline__ void mbar_init(uint32_t bar, int arrivals) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(arrivals) : "memory");
}
// Makes the initialised barriers visible to the other threads (and to the asynchronous
// arrivals of cp.async) before anyone uses them; followed by a CTA barrier.
__device__ __forceinline__ void mbar_init_fence() {
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
  asm volatile(
      "{\n"
      ".reg .b64 state;\n"
      "mbarrier.arrive.release.cta.shared::cta.b64 state, [%0];\n"
      "}\n" ::"r"(bar)
      : "memory");
}
// One arrival on `bar` once every cp.async this thread issued before has landed. `.noinc`:
// the arrival counts against the count the barrier was initialised with, so a barrier that
// waits for N copying threads is initialised with N.
__device__ __forceinline__ void mbar_arrive_after_cp_async(uint32_t bar) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(bar) : "memory");
}
__device__ __forceinline__ bool mbar_try_wait(uint32_t bar, int parity) {
  uint32_t done;
  asm volatile(
      "{\n"
      ".reg .pred done;\n"
      "mbarrier.try_wait.parity.acquire.cta.shared::cta.b64 done, [%1], %2;\n"
      "selp.u32 %0, 1, 0, done;\n"
      "}\n"
      : "=r"(done)
      : "r"(bar), "r"(parity)
      : "memory");
  return done != 0;
}
// Blocks until the phase with this parity has completed. try_wait suspends the thread for a
// while in hardware before it reports "not yet", so this loop does not spin hot.
__device__ __forceinline__ void mbar_wait(uint32_t bar, int parity) {
  while (!mbar_try_wait(bar, parity)) {
  }
}

// ---- TMA (cp.async.bulk.tensor): one thread copies a whole box of a tensor, described by a
// tensor map (tma_maps.cu), into shared memory, applying the swizzle the map names; the bytes
// complete a transaction count on an mbarrier. The producer first arrives on the barrier and
// announces the bytes of the phase (expect_tx), so the phase completes once they have landed.
__device__ __forceinline__ void mbar_arrive_expect_tx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.release.cta.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes)
               : "memory");
}
// Fetches a tensor map into the SM's descriptor cache before the first load that reads it, so
// that a CTA's first tiles (Q, K[0], on its critical path) do not also wait for the map. What
// CUTLASS-style kernels do; on the H200 its effect was inside the A/B spread (docs/bench-history/2026-12-03.md,
// 2026-12-03).
__device__ __forceinline__ void prefetch_tma_map(const void* map) {
  asm volatile("prefetch.tensormap [%0];\n" ::"l"(map) : "memory");
}
// `map` is the generic address of a tensor map in kernel parameter space (a __grid_constant__
// FwdParams member); coordinates innermost first, in elements.
__device__ __forceinline__ void tma_load_4d(uint32_t dst, const void* map, uint32_t bar, int c0, int c1, int c2,
                                            int c3) {
  asm volatile(
      "cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4, "
      "%5}], [%6];\n" ::"r"(dst),
      "l"(map), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(bar)
      : "memory");
}
__device__ __forceinline__ void tma_load_5d(uint32_t dst, const void* map, uint32_t bar, int c0, int c1, int c2, int c3,
                                            int c4) {
  asm volatile(
      "cp.async.bulk.tensor.5d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4, "
      "%5, %6}], [%7];\n" ::"r"(dst),
      "l"(map), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(c4), "r"(bar)
      : "memory");
}

// ---- Named barriers (ids 1-15; 0 is __syncthreads). `threads` counts every thread that
// takes part, arriving or waiting; a multiple of the warp size.
__device__ __forceinline__ void named_barrier_sync(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}
__device__ __forceinline__ void named_barrier_arrive(int id, int threads) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

// ---- Register reallocation between warpgroups (all warps of a warpgroup execute it).
template <int kRegs>
__device__ __forceinline__ void shrink_registers() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kRegs));
}
template <int kRegs>
__device__ __forceinline__ void grow_registers() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kRegs));
}

#endif  // FORGE_FLASH_SM90A_ENABLED

}  // namespace sm90
}  // namespace forge_flash
