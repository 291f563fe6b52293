// TMA tensor maps for the Hopper kernel's tile loads (sm90/fwd_kernel_sm90.cuh).
#pragma once

#include "params.h"

namespace forge_flash {

// Encodes p.tma_q/k/v for boxes of `swizzle` bytes (one column block of the kernel's
// shared-memory layout) by block_m query rows or block_n key rows, and sets p.tma; or leaves
// p.tma false where the call's layout does not qualify: paged, left-padded or per-sequence key
// counts (the kernel reads rows past a sequence's keys and counts on zeros there), varlen
// unless `packed`, packed GQA rows, a fused append, or addresses and strides TMA cannot take
// (16-byte multiples). The tile copies then serve the call, as they serve every other GPU.
// `packed` (a varlen call, for the kPackedSeqs kernel only, which zeroes what it reads past a
// sequence): the maps cover the packed tensors, total_q and total_k rows in one "batch".
bool set_tma_maps(FwdParams& p, bool bf16, int swizzle, int block_m, int block_n, bool packed = false);

// The maps of a varlen call over a paged cache, for the PagedKV kPackedSeqs twin: Q as
// set_tma_maps(packed) encodes it, K and V over the caches as (head_dim, heads_k, page_size,
// num_blocks) with boxes of min(page_size, block_n) rows, so that a box holds rows of one page.
// Leaves p.tma false unless the pages are a power of two of at least 8 rows (a box lands on
// whole swizzle atoms), block_n a power of two, and there is no left padding, per-sequence key
// count, cache batch index, fused append or packed GQA.
bool set_paged_tma_maps(FwdParams& p, bool bf16, int swizzle, int block_m, int block_n);

}  // namespace forge_flash
