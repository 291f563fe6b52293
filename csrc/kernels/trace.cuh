// Opt-in timeline stamps (a diagnostic build: FORGE_FLASH_TRACE=ON when building the plugin).
// In such a build each stamp writes the SM's clock64 to FwdParams::trace, the buffer
// tools/lab/trace_rows.py allocates and names to the plugin (FORGE_FLASH_TRACE_BUFFER), at
// [(blockIdx.x * kTraceTiles + work tile) * kTraceSlots + slot] for the first kTraceCtas CTAs;
// the tool then prints where a work tile's cycles go. In every other build there is no stamp,
// and the kernels' SASS is the wheels'. What it found first: the persistent Hopper kernel's
// epilogue and next CtaWork, not its loads, stood between two short work tiles
// (docs/benchmarks.md, 2026-12-04 19:33).
#pragma once

#include "params.h"

namespace forge_flash {

// tools/lab/trace_rows.py reads the numbers below from this file (header_numbers).
constexpr int kTraceCtas = 4096;  // CTAs stamped (the first ones): the buffer holds this many
constexpr int kTraceTiles = 32;   // work tiles per CTA stamped (the first ones)
constexpr int kTraceSlots = 16;   // events per work tile
// The persistent Hopper kernel's events (sm90/fwd_kernel_sm90.cuh). The producer's: its Q load
// issued, its first K/V load issued. Each consumer warpgroup's (kTraceConsumer + 6 * consumer
// + event): Q landed, K[0] landed, its first turn, S[0] landed, the last P V retired, the
// epilogue done. Consumer 0's also: the work tile's body entered, and just before the Q wait.
enum TraceSlot : int {
  kTraceQIssued = 0,
  kTraceK0Issued = 1,
  kTraceConsumer = 2,
  kTraceBodyTop = 14,
  kTraceBeforeQWait = 15,
};
enum TraceConsumerEvent : int { kTraceQLanded, kTraceK0Landed, kTraceTurn, kTraceS0, kTraceLastPV, kTraceEpilogue };

// The kernels' tracing code, written inside FORGE_FLASH_TRACE_CODE(...): compiled in a trace
// build, absent otherwise. Not a function whose body is empty: even dead, the counters and
// stamp calls moved ptxas's register choices in 14 spilling instances.
#ifdef FORGE_FLASH_TRACE
#define FORGE_FLASH_TRACE_CODE(...) __VA_ARGS__
#else
#define FORGE_FLASH_TRACE_CODE(...)
#endif

__device__ __forceinline__ void trace_stamp(const FwdParams& p, int tile, int slot) {
  if (p.trace != nullptr && blockIdx.x < kTraceCtas && tile < kTraceTiles) {
    long long t;
    asm volatile("mov.u64 %0, %%clock64;" : "=l"(t)::"memory");
    p.trace[(static_cast<size_t>(blockIdx.x) * kTraceTiles + tile) * kTraceSlots + slot] =
        static_cast<unsigned long long>(t);
  }
}

}  // namespace forge_flash
