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
constexpr int kTraceSlots = 32;   // events per work tile
// The Hopper kernel's events (sm90/fwd_kernel_sm90.cuh). The producer's: its Q load issued, its
// first K/V load issued. Each consumer warpgroup's, up to three (kTraceConsumer + 6 * consumer +
// event): Q landed, K[0] landed, its first turn, S[0] landed, the last P V retired, the epilogue
// done. Consumer 0's also: the work tile's body entered, and just before the Q wait. The CTA's,
// in its first work tile's slots: the SM it ran on, and the clock64 and the SM-independent
// %globaltimer (ns) at its start and once its consumers' stores are issued, so that the CTAs
// that ran one after another on an SM line up (the gap between them is what a plain launch pays
// to retire a CTA and start the next: tools/lab/trace_rows.py, plain launches).
enum TraceSlot : int {
  kTraceQIssued = 0,
  kTraceK0Issued = 1,
  kTraceConsumer = 2,  // 2 .. 19
  kTraceBodyTop = 20,
  kTraceBeforeQWait = 21,
  kTraceSm = 22,
  kTraceStartClock = 23,
  kTraceStartTime = 24,
  kTraceEndTime = 25,
  kTraceEndClock = 26,
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

__device__ __forceinline__ void trace_record(const FwdParams& p, int tile, int slot, unsigned long long value) {
  if (p.trace != nullptr && blockIdx.x < kTraceCtas && tile < kTraceTiles)
    p.trace[(static_cast<size_t>(blockIdx.x) * kTraceTiles + tile) * kTraceSlots + slot] = value;
}

__device__ __forceinline__ void trace_stamp(const FwdParams& p, int tile, int slot) {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%clock64;" : "=l"(t)::"memory");
  trace_record(p, tile, slot, t);
}

__device__ __forceinline__ void trace_time(const FwdParams& p, int slot) {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t)::"memory");
  trace_record(p, 0, slot, t);
}

// The CTA's start (its first thread, at the kernel's entry) and end (its first consumer thread,
// its last stores issued).
__device__ __forceinline__ void trace_cta_start(const FwdParams& p) {
  unsigned int sm;
  asm volatile("mov.u32 %0, %%smid;" : "=r"(sm));
  trace_record(p, 0, kTraceSm, sm);
  trace_stamp(p, 0, kTraceStartClock);
  trace_time(p, kTraceStartTime);
}
__device__ __forceinline__ void trace_cta_end(const FwdParams& p) {
  trace_stamp(p, 0, kTraceEndClock);
  trace_time(p, kTraceEndTime);
}

}  // namespace forge_flash
