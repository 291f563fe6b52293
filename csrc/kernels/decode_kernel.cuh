// Decode kernel for SM80+ (mma.sync): a tile of 16 query rows - one token, or the query heads
// of one GQA group folded into rows - against a long run of K/V tiles. Its warps divide the
// keys, not the rows:
//
//   load Q (the whole CTA)
//   warp w walks every W-th K/V tile of the CTA's range, from its w-th (dense K/V) or its
//   w-th last (paged K/V, the fused append), in its own buffers:
//     wait K; issue V load       S = Q K^T                (warp_mma.cuh)
//     mask (tiles that cross the sequence end or the causal diagonal)
//     wait V; issue next K load  online softmax, O += P V
//   the W warps' partials (O, row max and sum) merged in shared memory, in warp order, then
//     one split:                 O and LSE to global memory
//     splits + combine kernel:   this split's partial to the workspace
//     Hopper, splits in cluster: merged across the cluster (sm90/cluster_combine.cuh)
//
// Why: a decode tile is too small to divide by rows (16 rows are one m16 MMA slice), and a
// CTA of one warp drives one of the SM's four tensor-core quadrants and keeps one K or V tile
// in flight. Dividing the keys gives the CTA W tiles in flight and W quadrants, so W times
// fewer splits fill the GPU, which matters where a cluster holds at most 16 of them.
#pragma once

#include "fused_append.cuh"
#include "fwd_common.cuh"
#include "grid_dependency.cuh"
#include "sm90/cluster_combine.cuh"
#include "tile_config.h"
#include "warp_mma.cuh"

namespace forge_flash {

// P: the kernel's policies (policies.h). A decode step over a paged or indexed cache with plain
// scores takes IndexedKV, not AllVariants: it then pays nothing for score variants it does not
// use (the variant kernel cost one sequence of 4k keys 11.8 us, the plain one 10.3, H200).
// kAppend: with the fused K/V append of a decode step (fused_append.cuh, FwdParams::seqlen_new).
template <typename T, typename Cfg, class P, bool kAppend = false>
__global__ void __launch_bounds__(Cfg::kNThreads)
    decode_kernel(const __grid_constant__ FwdParams p, const int num_m_blocks) {
  constexpr int kBlockM = Cfg::kBlockM, kBlockN = Cfg::kBlockN, kWarps = Cfg::kNWarps;
  constexpr int kNThreads = Cfg::kNThreads, kHeadDim = Cfg::kHeadDim, kPitch = Cfg::kRowPitch;
  constexpr int kNTilesO = kHeadDim / 8;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
  if constexpr (Cfg::kHopperOnly) return;  // launched on Hopper only (dispatch.cu): no SM80 code
#endif

  // A programmatic launch starts early, behind the K/V append kernel: it waits for that kernel
  // before it touches memory, or (early_kv, FwdParams::new_keys_in_cache) only before the memory
  // that kernel writes: the tiles of new keys (and q, where it rotated q). Dense K/V and
  // whole-page instances only: compiled into the general paged one (IndexedKV), these branches
  // cost its decode of one 32k-key sequence 9% (40.5 -> 44.2 us, pages of 16, H200,
  // 2026-12-01), and its steps stay fused.
  const bool early_kv = (!P::kIndexedKV || P::kPagesOnly) && !kAppend && p.new_keys_in_cache;
  if (!early_kv) wait_for_previous_grid();
  allow_next_grid_launch();  // the split-KV combine kernel, launched programmatically, may start
  extern __shared__ __align__(128) unsigned char smem_raw[];
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  T* sQ = reinterpret_cast<T*>(smem_raw);
  T* sK = sQ + Cfg::kSmemQElems + warp * 2 * Cfg::kSmemKVElems;  // this warp's K and V tiles
  T* sV = sK + Cfg::kSmemKVElems;

  const CtaWork w = cta_work<P>(p, num_m_blocks, kBlockM, kBlockN, blockIdx.x, kWarps);
  if (w.m0 >= w.rows) return;  // an empty sequence of a varlen batch (its whole cluster returns)
  const T* k_ptr = k_base<T, P>(p, w);
  const T* v_ptr = v_base<T, P>(p, w);

  // Copies into swizzled rows of kPitch elements (see warp_mma.cuh). Q: the first kQThreads
  // threads (3 warps at head_dim 128: 6 rows a pass, the third pass 4); K/V: each warp its own
  // tiles, so a warp waits only for its own loads.
  constexpr int kPitchChunks = kPitch / 8;
  constexpr int kQThreads = kNThreads < kBlockM * kPitchChunks ? kNThreads : kBlockM * kPitchChunks;
  static_assert(kQThreads % kPitchChunks == 0 && 32 % kPitchChunks == 0, "a thread's chunk column is fixed");
  const int head_chunks = p.head_dim / 8;
  const TileCopyLane q_copy{tid / kPitchChunks, tid % kPitchChunks, tid % kPitchChunks < head_chunks};
  const TileCopyLane kv_copy{lane / kPitchChunks, lane % kPitchChunks, lane % kPitchChunks < head_chunks};
  const auto offset = [](int row, int chunk) { return static_cast<uint32_t>(staging_offset<kPitch>(row, chunk) * 2); };
  const uint32_t sQ_addr = smem_addr(sQ), sK_addr = smem_addr(sK), sV_addr = smem_addr(sV);
  // Paged K/V: `pages` holds the block-table entry this lane needs for the tile being loaded,
  // `next_pages` that of the warp's next tile, loaded a step ahead (load_kv_tile_paged_warp).
  constexpr int kRowStep = 32 / kPitchChunks;
  const bool paged = P::kIndexedKV && (P::kPagesOnly || p.block_table != nullptr);
  static_assert(kBlockN / kRowStep == Cfg::kLaneRows, "the lane rows PagedKV's dispatch assumes");
  const PagedWarpCopy page_copy = paged_warp_copy<kBlockN / kRowStep, P::kPagesOnly>(p, w, kv_copy);
  int pages = 0, next_pages = 0;
  auto load_tile = [&](uint32_t dst, const T* base, int64_t block_stride, int64_t row_stride, int n_block) {
    if (paged)
      load_kv_tile_paged_warp<T, kBlockN, kRowStep>(p, w, dst, base, block_stride, row_stride, n_block * kBlockN,
                                                    kv_copy, offset, page_copy, pages);
    else
      load_kv_tile<T, kBlockN, kRowStep>(dst, base, row_stride, n_block * kBlockN, w.seq.seqlen_k, kv_copy, offset);
  };
  auto load_k = [&](int n_block) { load_tile(sK_addr, k_ptr, p.k_batch_stride, p.k_row_stride, n_block); };
  auto load_v = [&](int n_block) { load_tile(sV_addr, v_ptr, p.v_batch_stride, p.v_row_stride, n_block); };
  // The walk: a warp takes every kWarps-th tile of the CTA's range. The dense instances walk
  // forward, so behind the append kernel the tiles of new keys come last and a warp waits for
  // that kernel just before loading one, having run its cached tiles meanwhile. The paged ones
  // walk from the end, as before: walking forward took the head_dim 64 whole-page instance of
  // 3 warps from 127 to 130-132 registers, and an SM from 5 of its CTAs to 4 (ptxas, CUDA
  // 13.0). So do the fused append instances, whose new keys then lie in their warps' first tiles.
  constexpr bool kForward = !kAppend && !P::kIndexedKV;
  constexpr int kStep = kForward ? kWarps : -kWarps;
  const auto walks = [&](int n_block) { return kForward ? n_block < w.n_end : n_block >= w.n_begin; };
  auto load_pages = [&](int n_block) {
    return walks(n_block) ? lane_pages(p, w, n_block * kBlockN, lane, page_copy) : 0;
  };

  float acc_o[1][kNTilesO][4];
  float row_max[2] = {-INFINITY, -INFINITY}, row_sum[2] = {0.f, 0.f};
#pragma unroll
  for (int j = 0; j < kNTilesO; ++j) acc_o[0][j][0] = acc_o[0][j][1] = acc_o[0][j][2] = acc_o[0][j][3] = 0.f;

  // A fused K/V append (fused_append.cuh; variant instances only): the last seqlen_new keys
  // are new; with rotary tables q is rotated on its way in (loaded into registers first, then
  // the K/V copies issued, then rotated into shared memory).
  const bool appends = kAppend && p.seqlen_new > 0;
  const int first_new_key = w.seq.seqlen_k - p.seqlen_new;
  const bool rotates_q = appends && p.rotary.half > 0;
  // Behind the append kernel a warp waits for it once (wait_for_append): before the first tile it
  // loads that holds new keys (wait_before: the tiles from wait_tile on), or where it must for
  // another reason. wait_tile is INT_MAX once the warp has waited, or where it need not wait.
  int wait_tile = early_kv ? first_new_key / kBlockN : INT_MAX;
  const auto wait_for_append = [&] {
    if (wait_tile != INT_MAX) wait_for_previous_grid();
    wait_tile = INT_MAX;
  };
  const auto wait_before = [&](int n_block) {
    if (n_block >= wait_tile) wait_for_append();
  };

  // Prologue: Q and this warp's first K and V all in flight at once. Behind the append kernel
  // (early_kv) the block table and the lengths are the caller's, and q too unless that kernel
  // rotated it (FwdParams::q_from_append): only q's copy and a first tile of new keys wait.
  // Where q is the append kernel's, or a paged instance's warps walk from the end (their first
  // tiles hold the new keys), this warp's first K and V go first, then the wait, then q; else
  // q first. The K/V copy is inlined at both places: with the q copy at both instead (the
  // paged copy is the longer one), ptxas spilled 12 bytes at head_dim 96, 8 warps.
  const int first = kForward ? w.n_begin + warp : w.n_end - 1 - warp;
  const bool q_last = early_kv && (p.q_from_append || !kForward);
  auto load_first_kv = [&] {
    if (paged) {
      pages = load_pages(first);
      next_pages = load_pages(first + kStep);
    }
    if (walks(first)) {
      wait_before(first);
      load_k(first);
      cp_async_commit();
      load_v(first);
      cp_async_commit();
    }
  };
  if (q_last) {
    load_first_kv();
    wait_for_append();
  }
  RotatedQTile<T, kBlockM, kQThreads / kPitchChunks> q_rotated;
  if (tid < kQThreads && !rotates_q) load_q_tile<T, kBlockM, kQThreads / kPitchChunks>(p, w, sQ_addr, q_copy, offset);
  if constexpr (kAppend)
    if (tid < kQThreads && rotates_q) q_rotated.load(p, w, q_copy, first_new_key);
  cp_async_commit();
  if (!q_last) load_first_kv();
  // This warp's first tiles hold the new keys (below): their units load under the copies.
  const bool patches = appends && walks(first) && (first + 1) * kBlockN > first_new_key;
  NewKeyUnits new_key{};
  if (patches && kv_copy.chunk_ok) {
    const int i = new_keys_in_tile(p, first * kBlockN, kBlockN, first_new_key).lo + kv_copy.row0;
    if (i < p.seqlen_new) new_key = load_new_key<T>(p, w, i, kv_copy.chunk * 8, first_new_key);
  }
  if constexpr (kAppend)
    if (rotates_q && tid < kQThreads) q_rotated.store(p, reinterpret_cast<unsigned char*>(sQ), q_copy, offset);
  // Q and K landed, V may still be in flight; or all of them, where Q's group is the last.
  if (walks(first) && !q_last)
    cp_async_wait<1>();
  else
    cp_async_wait<0>();
  __syncthreads();  // every thread's share of Q
  // The new keys lie in the sequence's last two tiles at most (the C API fuses seqlen_new <=
  // kBlockN), which are first tiles of their splits' warps: a warp patches them into its first
  // K and V tiles here, once both landed, and the loop below (and its registers) knows nothing
  // of the append. One CTA per KV head stores them into the cache.
  if (patches) {
    cp_async_wait<0>();
    __syncwarp();
    const bool stores = p.pack_gqa || w.cta_head % p.group == 0;
    patch_new_keys<T, kBlockN, 32 / kPitchChunks>(p, w, reinterpret_cast<unsigned char*>(sK),
                                                  reinterpret_cast<unsigned char*>(sV), first * kBlockN, first_new_key,
                                                  stores, kv_copy, offset, new_key);
    __syncwarp();
  }

  const ScoreRows rows = score_rows<P>(p, w, lane / 4);
  const auto q_frag = q_lane<kPitch>(sQ_addr, 0, lane);
  const auto k_frag = k_lane<kPitch>(sK_addr, lane);
  const auto v_frag = v_lane<kPitch>(sV_addr, lane);
  for (int n_block = first; walks(n_block); n_block += kStep) {
    if (n_block != first) {
      cp_async_wait<0>();
      __syncwarp();  // K[n] landed for the whole warp; its lanes are done with the previous V
      load_v(n_block);
      cp_async_commit();
    }
    float acc_s[1][kBlockN / 8][4];
    qk_scores<T, 1, kBlockN, kHeadDim>(acc_s, q_frag, k_frag);
    float bias[2];
    scores_to_logits<P>(acc_s[0], p, w, tile_facts<P>(p, w, n_block * kBlockN, kBlockN), rows, lane / 4, lane, bias);

    cp_async_wait<0>();
    __syncwarp();                   // V[n] landed; the warp is done reading K[n]
    if (paged) pages = next_pages;  // the next tile's, for its K now and its V next turn
    if (walks(n_block + kStep)) {
      if constexpr (kForward) wait_before(n_block + kStep);  // the others waited in the prologue
      load_k(n_block + kStep);                               // overlaps the softmax and P V
      cp_async_commit();
    }
    if (paged) next_pages = load_pages(n_block + 2 * kStep);  // lands during this tile's math
    online_softmax<P::kAlibi>(acc_s[0], acc_o[0], row_max, row_sum, p.scale_log2, bias);
    pv_accumulate<T, 1, kBlockN, kHeadDim>(acc_o, acc_s, v_frag);
  }

  // ---- merge the warps' partials (a warp that saw no key has max -inf: weight 0) ----
  // Each warp leaves its O unnormalised, with its rows' max (natural log) and sum; every row's
  // merge factors (the warps' weights over the merged sum, the sink joined where this is the
  // row's last merge) are computed once, by one thread per row, and the merge of each column
  // quad is then a weighted sum. The merge is the tail of every decode CTA, run once no load is
  // left to hide it, so each of its instructions adds to the step. Against normalising each
  // warp's rows and weighing every quad again (231 -> 127 instructions per pass of the loop
  // below; 160 -> 135 registers, set by this tail): one sequence over 4k keys 10.6 -> 10.2 us,
  // batch 4 over 4k 22.9-23.0 -> 22.5, pages of 16 over 4k keys 9.9 -> 9.3 (H200, 2026-12-03,
  // docs/bench-history/2026-12-03.md).
  constexpr int kPartialPitch = Cfg::kPartialPitch;
  float* part_o = reinterpret_cast<float*>(smem_raw);           // [kWarps][kBlockM][kPartialPitch]
  float* part_max = part_o + kWarps * kBlockM * kPartialPitch;  // [kWarps][kBlockM]
  float* part_sum = part_max + kWarps * kBlockM;                // [kWarps][kBlockM]
  float* factors = part_sum + kWarps * kBlockM;                 // [kWarps][kBlockM]
  float* merged_lse_rows = factors + kWarps * kBlockM;          // [kBlockM]
  __syncthreads();  // every warp is done with Q and its K/V tiles: the partials go there
#pragma unroll
  for (int hi = 0; hi < 2; ++hi) {
    const int row = lane / 4 + 8 * hi;
    float* dst = part_o + (warp * kBlockM + row) * kPartialPitch + (lane % 4) * 2;
#pragma unroll
    for (int j = 0; j < kNTilesO; ++j)
      *reinterpret_cast<float2*>(dst + j * 8) = make_float2(acc_o[0][j][hi * 2], acc_o[0][j][hi * 2 + 1]);
    const float l = quad_sum(row_sum[hi]);
    if (lane % 4 == 0) {
      part_max[warp * kBlockM + row] = row_max[hi] * p.lse_scale;  // -inf where no key
      part_sum[warp * kBlockM + row] = l;
    }
  }
  __syncthreads();
  if (tid < kBlockM) {  // row tid's factors: O = sum_s exp(m_s - mx) O_s / sum_s exp(m_s - mx) l_s
    const int row = tid;
    float mx = -INFINITY;
#pragma unroll
    for (int s = 0; s < kWarps; ++s) mx = fmaxf(mx, part_max[s * kBlockM + row]);
    float weight[kWarps], sum = 0.f;
#pragma unroll
    for (int s = 0; s < kWarps; ++s) {
      weight[s] = merge_weight(part_max[s * kBlockM + row], mx);
      sum += weight[s] * part_sum[s * kBlockM + row];
    }
    float keep = 1.f;  // a sink joins only the row's last merge (no splits after this one)
    if (P::kSinks && p.sinks != nullptr && p.num_splits == 1 && w.m0 + row < w.rows)
      keep = join_sink(p.sinks[row_target(p, w, row).head], mx, sum);
    const float inv = sum != 0.f ? keep / sum : 0.f;  // a NaN sum stays NaN
#pragma unroll
    for (int s = 0; s < kWarps; ++s) factors[s * kBlockM + row] = weight[s] * inv;
    merged_lse_rows[row] = merged_lse(mx, sum);
  }
  __syncthreads();

  // Thread i merges column quads i, i + kNThreads, ... of the tile, from every warp in order.
  constexpr int kQuads = kHeadDim / 4;
  for (int i = tid; i < kBlockM * kQuads; i += kNThreads) {
    const int row = i / kQuads, c = i % kQuads;
    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
    for (int s = 0; s < kWarps; ++s) {
      const float f = factors[s * kBlockM + row];
      if (f == 0.f) continue;  // a warp that saw no key (or an empty row)
      const float4 x = *reinterpret_cast<const float4*>(part_o + (s * kBlockM + row) * kPartialPitch + c * 4);
      acc.x = fmaf(f, x.x, acc.x), acc.y = fmaf(f, x.y, acc.y);
      acc.z = fmaf(f, x.z, acc.z), acc.w = fmaf(f, x.w, acc.w);
    }
    const float row_lse = merged_lse_rows[row];

    if (p.cluster_combine) {  // into warp 0's slot: only this thread reads or writes (row, c)
      *reinterpret_cast<float4*>(part_o + row * kPartialPitch + c * 4) = acc;
      continue;  // merged_lse_rows holds the row's LSE
    }
    if (w.m0 + row >= w.rows || c * 4 >= p.head_dim) continue;
    const RowTarget t = row_target(p, w, row);
    const int64_t lse_row = lse_index(p, w, t);
    if (p.num_splits > 1) {  // this split's partial, for the combine kernel
      const int64_t idx = blockIdx.y * p.num_rows + lse_row;
      *reinterpret_cast<float4*>(p.partial_o + idx * p.head_dim + c * 4) = acc;
      if (c == 0) p.partial_lse[idx] = row_lse;
      continue;
    }
    T* dst = static_cast<T*>(p.out) + w.b * p.o_batch_stride + (w.seq.q_start + t.q_pos) * p.o_row_stride +
             t.head * p.o_head_stride + c * 4;
    *reinterpret_cast<uint2*>(dst) = make_uint2(pack2<T>(acc.x, acc.y), pack2<T>(acc.z, acc.w));
    if (c == 0 && p.lse != nullptr) p.lse[lse_row] = row_lse;
  }

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if (p.cluster_combine)
    combine_splits_in_cluster<T, kHeadDim, kPartialPitch>(p, w, smem_addr(part_o), smem_addr(merged_lse_rows), warp,
                                                          kWarps, lane);
#endif
  // A warp whose tiles held no new key has not waited: it does so before its grid completes,
  // so that this grid's completion still implies the append kernel's for the kernels after it.
  if constexpr (kForward) wait_for_append();
}

}  // namespace forge_flash
