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

// Hopper kernels for the head dims their wgmma tiles are written for.
template <typename T, int kHeadDim, bool kPersistent>
KernelInfo sm90_kernel_info() {
  if constexpr (kHeadDim == 64 || kHeadDim == 128) {
    using Cfg = Sm90PrefillConfig<kHeadDim, kPersistent>;
    return {reinterpret_cast<const void*>(&fwd_kernel_sm90<T, Cfg>), Cfg::kBlockM, Cfg::kBlockN, Cfg::kNThreads,
            Cfg::kSmemBytes};
  } else {
    return {nullptr, 0, 0, 0, 0};
  }
}

template <typename T, int kHeadDim>
FwdKernels fwd_kernels() {
  return {kernel_info<T, PrefillConfig<kHeadDim>>(), kernel_info<T, DecodeConfig<kHeadDim>>(),
          sm90_kernel_info<T, kHeadDim, false>(), sm90_kernel_info<T, kHeadDim, true>()};
}

}  // namespace forge_flash
