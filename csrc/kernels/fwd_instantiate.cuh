// Definition of the kernel table entry for one (dtype, head dim); included only by the
// generated instantiation units.
#pragma once

#include "decode_kernel.cuh"
#include "fwd_kernel.cuh"
#include "kernel_registry.h"
#include "sm90/fwd_kernel_sm90.cuh"
#include "split_plan.h"

namespace forge_flash {

template <typename Cfg>
KernelInfo kernel_info(const void* kernel) {
  return {kernel, Cfg::kBlockM, Cfg::kBlockN, Cfg::kNThreads, Cfg::kSmemBytes, Cfg::kKvTilesPerStep};
}

constexpr KernelInfo kNoKernel{nullptr, 0, 0, 0, 0, 1};  // a table entry not compiled

// The Hopper kernel of a table whose head dim has Hopper tiles of its own (sm90_head_dim in
// kernel_registry.h); null in the others. The tables of 192 and 256 also serve 160 and 224.
template <typename T, int kHeadDim, class P, bool kPersistent, bool kTmaOnly = false, bool kNonCausal = false,
          bool kPackedSeqs = false>
KernelInfo sm90_kernel_info() {
  if constexpr (sm90_head_dim(kHeadDim) == kHeadDim) {
    using Cfg = Sm90PrefillConfig<kHeadDim, kPersistent, kTmaOnly, P, kNonCausal>;
    static_assert(kHeadDim == 64 || kHeadDim == 128 || Cfg::kPadsHeadDim, "smaller head dims need zero-filled columns");
    KernelInfo info = kernel_info<Cfg>(reinterpret_cast<const void*>(&fwd_kernel_sm90<T, Cfg, P, kPackedSeqs>));
    info.tma_swizzle = Cfg::kSwizzle;
    info.tma_row_blocks = kHeadDim * 2 / Cfg::kSwizzle;
    if constexpr (kPackedSeqs && kPersistent) {  // it draws its work tiles (kDrawsTiles)
      info.smem_bytes += Cfg::kTileQueueBytes;
      info.draws_tiles = true;
    }
    return info;
  } else {
    return kNoKernel;
  }
}

// Variant tables only: the TMA-only Hopper kernel with policies P (BandSinks, AlibiOnly,
// BoundedSoftcap). AlibiOnly up to head_dim 192. At 256 it measured level with the variant
// table's own TMA-only instance, whose tiles are the same there (H200, 2026-12-04,
// docs/bench-history/2026-12-04.md), so ALiBi runs on that one and the table holds one instance
// fewer. BoundedSoftcap up to head_dim 128 (where it was measured; at 192 and 256 the variant
// instance's tiles are the largest that fit already) and in bf16 only, the dtype whose P holds
// its bounded logits (fp16 softcap calls take the running maximum).
template <typename T, int kHeadDim, bool kVariantTable, class P>
KernelInfo sm90_tma_variant_info() {
  constexpr bool kServed = !P::kBoundedSoftcap || (kHeadDim <= 128 && std::is_same<T, __nv_bfloat16>::value);
  if constexpr (kVariantTable && (!P::kAlibiOnly || kHeadDim <= 192) && kServed)
    return sm90_kernel_info<T, kHeadDim, P, false, true>();
  else
    return kNoKernel;
}

// Plain tables only: the TMA-only Hopper kernel for non-causal calls, where its tiles differ from
// the instance causal calls run (Sm90Tiles::kPFromSmem: head_dim 96); null elsewhere.
template <typename T, int kHeadDim, bool kVariantTable>
KernelInfo sm90_tma_non_causal_info() {
  if constexpr (!kVariantTable && sm90_head_dim(kHeadDim) == kHeadDim) {
    if constexpr (Sm90Tiles<kHeadDim, false, true, Plain, true>::kPFromSmem)
      return sm90_kernel_info<T, kHeadDim, Plain, false, true, true>();
  }
  return kNoKernel;
}

// Plain tables only: the kPackedSeqs twins of the TMA-only instance (kPersistent false) and of
// the persistent one (true), for varlen calls (the sequences packed along one dimension). At 64
// and 128 the TMA-only twin measured +8-22% over the cp.async path on a packed batch of long
// mixed lengths, the persistent twin -2% to +9% on a batch of short ones (47 sequences of 67-984
// tokens; H200, 2026-12-05, docs/benchmarks.md); at 96 the TMA-only twin gained 8% on long mixed
// causal lengths (session 51). At 192 and 256 they keep no lazy running max (kLazyMax in
// sm90/fwd_kernel_sm90.cuh says why).
template <typename T, int kHeadDim, bool kVariantTable, bool kPersistent>
KernelInfo sm90_packed_info() {
  if constexpr (!kVariantTable)
    return sm90_kernel_info<T, kHeadDim, Plain, kPersistent, !kPersistent, false, true>();
  else
    return kNoKernel;
}

// Variant tables: the TMA-only instance's kPackedSeqs twin with PagedKV policies, for varlen
// calls whose K/V sit in a paged cache (chunked prefill, as engines with a block table call it):
// Q through a map over the packed rows as the plain twin loads it, each K/V tile as boxes that
// each lie within one page (paged_box_rows; the pages that fit the tiles: paged_boxes.h)
// through maps over the cache, at the block ids the table gives
// (sm90/fwd_kernel_sm90.cuh, the producer). The IndexedKV instance it replaces there copies with
// cp.async, one row's block id at a time: over 4k paged keys its unsplit grid ran 148 TFLOP/s
// where the dense call's ran 342 (H100, 2026-12-05, docs/benchmarks.md). The twin, its producer
// a warp, ran chunked prefill of 16k tokens over pages of 16 at 1.44-1.72x, over pages of 256 at
// 1.58-1.90x the IndexedKV instance's speed (H200, session 62, docs/benchmarks.md). At 192 and
// 256 (tiles of 112 and 80 keys) it loads boxes of 16 rows from pages of 16 and more (8 from
// pages of 8): paged prefill at 256 had run at 0.45-0.55 of FA4's paged call on the IndexedKV
// copies, 0.84-0.93 on the twin over pages of 16 (H100, sessions 65-66, docs/benchmarks.md).
template <typename T, int kHeadDim, bool kVariantTable>
KernelInfo sm90_paged_info() {
  if constexpr (kVariantTable)
    return sm90_kernel_info<T, kHeadDim, PagedKV, false, true, false, true>();
  else
    return kNoKernel;
}

// Variant tables at head_dim 64 and 96: the paged twin with three consumers and 192-row query
// blocks (Sm90Tiles::kPagedWide), for grids of more than a wave. Against the twin above (H100,
// session 67, docs/benchmarks.md): non-causal +4-24% over pages of 16 and 64, causal +6-15%
// over 2k-8k keys in pages of 16, but -6% at 64 over 1k keys and -3% to level at 96 over pages
// of 64; a one-sequence grid of under a wave ran 14-16% slower (fewer CTAs than SMs).
// split_plan.h (takes_paged_wide) picks between them.
template <typename T, int kHeadDim, bool kVariantTable>
KernelInfo sm90_paged_wide_info() {
  if constexpr (kVariantTable && (kHeadDim == 64 || kHeadDim == 96)) {
    // Two CTAs of either would need more than one CTA's most (tile_config.h), so an SM holds one.
    static_assert(2 * Sm90PrefillConfig<kHeadDim, false, true, PagedKV, true>::kSmemBytes > kHopperSmemOptin &&
                      2 * Sm90PrefillConfig<kHeadDim, false, true, PagedKV, false>::kSmemBytes > kHopperSmemOptin,
                  "one CTA an SM in both instances: takes_paged_wide counts waves of one");
    return sm90_kernel_info<T, kHeadDim, PagedKV, false, true, true, true>();
  } else {
    return kNoKernel;
  }
}

// The decode kernel with policies P (with the fused K/V append: kAppend) where kCompiled, else
// null.
template <bool kCompiled, typename T, typename Decode, class P, bool kAppend = false>
KernelInfo decode_info() {
  if constexpr (kCompiled)
    return kernel_info<Decode>(reinterpret_cast<const void*>(&decode_kernel<T, Decode, P, kAppend>));
  else
    return kNoKernel;
}

// The decode instances of one CTA shape; the variant tables' own only in those. kPlainScores:
// those with plain scores only, for the CTA shapes beside DecodeConfig's (DecodeFullGridConfig,
// DecodeWideConfig; the score-variant instances keep DecodeConfig's: not measured in others).
template <typename T, typename Decode, bool kVariantTable, bool kPlainScores = false>
DecodeKernels decode_kernels() {
  constexpr bool kV = kVariantTable;
  DecodeKernels d{decode_info<!(kV && kPlainScores), T, Decode, TablePolicies<kV>>(),
                  decode_info<kV, T, Decode, IndexedKV>(), decode_info<kV, T, Decode, PagedKV>(),
                  decode_info<kV, T, Decode, IndexedKV, true>(),
                  decode_info<kV && !kPlainScores, T, Decode, AllVariants, true>()};
  d.paged.min_page_size = Decode::kLaneRows;
  return d;
}

// A CTA shape's plain-score decode instances where the head dim has them (kHas), else none.
template <bool kHas, typename T, typename Decode, bool kVariantTable>
DecodeKernels plain_score_decode_kernels() {
  if constexpr (kHas)
    return decode_kernels<T, Decode, kVariantTable, true>();
  else
    return {kNoKernel, kNoKernel, kNoKernel, kNoKernel, kNoKernel};
}

// Variant tables: the paged twin as a persistent instance (a CTA an SM, drawing its work tiles
// from a counter as the persistent twin over packed sequences does; its producer warp's lane 0
// draws), for paged calls over short keys, where each work tile's start-up is a large part of
// it: the plain launch above starts a CTA a work tile. Over 512 tokens a sequence at head_dim
// 64 the twin ran paged prefill at 161-280 TFLOP/s where the dense call (persistent kernel)
// ran 249-369 (H100, session 68, docs/benchmarks.md). Up to head_dim 192: at 256 (64-key tiles)
// it lost to the plain launch (takes_paged_persistent in split_plan.h).
template <typename T, int kHeadDim, bool kVariantTable>
KernelInfo sm90_paged_persistent_info() {
  if constexpr (kVariantTable && kHeadDim <= kPagedPersistentMaxHeadDim)
    return sm90_kernel_info<T, kHeadDim, PagedKV, true, true, false, true>();
  else
    return kNoKernel;
}

template <typename T, int kHeadDim, bool kVariantTable>
FwdKernels fwd_kernels() {
  using Prefill = PrefillConfig<kHeadDim>;
  using P = TablePolicies<kVariantTable>;
  using FullGrid = DecodeFullGridConfig<kHeadDim>;
  using Wide = DecodeWideConfig<kHeadDim>;
  return {kernel_info<Prefill>(reinterpret_cast<const void*>(&fwd_kernel<T, Prefill, P>)),
          decode_kernels<T, DecodeConfig<kHeadDim>, kVariantTable>(),
          plain_score_decode_kernels<has_hopper_decode_shapes(kHeadDim), T, FullGrid, kVariantTable>(),
          plain_score_decode_kernels<has_hopper_decode_shapes(kHeadDim), T, Wide, kVariantTable>(),
          {sm90_kernel_info<T, kHeadDim, P, false>(), sm90_kernel_info<T, kHeadDim, P, true>(),
           sm90_kernel_info<T, kHeadDim, P, false, true>(), sm90_tma_non_causal_info<T, kHeadDim, kVariantTable>(),
           sm90_tma_variant_info<T, kHeadDim, kVariantTable, BandSinks>(),
           sm90_tma_variant_info<T, kHeadDim, kVariantTable, AlibiOnly>(),
           sm90_tma_variant_info<T, kHeadDim, kVariantTable, BoundedSoftcap>(),
           sm90_packed_info<T, kHeadDim, kVariantTable, false>(), sm90_packed_info<T, kHeadDim, kVariantTable, true>(),
           sm90_paged_info<T, kHeadDim, kVariantTable>(), sm90_paged_wide_info<T, kHeadDim, kVariantTable>(),
           sm90_paged_persistent_info<T, kHeadDim, kVariantTable>()}};
}

}  // namespace forge_flash
