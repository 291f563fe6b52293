// TMA tensor maps for the Hopper kernel's tile loads (sm90/fwd_kernel_sm90.cuh).
#pragma once

#include "kernel_registry.h"
#include "paged_boxes.h"
#include "params.h"

namespace forge_flash {

// How the maps address K/V rows: per batch row (dense calls), as the packed rows of every
// sequence (varlen calls, for the kPackedSeqs kernels only, which zero what they read past a
// sequence: total_q and total_k rows in one "batch"), or as pages of a block table (varlen calls
// over a paged cache, for the PagedKV kPackedSeqs twin: K and V through five-dimensional maps
// whose boxes bring paged_box_rows rows of one page, every column block of a head, as the whole
// 8-row groups of the twin's grouped tiles; Q packed as for kPacked).
enum class KvMaps { kDense, kPacked, kPaged };

// Encodes p.tma_q/k/v for kernel k: boxes of k.tma_swizzle bytes (one column block of the
// kernel's shared-memory layout) by k.block_m query rows or k.block_n key rows (kPaged: K/V as
// above), and sets p.tma; or leaves p.tma false where the call's layout does not qualify:
// left-padded or per-sequence key counts (the kernel reads rows past a sequence's keys and
// counts on zeros there), varlen unless kPacked or kPaged, a block table unless kPaged (and there
// pages that paged_boxes_fit refuses), a cache batch index in a varlen call, packed GQA rows, a
// fused append, or addresses and strides TMA cannot take (16-byte multiples). The tile copies
// then serve the call, as they serve every other GPU. kPaged's K/V take the grouped maps where
// they encode, else maps of one column block by 8 rows (zero-filled columns, heads not back to
// back: p.tma_grouped_pages); tiles of one column block a row (k.tma_row_blocks == 1: head_dim
// 64), whose grouped layout is the blocked one, take the four-dimensional maps of a page's box.
bool set_tma_maps(FwdParams& p, bool bf16, const KernelInfo& k, KvMaps kv = KvMaps::kDense);

}  // namespace forge_flash
