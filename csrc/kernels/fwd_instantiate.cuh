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

// The Hopper kernel a table head dim runs on: its own wgmma tiles (Sm90PrefillConfig) at 64,
// 96, 128, 192, 256; 160 and 224 on the next one up, which zero-fills the extra columns
// (Sm90Config::kPadsHeadDim); 32 on none (the SM80 kernel).
constexpr int sm90_head_dim(int head_dim) {
  return head_dim == 160 ? 192 : head_dim == 224 ? 256 : head_dim >= 64 ? head_dim : 0;
}

template <typename T, int kHeadDim, class P, bool kPersistent, bool kTmaOnly = false>
KernelInfo sm90_kernel_info() {
  constexpr int kSm90HeadDim = sm90_head_dim(kHeadDim);
  if constexpr (kSm90HeadDim != 0) {
    using Cfg = Sm90PrefillConfig<kSm90HeadDim, kPersistent, kTmaOnly, P>;
    static_assert(kSm90HeadDim == kHeadDim || Cfg::kPadsHeadDim, "a smaller head_dim needs zero-filled columns");
    KernelInfo info = kernel_info<Cfg>(reinterpret_cast<const void*>(&fwd_kernel_sm90<T, Cfg, P>));
    info.tma_swizzle = Cfg::kSwizzle;
    return info;
  } else {
    return {nullptr, 0, 0, 0, 0, 1};
  }
}

// Variant tables only: the TMA-only Hopper kernel with policies P (BandSinks, AlibiSlice).
// AlibiSlice up to head_dim 192: at 256 its key tile does not fit beside the K/V ring.
template <typename T, int kHeadDim, bool kVariantTable, class P>
KernelInfo sm90_tma_variant_info() {
  if constexpr (kVariantTable && (!P::kAlibiSlice || sm90_head_dim(kHeadDim) <= 192))
    return sm90_kernel_info<T, kHeadDim, P, false, true>();
  else
    return {nullptr, 0, 0, 0, 0, 1};
}

// Variant tables only: the decode kernel with policies P, with the fused K/V append or not.
template <typename T, typename Decode, bool kVariantTable, class P, bool kAppend>
KernelInfo decode_variant_info() {
  if constexpr (kVariantTable)
    return kernel_info<Decode>(reinterpret_cast<const void*>(&decode_kernel<T, Decode, P, kAppend>));
  else
    return {nullptr, 0, 0, 0, 0, 1};
}

template <typename T, typename Decode, bool kVariantTable>
KernelInfo decode_paged_info() {
  KernelInfo info = decode_variant_info<T, Decode, kVariantTable, PagedKV, false>();
  info.min_page_size = Decode::kLaneRows;
  return info;
}

template <typename T, int kHeadDim, bool kVariantTable>
FwdKernels fwd_kernels() {
  using Prefill = PrefillConfig<kHeadDim>;
  using Decode = DecodeConfig<kHeadDim>;
  using P = TablePolicies<kVariantTable>;
  return {kernel_info<Prefill>(reinterpret_cast<const void*>(&fwd_kernel<T, Prefill, P>)),
          kernel_info<Decode>(reinterpret_cast<const void*>(&decode_kernel<T, Decode, P>)),
          sm90_kernel_info<T, kHeadDim, P, false>(),
          sm90_kernel_info<T, kHeadDim, P, true>(),
          sm90_kernel_info<T, kHeadDim, P, false, true>(),
          decode_variant_info<T, Decode, kVariantTable, IndexedKV, false>(),
          decode_paged_info<T, Decode, kVariantTable>(),
          decode_variant_info<T, Decode, kVariantTable, IndexedKV, true>(),
          decode_variant_info<T, Decode, kVariantTable, AllVariants, true>(),
          sm90_tma_variant_info<T, kHeadDim, kVariantTable, BandSinks>(),
          sm90_tma_variant_info<T, kHeadDim, kVariantTable, AlibiSlice>()};
}

}  // namespace forge_flash
