// Definition of the kernel table entry for one (dtype, head dim); included only by the
// generated instantiation units.
#pragma once

#include "decode_kernel.cuh"
#include "fwd_kernel.cuh"
#include "kernel_registry.h"
#include "sm90/fwd_kernel_sm90.cuh"

namespace forge_flash {

template <typename Cfg>
KernelInfo kernel_info(const void* kernel) {
  return {kernel, Cfg::kBlockM, Cfg::kBlockN, Cfg::kNThreads, Cfg::kSmemBytes, Cfg::kKvTilesPerStep};
}

// Hopper kernels for the head dims with wgmma tiles of their own (Sm90PrefillConfig).
template <typename T, int kHeadDim, bool kPersistent>
KernelInfo sm90_kernel_info() {
  if constexpr (kHeadDim == 64 || kHeadDim == 96 || kHeadDim == 128 || kHeadDim == 192 || kHeadDim == 256) {
    using Cfg = Sm90PrefillConfig<kHeadDim, kPersistent>;
    return kernel_info<Cfg>(reinterpret_cast<const void*>(&fwd_kernel_sm90<T, Cfg>));
  } else {
    return {nullptr, 0, 0, 0, 0, 1};
  }
}

template <typename T, int kHeadDim>
FwdKernels fwd_kernels() {
  using Prefill = PrefillConfig<kHeadDim>;
  using Decode = DecodeConfig<kHeadDim>;
  return {kernel_info<Prefill>(reinterpret_cast<const void*>(&fwd_kernel<T, Prefill>)),
          kernel_info<Decode>(reinterpret_cast<const void*>(&decode_kernel<T, Decode>)),
          sm90_kernel_info<T, kHeadDim, false>(), sm90_kernel_info<T, kHeadDim, true>()};
}

}  // namespace forge_flash
