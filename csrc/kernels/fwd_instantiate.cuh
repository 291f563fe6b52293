// Definition of the kernel table entry for one (dtype, head dim); included only by the
// generated instantiation units.
#pragma once

#include "fwd_kernel.cuh"
#include "kernel_registry.h"
#include "sm90/fwd_kernel_sm90.cuh"

namespace forge_flash {

template <typename T, typename Cfg>
KernelInfo kernel_info() {
  return {reinterpret_cast<const void*>(&fwd_kernel<T, Cfg>), Cfg::kBlockM, Cfg::kBlockN, Cfg::kNThreads,
          Cfg::kSmemBytes};
}

// Hopper kernel only where it measured faster than the SM80 one on an H100 (head_dim 128;
// at 64 the softmax dominates and the mma.sync kernel was 2-4% ahead: docs/benchmarks.md).
template <typename T, int kHeadDim>
KernelInfo sm90_kernel_info() {
  if constexpr (kHeadDim == 128) {
    using Cfg = Sm90PrefillConfig<kHeadDim>;
    return {reinterpret_cast<const void*>(&fwd_kernel_sm90<T, Cfg>), Cfg::kBlockM, Cfg::kBlockN, Cfg::kNThreads,
            Cfg::kSmemBytes};
  } else {
    return {nullptr, 0, 0, 0, 0};
  }
}

template <typename T, int kHeadDim>
FwdKernels fwd_kernels() {
  return {kernel_info<T, PrefillConfig<kHeadDim>>(), kernel_info<T, DecodeConfig<kHeadDim>>(),
          sm90_kernel_info<T, kHeadDim>()};
}

}  // namespace forge_flash
