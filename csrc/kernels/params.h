// What the forward kernels receive: one struct shared by the uniform and varlen paths. The C
// API (csrc/api/flash_api.cpp) checks the caller's arguments and fills the tensors, strides,
// sizes, flags and scales; the dispatcher (csrc/kernels/dispatch.cu) fills the rest: plan_fwd
// the GQA packing, the split count, the in-cluster merge, the row count and the TMA maps,
// launch_fwd the split-KV workspace pointers.
// Device-side values (cu_seqlens, seqused_k) are not checked on the host: the kernels clamp them.
#pragma once

#include <cuda_runtime_api.h>
#include <stdint.h>

#include "fast_div.h"
#include "forge_flash/flash_api.h"

namespace forge_flash {

// Rotary tables of one call (rotary.cuh): cos/sin (seqlen_ro, dim / 2) of `dtype`; half = dim / 2,
// 0 for none; pairs (2j, 2j + 1) when interleaved, else (j, j + half). `vectors`: every unit's
// angles come in vector loads (rotary.cuh load_angles): both tables' rows contiguous and 16-byte
// aligned, and dim a multiple of 16, so that a unit of 8 features lies wholly inside the rotated
// span (for GPT-NeoX pairs, inside one half).
struct RotaryTables {
  ff_rotary_table cos, sin;
  ff_merge_dtype dtype;
  int dim, half, seqlen_ro;
  int interleaved;
  int vectors;
};

// The tables of an append's arguments (the append kernel and the decode kernel's fused append).
inline RotaryTables rotary_tables(const ff_append_kv_args& a) {
  const bool on = a.rotary_cos.data != nullptr;
  const int64_t bytes = a.rotary_dtype == FF_MERGE_FLOAT32 ? 4 : 2;
  auto aligned_rows = [&](const ff_rotary_table& t) {
    return t.col_stride == 1 && (t.row_stride * bytes) % 16 == 0 && reinterpret_cast<uintptr_t>(t.data) % 16 == 0;
  };
  const bool vectors = on && a.rotary_dim % 16 == 0 && aligned_rows(a.rotary_cos) && aligned_rows(a.rotary_sin);
  return {a.rotary_cos, a.rotary_sin,         a.rotary_dtype, on ? a.rotary_dim : 0, on ? a.rotary_dim / 2 : 0,
          a.seqlen_ro,  a.rotary_interleaved, vectors ? 1 : 0};
}

// A TMA tensor map (CUtensorMap: 128 opaque bytes, 64-byte aligned), kept opaque here so that
// this header needs no driver API header; tma_maps.cu encodes them.
struct alignas(64) TmaDescriptor {
  unsigned char bytes[128];
};

struct FwdParams {
  const void* q;
  const void* k;
  const void* v;
  void* out;
  // Strides in elements; the head_dim dimension is contiguous. Batch strides are 0 for varlen.
  int64_t q_batch_stride, q_row_stride, q_head_stride;
  int64_t k_batch_stride, k_row_stride, k_head_stride;
  int64_t v_batch_stride, v_row_stride, v_head_stride;
  int64_t o_batch_stride, o_row_stride, o_head_stride;

  float* lse;  // optional: (batch, heads, seqlen_q), or (heads, total_q) for varlen

  // Varlen: sequence b owns rows [cu_seqlens[b], cu_seqlens[b + 1]) of the packed tensors.
  const int32_t* cu_seqlens_q;  // null for uniform batches
  const int32_t* cu_seqlens_k;
  const int32_t* seqused_k;  // optional per-sequence key count (KV caches)
  int total_q, total_k;      // rows of the packed tensors (varlen) - bounds for clamping

  int batch, seqlen_q, seqlen_k;  // seqlen_* are the maxima for varlen
  int num_heads, num_heads_k, head_dim;
  int group;      // num_heads / num_heads_k
  bool pack_gqa;  // fold the `group` query heads of one KV head into the tile's rows
  // Divisions by these launch-fixed values (plan_fwd; fast_div.h): tile rows per query position
  // (`group` when packed, else 1), query heads per KV head (`group`), the heads of a batch row's
  // work tiles, query blocks per head, and a causal launch's work tiles per group of heads.
  FastDiv rows_per_query, heads_per_kv, cta_heads, m_blocks, causal_group_tiles;
  bool is_causal;
  // A persistent causal launch whose tiles go by query block height (plan_fwd,
  // orders_causal_tiles_by_height; cta_work says why): the launch's CTAs (a round of work
  // tiles), the (batch, head) pairs of one height, and the last round's number.
  bool causal_by_height;
  FastDiv causal_round, causal_pairs;
  int causal_last_round;

  // Scores and the softmax. Plain kernels keep raw scores and fold the scale into the exp2:
  // scale_log2 = scale * log2(e), lse_scale = scale. Variant kernels (`features`) with a
  // softcap or a scale <= 0 first turn each score into a base-2 logit (score_mod):
  // scale_log2 = 1, lse_scale = ln(2), score_scale != 1; the others (windows, sinks, ALiBi,
  // paged or indexed K/V) keep raw scores like the plain kernels (score_scale = 1: no pass).
  float scale;       // the softmax scale
  float scale_log2;  // what softmax_step multiplies scores by
  float lse_scale;   // what finish_rows multiplies the running max by (natural-log LSE)

  // Variants (score_program.cuh): the kernels compiled with them run when `features` is set (any
  // of these, paged or indexed K/V, or a scale <= 0).
  bool features;
  // Whether scores need the variant score program (a window, softcap, ALiBi, sinks or a scale
  // <= 0); without it a variant call only addresses K/V differently (paged, indexed, left-padded),
  // which the decode kernel has instances for (DecodeKernels::kv, ::paged).
  bool score_mods;
  int window_left, window_right;  // keys around the aligned diagonal, -1 unbounded (causal: right 0)
  float softcap;                  // 0 = off
  float score_scale;              // score_mod: scale / softcap, scale * log2(e), or 1 (none)
  float softcap_log2;             // softcap * log2(e)
  const float* alibi_slopes;      // (heads,) or (batch, heads) float32
  int64_t alibi_batch_stride;
  float alibi_scale;   // slope factor into the units of score_mod's scores: log2(e), or 1 / scale (raw)
  const float* sinks;  // (heads,) float32: a logit per head in every row's denominator
  // Bounded logits (plan_fwd; the Hopper kernel's plain launch, up to head_dim 192): a softcap
  // keeps every base-2 logit within +-softcap_log2, so with bf16 P and no ALiBi the softmax may
  // subtract this fixed offset instead of a running maximum (softmax.cuh, softmax_bounded).
  bool bounded_logits;
  float logit_offset;

  // K/V addressing beyond strided dense rows.
  const int32_t* block_table;  // paged: (batch, max_blocks); k/v batch strides step one block
  int64_t block_table_stride;
  int page_size, num_blocks, max_blocks;
  int page_shift;               // log2(page_size) for a power-of-two page size, else -1
  const int32_t* kv_batch_idx;  // sequence b reads k/v batch row kv_batch_idx[b]
  int kv_batch_rows;
  const int32_t* k_start;  // sequence b's keys start at k_start[b] (left padding)

  // The fused K/V append of a decode step (ff_attn_fwd_append; decode kernel, variant
  // addressing): the sequence's last seqlen_new keys are the new ones, k_new/v_new (batch,
  // seqlen_new, heads_k, head_dim): the warps whose tiles hold them read them from there
  // (rotated, for k), and one CTA per KV head stores them into the cache (k/v) at
  // seqused_k[b] + i, where seqused_k counts the keys cached before them. With rotary tables
  // q is rotated as it is loaded (at seqused_k[b] + its token when query_per_token, else at
  // seqused_k[b]).
  int seqlen_new;  // 0: no fused append
  // Or the append ran as its own kernel just before this launch (ff_attn_fwd_append's two
  // launches: plain scores over a contiguous cache or whole pages, rotary over a contiguous
  // cache): the seqlen_new new keys are already in the cache after seqused_k[b] and q is, with
  // rotary tables, that kernel's rotated copy. The decode kernel, launched
  // programmatically behind it, then loads the cached rows before the new ones while the append
  // runs, and waits for it only before the tiles that hold new keys, and before q where that
  // kernel rotated q (q_from_append; decode_kernel.cuh).
  bool new_keys_in_cache;
  // With new_keys_in_cache: whether q is that kernel's output (its rotated copy, rotary tables);
  // else q is the caller's and the decode kernel loads it before waiting for that kernel.
  bool q_from_append;
  const void* k_new;
  const void* v_new;
  int64_t k_new_batch_stride, k_new_row_stride, k_new_head_stride;
  int64_t v_new_batch_stride, v_new_row_stride, v_new_head_stride;
  RotaryTables rotary;
  bool rotary_query_per_token;

  // Split-KV: each split writes its normalised partial O (fp32) and LSE here; the combine
  // kernel merges them. Indexed [split][row], a row being the LSE index of the output.
  int num_splits;
  int requested_splits;  // ff_attn_options::num_splits: 0 = plan_fwd chooses
  bool cluster_combine;  // Hopper decode: the splits of a tile are one cluster and merge there
  float* partial_o;      // [num_splits][num_rows][head_dim]
  float* partial_lse;    // [num_splits][num_rows]
  int64_t num_rows;      // batch * heads * seqlen_q, or heads * total_q for varlen

  // The Hopper kernel's tile loads through TMA (sm90/fwd_kernel_sm90.cuh): set by plan_fwd
  // (tma_maps.h) where Q, K and V are dense strided tensors whose rows the kernel reads from 0 to
  // seqlen (no varlen, paging, left padding or per-sequence key counts), else the copies. The
  // TMA-only instance runs only where they are set.
  bool tma;
  // A paged call's K/V maps (tma_maps.cu): true, the grouped maps, one box a page's rows of
  // every column block; false, four-dimensional maps: at head_dim 64 (one column block) a box a
  // page's rows, elsewhere one column block by 8 rows (zero-filled columns, heads apart).
  bool tma_grouped_pages;
  // Timeline stamps of a FORGE_FLASH_TRACE build (trace.cuh); null, and never read, elsewhere.
  // Here it takes the padding before the maps' 64-byte alignment: the other kernels' parameter
  // layout, and so their SASS, stay the same.
  unsigned long long* trace;
  // The work tiles' counter of an instance that draws them (KernelInfo::draws_tiles): in the
  // workspace, zeroed before each launch (launch_fwd); null for the others. In the same padding.
  int* tile_counter;
  TmaDescriptor tma_q, tma_k, tma_v;  // (head_dim, heads, seqlen, batch), one column block per box
};

}  // namespace forge_flash
