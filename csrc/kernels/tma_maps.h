// TMA tensor maps for the Hopper kernel's tile loads (sm90/fwd_kernel_sm90.cuh).
#pragma once

#include "paged_boxes.h"
#include "params.h"

namespace forge_flash {

// How the maps address K/V rows: per batch row (dense calls), as the packed rows of every
// sequence (varlen calls, for the kPackedSeqs kernels only, which zero what they read past a
// sequence: total_q and total_k rows in one "batch"), or as pages of a block table (varlen calls
// over a paged cache, for the PagedKV kPackedSeqs twin: K and V as (head_dim, heads_k,
// page_size, num_blocks) with boxes of min(page_size, block_n) rows, so that a box holds rows of
// one page; Q packed as for kPacked).
enum class KvMaps { kDense, kPacked, kPaged };

// Encodes p.tma_q/k/v for boxes of `swizzle` bytes (one column block of the kernel's
// shared-memory layout) by block_m query rows or block_n key rows, and sets p.tma; or leaves
// p.tma false where the call's layout does not qualify: left-padded or per-sequence key counts
// (the kernel reads rows past a sequence's keys and counts on zeros there), varlen unless
// kPacked or kPaged, a block table unless kPaged (and there pages that paged_boxes_fit
// refuses), a cache batch index in a varlen call, packed GQA rows, a fused append, or addresses
// and strides TMA cannot take (16-byte multiples). The tile copies then serve the call, as they
// serve every other GPU.
bool set_tma_maps(FwdParams& p, bool bf16, int swizzle, int block_m, int block_n, KvMaps kv = KvMaps::kDense);

}  // namespace forge_flash
