// Definition of the kernel table entry for one (dtype, head dim); included only by the
// generated instantiation units.
#pragma once

#include "fwd_kernel.cuh"
#include "kernel_registry.h"

namespace forge_flash {

template <typename T, typename Cfg>
KernelInfo kernel_info() {
  return {reinterpret_cast<const void*>(&fwd_kernel<T, Cfg>), Cfg::kBlockM, Cfg::kBlockN,
          Cfg::kNThreads, Cfg::kSmemBytes};
}

template <typename T, int kHeadDim>
FwdKernels fwd_kernels() {
  return {kernel_info<T, PrefillConfig<kHeadDim>>(), kernel_info<T, DecodeConfig<kHeadDim>>()};
}

}  // namespace forge_flash
