// Hopper (sm_90a) forward kernel, warp-specialised with pingpong consumers.
//
//   CTA = a producer warpgroup and kConsumerWGs = 2 consumer warpgroups (3 in the TMA-only
//   head_dim 64 instance), 64 query rows each; K/V tiles of kBlockN keys in a ring of kStages.
//   warpgroup 0, producer:   Q, then K/V tiles last to first into the ring (TMA from one
//                            thread, or cp.async where TMA cannot address the call);
//                            a stage's `full` mbarrier completes when its bytes land,
//                            its `empty` mbarrier when every consumer is done with it
//                            (Q's space likewise, for the persistent launch's next tile;
//                            at head_dim 64 and 96 it has two Q buffers: Sm90Tiles::kQBuffers).
//   warpgroups 1.., consumers, one program per work tile:
//     S = Q K[0]^T; softmax                                   (persistent below head_dim 256:
//                                                             the last tile's stores beside it)
//     for each next tile i:
//       my turn:  issue S = Q K[i]^T, issue O += P V[i-1]     (the tensor cores; O rescaled
//                                                             between them: kRescaleInTurn;
//                                                             BoundedSoftcap ends the turn
//                                                             once S has landed: kTurnAfterS)
//       wait S;   mask, softmax -> P                          (the source's order; see below)
//       wait O;   release tile i-1; rescale O                 (the other instances; above
//                                                             head_dim 128 only if a max rose)
//     my turn:    O += P V[last]; epilogue                  (persistent below head_dim 256:
//                                                             its parts that read no O, and
//                                                             the next CtaWork, beside P V)
//   Packed sequences (varlen, kPackedSeqs): while S = Q K[0]^T runs, the consumers zero the rows
//   of V[0] past the sequence's keys, which the map's box read from the next sequence. The
//   persistent twin's producer draws each next work tile from a counter as it gets to it and
//   posts it to the consumers through shared memory (kDrawsTiles): short sequences' tiles cost
//   little, so a static stride would leave CTAs idle. The paged twin (PagedKV: K/V boxes at a
//   block table's pages, its producer a warp) has a persistent instance that draws them too.
//
// In the SASS of every instance ptxas moves the "wait O" up to before the softmax's
// exponentials (and interleaves P's conversion with them), so a consumer's softmax does not run
// beside its own O += P V; it runs beside the other consumers' matrix products. Keeping the
// softmax before that wait (a one-trip loop around it, which ptxas does not hoist the wait
// into) measured 6% slower over the prefill rows (H200, 2026-12-04, docs/bench-history/2026-12-04.md).
//
// Why: at head_dim 64 the exponentials of one tile cost about as much as its two matrix
// products, so a kernel whose warpgroups compute in lockstep leaves the tensor cores idle
// during every softmax (this kernel's predecessor did: 20-30% slower on the H100,
// docs/benchmarks.md). Here the consumers take turns ("pingpong", in a ring ordered by one
// named barrier each): one issues its matrix products while the others run their softmax,
// so the tensor cores see one consumer's work during another's exponentials. The
// producer warpgroup keeps the copies (and their address arithmetic) off the consumers'
// instruction stream, and hands its registers to them (setmaxnreg).
//
// With 2 stages (head_dim 192, 256, whose tiles fill shared memory) K and V of a stage have
// separate barriers, so that K[i] is refilled once S = Q K[i]^T has run (Sm90Config::kSplitKV).
//
// Tiles use the 128-byte-swizzle layout of sm90/wgmma.cuh (64-byte at head_dim 96), which is
// also TMA's swizzled box layout, one column block per box. cp.async writes are generic-proxy
// writes (TMA's are async-proxy, like wgmma's reads); a consumer waits on the stage's `full`
// barrier and, for a tile cp.async wrote, then fences the proxies before wgmma reads it.
#pragma once

#include "../fwd_common.cuh"
#include "../grid_dependency.cuh"
#include "../grouped_pages.h"
#include "../paged_boxes.h"
#include "../trace.cuh"
#include "pipeline.cuh"
#include "tile_config.cuh"
#include "wgmma.cuh"

namespace forge_flash {

// P: the kernel's policies (policies.h: K/V addressing, mask, score transform, sinks).
// kPackedSeqs: the TMA-only plain launch or the persistent launch over varlen calls, always
// loading through TMA (tma_maps.cu, set_tma_maps: the maps then cover the packed tensors, one
// "batch" of total_q / total_k rows, and a sequence's rows start at its q_start / k_start).
template <typename T, typename Cfg, class P, bool kPackedSeqs = false>
__global__ void __launch_bounds__(Cfg::kNThreads, 1)
    fwd_kernel_sm90(const __grid_constant__ FwdParams p, const int num_m_blocks) {
#ifndef FORGE_FLASH_SM90A_ENABLED
  __trap();  // compiled for other targets only so that the kernel table links; never launched there
#else
  wait_for_previous_grid();  // a programmatic launch (after the K/V append) starts early
  FORGE_FLASH_TRACE_CODE(if (threadIdx.x == 0) trace_cta_start(p);)
  constexpr int kBlockM = Cfg::kBlockM, kBlockN = Cfg::kBlockN, kHeadDim = Cfg::kHeadDim;
  constexpr int kStages = Cfg::kStages;
  constexpr int kNTilesS = kBlockN / 8, kNTilesO = kHeadDim / 8;
  constexpr int kChunks = Cfg::kChunks, kSwizzle = Cfg::kSwizzle;
  constexpr int kConsumers = Cfg::kConsumerThreads;
  // How wgmma descriptors are built (see issue_qk): by adds at head_dim 96 and above 128,
  // except in the persistent variant kernels (40 bytes of spills at head_dim 192), and in the
  // AlibiOnly instance, where they were by adds when it was measured (2026-12-04: that instance
  // then held ALiBi's bias as one more k16 slice of Q K^T, whose registers spilled Q's
  // descriptors otherwise; the multiply-add per score that replaced the slice was measured so).
  constexpr bool kDescByAdd = (kHeadDim > 128 || kHeadDim == 96 || P::kAlibiOnly) && !(Cfg::kPersistent && P::kAny);
  // The K/V tiles' layout (wgmma.cuh): grouped in the paged twin, whose boxes each bring whole
  // 8-row groups of every column block (one TMA load a page's box, not one per column block:
  // tma_maps.cu), blocked elsewhere. With one column block a row (head_dim 64) the two layouts
  // hold the same bytes: the twin keeps the blocked one there, and the loads below one box each,
  // as before the grouped tiles (their descriptors and 5D loads ran 0-2% slower at 64 on the
  // H100; docs/benchmarks.md, session 68).
  constexpr bool kPagedTma = P::kIndexedKV && kPackedSeqs;
  using KvLayout = std::conditional_t<(kPagedTma && kHeadDim * 2 / kSwizzle > 1), sm90::GroupedTile<kHeadDim, kSwizzle>,
                                      sm90::BlockedTile<kBlockN, kSwizzle> >;
  // Named barriers: "consumer c may issue" (kBarTurn0 + c), all consumers (epilogue).
  constexpr int kWGs = Cfg::kConsumerWGs, kBarTurn0 = 1, kBarConsumers = kBarTurn0 + kWGs;

  extern __shared__ unsigned char smem_raw[];
  const uint32_t smem_base = (smem_addr(smem_raw) + 1023u) & ~1023u;
  unsigned char* smem = smem_raw + (smem_base - smem_addr(smem_raw));
  constexpr int kQBuffers = Cfg::kQBuffers;
  auto sQ = [&](int buffer) { return smem_base + buffer * Cfg::kQBytes; };
  auto sK = [&](int stage) { return sQ(kQBuffers) + stage * 2 * Cfg::kKVBytes; };
  auto sV = [&](int stage) { return sK(stage) + Cfg::kKVBytes; };
  // Per Q buffer: "Q landed" / "Q done with". Per stage: "K landed" / "V done with"; with
  // kSplitKV also "V landed" / "K done with", else those are the same two barriers (the
  // stage's K and V land and free together).
  const uint32_t ones = smem_base + Cfg::kTileBytes;  // kSumByMma: V's extra columns
  const uint32_t bars = ones + Cfg::kOnesBytes, stage_bars = bars + 16 * kQBuffers;
  auto bar_q_full = [&](int buffer) { return bars + 16 * buffer; };
  auto bar_q_empty = [&](int buffer) { return bars + 16 * buffer + 8; };
  auto bar_k_full = [&](int stage) { return stage_bars + 8 * stage; };
  auto bar_v_empty = [&](int stage) { return stage_bars + 8 * (kStages + stage); };
  auto bar_v_full = [&](int stage) {
    return Cfg::kSplitKV ? stage_bars + 8 * (2 * kStages + stage) : bar_k_full(stage);
  };
  auto bar_k_empty = [&](int stage) {
    return Cfg::kSplitKV ? stage_bars + 8 * (3 * kStages + stage) : bar_v_empty(stage);
  };
  // kDrawsTiles (the persistent twin over packed sequences): the producer thread draws each next
  // work tile from a counter in global memory (p.tile_counter) as it gets to it, and posts its
  // number to the consumers through a ring of two slots after the barriers (kTileQueueBytes):
  // per slot a "posted" mbarrier (the producer's arrival) and a "read" one (each consumer warp's).
  constexpr bool kDrawsTiles = kPackedSeqs && Cfg::kPersistent;
  const uint32_t queue = bars + Cfg::kBarrierBytes;
  auto bar_tile_posted = [&](int slot) { return queue + 8 * slot; };
  auto bar_tile_read = [&](int slot) { return queue + 16 + 8 * slot; };
  volatile int* tile_slots = reinterpret_cast<volatile int*>(smem + (queue + 32 - smem_base));

  // Work tiles. Plain launch: one per CTA. Persistent: a CTA per SM takes tiles blockIdx.x,
  // + gridDim.x, ...; its producer loads the next tile's Q and K/V while the consumers finish
  // the current one, which hides each tile's start-up when tiles are short (few K/V tiles).
  const int num_tiles = num_m_blocks * p.batch * (p.pack_gqa ? p.num_heads_k : p.num_heads);
  auto for_each_work_tile = [&](auto&& body) {
    if constexpr (kDrawsTiles) {
      // A varlen batch's work tiles cost what their sequence's keys do (nothing past its end), so
      // a static stride leaves the CTAs that drew short sequences idle. Here a CTA's first tile
      // is blockIdx.x, each next one the counter's next; tiles past their sequence's end are
      // skipped (the consumers would compute and store nothing for them); -1 ends the walk.
      // Run by the producer's one TMA thread, or (the paged twin's persistent instance,
      // kPagedTma) by its warp: lane 0 draws and posts, and the lanes take the number from it
      // (each issues a box of the tile).
      const bool drawer = !kPagedTma || threadIdx.x == 0;
      int posts = 0;
      auto post = [&](int tile) {
        if (drawer) {
          const int slot = posts & 1;
          if (posts >= 2) sm90::mbar_wait(bar_tile_read(slot), ((posts >> 1) - 1) & 1);
          tile_slots[slot] = tile;
          sm90::mbar_arrive(bar_tile_posted(slot));  // release: the slot's store before the arrival
        }
        ++posts;
      };
      auto draw = [&] {
        int tile = drawer ? static_cast<int>(gridDim.x) + atomicAdd(p.tile_counter, 1) : 0;
        if constexpr (kPagedTma) tile = __shfl_sync(0xffffffffu, tile, 0);
        return tile;
      };
      for (int tile = blockIdx.x; tile < num_tiles; tile = draw()) {
        const CtaWork w = cta_work<P, Cfg::kTmaOnly, Cfg::kPersistent>(p, num_m_blocks, kBlockM, kBlockN, tile);
        if (w.m0 >= w.rows) continue;
        post(tile);
        body(w);
      }
      post(-1);
    } else if constexpr (Cfg::kPersistent) {
      for (int tile = blockIdx.x; tile < num_tiles; tile += gridDim.x)
        body(cta_work<P, Cfg::kTmaOnly, Cfg::kPersistent>(p, num_m_blocks, kBlockM, kBlockN, tile));
    } else {
      body(cta_work<P, Cfg::kTmaOnly>(p, num_m_blocks, kBlockM, kBlockN, blockIdx.x));
    }
  };
  // K/V tiles a work tile walks: n_end - 1 down to n_begin (masked tiles first). Counted over
  // all of a CTA's work tiles, the i-th K/V tile sits in stage i % kStages, barrier phase
  // i / kStages; the j-th Q tile in buffer j % kQBuffers, barrier phase j / kQBuffers.
  auto kv_tiles = [](const CtaWork& w) { return w.m0 < w.rows ? max(w.n_end - w.n_begin, 0) : 0; };
  const int tid = threadIdx.x;
  // TMA: one producer thread loads each tile (plan_fwd sets p.tma; the TMA-only instance and the
  // packed twins run only where it did).
  const bool tma = Cfg::kTmaOnly || kPackedSeqs || p.tma;
  if (tid == 0) {
    if (tma) {  // the maps into the SM's descriptor cache while the barriers are set up
      sm90::prefetch_tma_map(&p.tma_q);
      sm90::prefetch_tma_map(&p.tma_k);
      sm90::prefetch_tma_map(&p.tma_v);
    }
    const int copiers = tma ? 1 : Cfg::kCopyThreads;  // arrivals that fill a stage
    for (int b = 0; b < kQBuffers; ++b) {
      sm90::mbar_init(bar_q_full(b), copiers);
      sm90::mbar_init(bar_q_empty(b), kConsumers / 32);  // one arrival per consumer warp
    }
    for (int s = 0; s < kStages; ++s) {
      sm90::mbar_init(bar_k_full(s), copiers);
      sm90::mbar_init(bar_v_empty(s), kConsumers / 32);
      if (Cfg::kSplitKV) {
        sm90::mbar_init(bar_v_full(s), copiers);
        sm90::mbar_init(bar_k_empty(s), kConsumers / 32);
      }
    }
    if constexpr (kDrawsTiles) {
      for (int slot = 0; slot < 2; ++slot) {
        sm90::mbar_init(bar_tile_posted(slot), 1);
        sm90::mbar_init(bar_tile_read(slot), kConsumers / 32);  // one arrival per consumer warp
      }
    }
    sm90::mbar_init_fence();
  }
  if constexpr (Cfg::kSumByMma) {  // read by the consumers' wgmma: through the async proxy
    sm90::fill_ones<T>(smem + Cfg::kTileBytes, Cfg::kOnesBytes, tid, Cfg::kNThreads);
    sm90::fence_proxy_async_smem();
  }
  __syncthreads();

  // ================================ producer ================================
  if (tid < Cfg::kProducerThreads) {
    sm90::shrink_registers<Cfg::kProducerRegs>();
    // TMA (FwdParams::tma): one thread loads each tile as whole column blocks (kSwizzle bytes
    // of every row: the box TMA swizzles into the layout wgmma reads); rows past the tensor's
    // end arrive as zeros, and the `full` barriers complete on the bytes, so one arrival (with
    // the byte count) fills a stage. Without the copies' address arithmetic and 16-byte
    // instructions (32 per thread per K/V tile at head_dim 128) in the producer warps, the
    // consumers get the SMs' issue slots: 3-10% more TFLOP/s at head_dim 64-128 from 2k tokens
    // and up to 22-35% causal at head_dim 256 on the H200 (docs/bench-history/2026-12-01.md).
    // Otherwise each of kCopyThreads threads copies a 16-byte chunk column of the tile.
    // The stage program, for either way of loading: load_q(w, buffer) fills the Q buffer's
    // barrier, load_k and load_v (w, stage, n0) fill the stage's (with kSplitKV, K and V have
    // barriers of their own).
    // K ahead of V (kKAhead) where K and V have barriers of their own (kSplitKV), except in the
    // paged twin, whose V load reuses the block ids its K load looked up.
    constexpr bool kKAhead = Cfg::kSplitKV && !kPagedTma;
    auto produce = [&](auto&& load_q, auto&& load_k, auto&& load_v) {
      int it = 0, q_loads = 0;
      FORGE_FLASH_TRACE_CODE(int visited = 0;)  // trace.cuh: the work tiles' index in this CTA
      for_each_work_tile([&](const CtaWork& w) {
        FORGE_FLASH_TRACE_CODE(const int traced = visited++;)
        const int n_tiles = kv_tiles(w);
        if (n_tiles == 0) return;
        const int buffer = q_loads % kQBuffers;
        if (q_loads >= kQBuffers) sm90::mbar_wait(bar_q_empty(buffer), (q_loads / kQBuffers - 1) & 1);
        FORGE_FLASH_TRACE_CODE(if (tid == 0) trace_stamp(p, traced, kTraceQIssued);)
        load_q(w, buffer);
        ++q_loads;
        if constexpr (kKAhead) {
          // K[i + 1] before V[i]: the consumers' turn that reads V[i] (O += P V[i]) also reads
          // K[i + 1] (S = Q K[i + 1]^T), and K[i + 1]'s stage is free once S = Q K[i - 1]^T has
          // run, a turn before V[i]'s (after O += P V[i - 2]). In K, V order K[i + 1] went out
          // only after V[i], whose stage frees last: a turn later than it could. Level to +3%
          // on the long prefill rows (H100, docs/benchmarks.md, session 79).
          auto k_tile = [&](int i) {  // K/V tile i of this work tile: stage (it + i) % kStages
            const int at = it + i, stage = at % kStages;
            if (at >= kStages) sm90::mbar_wait(bar_k_empty(stage), (at / kStages - 1) & 1);
            FORGE_FLASH_TRACE_CODE(if (tid == 0 && i == 0) trace_stamp(p, traced, kTraceK0Issued);)
            load_k(w, stage, (w.n_end - 1 - i) * kBlockN + w.key0);
          };
          auto v_tile = [&](int i) {
            const int at = it + i, stage = at % kStages;
            if (at >= kStages) sm90::mbar_wait(bar_v_empty(stage), (at / kStages - 1) & 1);
            load_v(w, stage, (w.n_end - 1 - i) * kBlockN + w.key0);
          };
          k_tile(0);
          for (int i = 0; i < n_tiles; ++i) {
            if (i + 1 < n_tiles) k_tile(i + 1);
            v_tile(i);
          }
          it += n_tiles;
        } else {
          for (int i = 0; i < n_tiles; ++i, ++it) {
            const int stage = it % kStages, n0 = (w.n_end - 1 - i) * kBlockN + w.key0;
            if (it >= kStages) sm90::mbar_wait(bar_k_empty(stage), (it / kStages - 1) & 1);
            FORGE_FLASH_TRACE_CODE(if (tid == 0 && i == 0) trace_stamp(p, traced, kTraceK0Issued);)
            load_k(w, stage, n0);
            if (Cfg::kSplitKV && it >= kStages) sm90::mbar_wait(bar_v_empty(stage), (it / kStages - 1) & 1);
            load_v(w, stage, n0);
          }
        }
      });
    };
    if (tma) {
      // The paged twin's producer is a warp (kPagedTma): its lanes look up a K/V tile's block
      // ids at once, one round trip to the block table where one thread would make one per
      // page (pages of 16: eight per tile, for K and again for V), and each lane issues its
      // page's boxes. Elsewhere one thread issues every load.
      static_assert(!kPagedTma || kBlockN <= 32 * 8, "a lane a box: pages of 8+ keys (set_tma_maps)");
      if (kPagedTma ? tid >= 32 : tid != 0) return;
      const bool leader = !kPagedTma || tid == 0;  // arms the barriers, loads Q
      constexpr int kBlocks = kHeadDim * 2 / kSwizzle;
      auto tile = [&](const TmaDescriptor& map, uint32_t dst, int rows, int head, int row, int b, uint32_t bar) {
#pragma unroll
        for (int c = 0; c < kBlocks; ++c)
          sm90::tma_load_4d(dst + c * rows * kSwizzle, &map, bar, c * (kSwizzle / 2), head, row, b);
      };
      // The maps' (row, batch) of a work tile's first Q row and of its key n0 (kPackedSeqs: rows
      // of the packed tensors, whose row counts are ints).
      const auto q_row = [](const CtaWork& w) { return w.m0 + (kPackedSeqs ? static_cast<int>(w.seq.q_start) : 0); };
      const auto k_row = [](const CtaWork& w, int n0) {
        return n0 + (kPackedSeqs ? static_cast<int>(w.seq.k_start) : 0);
      };
      const auto q_batch = [](const CtaWork& w) { return kPackedSeqs ? 0 : w.b; };
      const auto kv_batch = [](const CtaWork& w) { return kPackedSeqs ? 0 : w.kv_b; };
      // A paged cache (the PagedKV twin: grouped maps over the cache, tma_maps.cu, with boxes of
      // paged_box_rows(page_size, kBlockN) rows, a power of two that divides both the page and
      // the tile (paged_boxes.h), so a box never crosses a page): a K/V tile is kBlockN / box
      // boxes, lane i's the i-th, at its page's block id from the sequence's row of the block
      // table (looked up for K, kept for V). A box past the sequence's last key reads no table
      // entry (the table may end there): it asks for block num_blocks, past the map's end,
      // which TMA fills with zeros, so every box lands and the stage's byte count holds. Rows of
      // the last page past the last key are real cache rows: their scores are masked, and the
      // consumers zero those V rows (zero_v_rows) as for packed sequences.
      int page_block = 0;  // kPagedTma: this lane's box's block id in the tile being loaded
      auto kv_tile = [&](const TmaDescriptor& map, uint32_t dst, const CtaWork& w, int n0, uint32_t bar, bool look_up) {
        if constexpr (kPagedTma) {
          static_assert(P::kPagesOnly && Cfg::kTmaOnly, "TMA reads whole pages of a block table");
          const int box = paged_box_rows(p.page_size, kBlockN), r = tid * box, key = n0 + r;
          if (look_up && r < kBlockN)
            page_block = key < w.seq.seqlen_k
                             ? p.block_table[static_cast<int64_t>(w.b) * p.block_table_stride + (key >> p.page_shift)]
                             : p.num_blocks;
          __syncwarp();  // the leader's expect_tx before the lanes' bytes
          // A box: the page's rows [key, key + box) of every column block, as box / 8 whole
          // 8-row groups of the grouped tile. Through the grouped map one load (its dimensions:
          // a column block's columns, 8 rows, the column blocks of every head, the page's 8-row
          // groups, the blocks); else one a column block of an 8-row group. Tiles of one column
          // block (head_dim 64, blocked: KvLayout) take the page's box in one load through a
          // four-dimensional map.
          if (r < kBlockN) {
            const int row = key & (p.page_size - 1);
            if constexpr (kBlocks == 1) {
              sm90::tma_load_4d(dst + r * kSwizzle, &map, bar, 0, w.kv_head, row, page_block);
            } else if (p.tma_grouped_pages) {
              const GroupedBoxLoad g = grouped_box_load(w.kv_head, kBlocks, row, r, KvLayout::kGroupStride);
              sm90::tma_load_5d(dst + g.smem_offset, &map, bar, g.coords[0], g.coords[1], g.coords[2], g.coords[3],
                                page_block);
            } else {
#pragma unroll 1
              for (int g = 0; g < box / 8; ++g)
#pragma unroll
                for (int c = 0; c < kBlocks; ++c)
                  sm90::tma_load_4d(dst + (r / 8 + g) * KvLayout::kGroupStride + c * KvLayout::kBlockStride, &map, bar,
                                    c * (kSwizzle / 2), w.kv_head, row + 8 * g, page_block);
            }
          }
        } else {
          tile(map, dst, kBlockN, w.kv_head, k_row(w, n0), kv_batch(w), bar);
        }
      };
      produce(
          [&](const CtaWork& w, int buffer) {
            if (!leader) return;
            sm90::mbar_arrive_expect_tx(bar_q_full(buffer), Cfg::kQBytes);
            tile(p.tma_q, sQ(buffer), kBlockM, w.cta_head, q_row(w), q_batch(w), bar_q_full(buffer));
          },
          [&](const CtaWork& w, int stage, int n0) {  // K, and V's bytes too where they share the barrier
            if (leader)
              sm90::mbar_arrive_expect_tx(bar_k_full(stage), Cfg::kSplitKV ? Cfg::kKVBytes : 2 * Cfg::kKVBytes);
            kv_tile(p.tma_k, sK(stage), w, n0, bar_k_full(stage), true);
          },
          [&](const CtaWork& w, int stage, int n0) {
            if (Cfg::kSplitKV && leader) sm90::mbar_arrive_expect_tx(bar_v_full(stage), Cfg::kKVBytes);
            kv_tile(p.tma_v, sV(stage), w, n0, bar_v_full(stage), false);
          });
      return;
    }
    if constexpr (Cfg::kTmaOnly) return;
    if (tid >= Cfg::kCopyThreads) return;
    constexpr int kRowStep = Cfg::kCopyRowStep;
    TileCopyLane copy{tid / kChunks, tid % kChunks, !Cfg::kPadsHeadDim || tid % kChunks < p.head_dim / 8};
    const auto q_off = [](int row, int chunk) { return sm90::tile_offset(kBlockM, row, chunk, kSwizzle); };
    const auto kv_off = [](int row, int chunk) { return sm90::tile_offset(kBlockN, row, chunk, kSwizzle); };
    const T *k_ptr = nullptr, *v_ptr = nullptr;  // the work tile's first K and V rows
    produce(
        [&](const CtaWork& w, int buffer) {
          // Above head_dim 128 the copy loops are long (28-32 rows per thread) and the compiler
          // would keep each row's address terms live across the work-tile loop (spills at 56
          // registers); an opaque copy lane makes it recompute them per tile.
          if constexpr (Cfg::kPersistent && kHeadDim > 128) asm volatile("" : "+r"(copy.row0), "+r"(copy.chunk));
          load_q_tile<T, kBlockM, kRowStep>(p, w, sQ(buffer), copy, q_off);
          sm90::mbar_arrive_after_cp_async(bar_q_full(buffer));
          k_ptr = k_base<T, P>(p, w);
          v_ptr = v_base<T, P>(p, w);
        },
        [&](const CtaWork& w, int stage, int n0) {
          load_kv<T, kBlockN, kRowStep, P>(p, w, sK(stage), k_ptr, p.k_batch_stride, p.k_row_stride, n0, copy, kv_off);
          if (Cfg::kSplitKV) sm90::mbar_arrive_after_cp_async(bar_k_full(stage));
        },
        [&](const CtaWork& w, int stage, int n0) {
          load_kv<T, kBlockN, kRowStep, P>(p, w, sV(stage), v_ptr, p.v_batch_stride, p.v_row_stride, n0, copy, kv_off);
          sm90::mbar_arrive_after_cp_async(bar_v_full(stage));
        });
    asm volatile("cp.async.wait_all;\n" ::: "memory");
    return;
  }

  // ================================ consumers ================================
  sm90::grow_registers<Cfg::kConsumerRegs>();
  const int ctid = tid - Cfg::kProducerThreads;  // 0..255
  // The consumer index, broadcast from lane 0 so that ptxas knows it is the same in every lane of
  // a warp: the addresses built from it (this consumer's Q rows, its P tile) and the wgmma
  // descriptors built from those then live in uniform registers. From `ctid / 128` ptxas built
  // them in ordinary registers and moved each to a uniform one before every wgmma (R2UR with its
  // shifts and masks): the head_dim 128 persistent instance's K/V loop 705 -> 658 SASS
  // instructions (48 R2UR fewer), the head_dim 96 non-causal one 688 -> 653, the whole persistent
  // kernel 6,360 -> 5,008 at 128. H100, session 73 (docs/benchmarks.md): short rows (the
  // persistent kernel, 512-1k tokens) +1-8%, long rows level to +3%.
  const int consumer = __shfl_sync(0xffffffffu, ctid / 128, 0), lane = tid % 32;
  const int tile_row = (ctid / 32) * 16 + lane / 4;     // this thread's first row (and +8)
  uint32_t sQ_rows = sQ(0) + consumer * 64 * kSwizzle;  // this consumer's Q rows in the work tile's buffer

  // O, and with kSumByMma one more n8 tile: the row sums of P, rescaled with O (its 4 values are
  // the row sums of this thread's two rows, each twice).
  constexpr int kNTilesAcc = kNTilesO + (Cfg::kSumByMma ? 1 : 0);
  float acc_o[kNTilesAcc][4];
  float row_max[2], row_sum[2];
  // wgmma takes accumulators as flat register arrays; same registers, same order.
  float (&o_flat)[kNTilesAcc * 4] = *reinterpret_cast<float (*)[kNTilesAcc * 4]>(&acc_o[0][0]);
  float (&o_tiles)[kNTilesO][4] = *reinterpret_cast<float (*)[kNTilesO][4]>(&acc_o[0][0]);
  float acc_s[kNTilesS][4];
  float (&s_flat)[kNTilesS * 4] = *reinterpret_cast<float (*)[kNTilesS * 4]>(&acc_s[0][0]);
  // P of the previous tile, the A operand of O += P V: in registers, or (Cfg::kPFromSmem) in
  // this consumer's P tile after the K/V ring, which store_p writes and issue_pv reads.
  constexpr bool kPFromSmem = Cfg::kPFromSmem;
  uint32_t p_frag[kPFromSmem ? 1 : kBlockN / 16][4];
  uint32_t (&p_flat)[kPFromSmem ? 4 : kBlockN / 4] =
      *reinterpret_cast<uint32_t (*)[kPFromSmem ? 4 : kBlockN / 4]>(&p_frag[0][0]);
  const uint32_t sP = smem_base + Cfg::kRingBytes + consumer * Cfg::kPBytes;
  const int p_lane_row = ((ctid / 32) % 4) * 16 + lane % 8 + 8 * ((lane / 8) % 2);
  // P of the tile just computed into its A operand. Through shared memory, every thread's writes
  // reach wgmma's async proxy (fence), and the next turn's barrier, whose bar.sync holds all 128
  // threads of this consumer, orders them before its O += P V. The previous P V has retired
  // (wgmma_wait<0>) before this overwrites its P.
  auto store_p = [&] {
    if constexpr (kPFromSmem) {
#pragma unroll
      for (int kk = 0; kk < kBlockN / 16; ++kk) {
        uint32_t a[4];
        sm90::acc_slice_to_a<T>(s_flat, kk, a);
        sm90::store_a_slice<kBlockN, Cfg::kPSwizzle>(sP, p_lane_row, lane / 16, kk, a);
      }
      sm90::fence_proxy_async_smem();
    } else {
      sm90::acc_to_a<T>(s_flat, p_frag);
    }
  };

  auto issue_qk = [&](int it) {
    uint32_t q_tile = sQ_rows;
    // Q's descriptors do not change from tile to tile, so the compiler keeps all of them (2
    // registers per k16 slice) live across the loop; above head_dim 128 that spills the
    // consumers. An opaque copy of the address makes it rebuild them each tile, and there
    // each slice's descriptor is one add from the tile's (kDescByAdd): +2-5% at head_dim
    // 256 and +0-2% at 96 on the H200 (2026-12-01, docs/bench-raw/2026-12-01e-h200-ab-rounds.txt).
    // At head_dim 128 the same change (with Q opaque, else it spills) measured 1% slower, at
    // 64 level (20-34 fewer instructions per K/V tile; 2026-12-03,
    // docs/bench-raw/2026-12-03e-h200-desc-by-add-64-prefill-ab.txt).
    if constexpr (kHeadDim > 128 || kDescByAdd) asm volatile("" : "+r"(q_tile));
#pragma unroll
    for (int kk = 0; kk < kHeadDim / 16; ++kk)
      sm90::wgmma_qk<T>(s_flat, sm90::desc_kmajor<kBlockM, kSwizzle, kDescByAdd>(q_tile, kk),
                        sm90::desc_kmajor_of<KvLayout, kSwizzle, kDescByAdd>(sK(it % kStages), kk), kk > 0);
    sm90::wgmma_commit();
  };
  auto issue_pv = [&](int it) {
#pragma unroll
    for (int kk = 0; kk < kBlockN / 16; ++kk) {
      const uint64_t v_desc = Cfg::kSumByMma
                                  ? sm90::desc_mnmajor_ones(sV(it % kStages), ones, kk)
                                  : sm90::desc_mnmajor_of<KvLayout, kSwizzle, kDescByAdd>(sV(it % kStages), kk);
      if constexpr (kPFromSmem)
        sm90::wgmma_pv_ss<T>(o_flat, sm90::desc_kmajor<64, Cfg::kPSwizzle>(sP, kk), v_desc);
      else
        sm90::wgmma_pv<T>(o_flat, p_frag[kk], v_desc, true);
    }
    sm90::wgmma_commit();
  };
  // cp.async's writes are generic-proxy writes, which wgmma's async-proxy reads see only after a
  // proxy fence (MEMBAR.ALL.CTA and FENCE.VIEW.ASYNC.S in the SASS, once per K/V tile in every
  // consumer thread). TMA writes through the async proxy, and its mbarrier completes only once
  // the bytes have landed, so a TMA-fed tile needs no fence. Dropped on the H200 (2026-12-04,
  // docs/bench-history/2026-12-04.md): the persistent kernel at head_dim 64, 512 and 1k tokens, +6-9%
  // non-causal, +1% causal; the TMA-only instances level to +3% (head_dim 256 at 8k tokens; a
  // 4096-key window over 32k causal tokens 1.80 -> 1.75 ms). The persistent instances above
  // head_dim 64 keep it: there its run-time branch measured 1-3% slower at 512-1k tokens (head_dim
  // 128, bf16 and fp16, every round of three), the fence kept level with main; the TMA-only
  // persistent instance (the paged twin's), whose tiles are all TMA-fed, drops it: level (H100,
  // session 69, docs/benchmarks.md).
  auto fence_copied_tile = [&] {
    if (!tma || (Cfg::kPersistent && !Cfg::kTmaOnly && kHeadDim > 64)) sm90::fence_proxy_async_smem();
  };
  // Waits until K of tile `it` has landed, and V of tile `it_v` (split barriers only: V
  // otherwise lands with its K, which was waited for a tile earlier); it_v < 0: no V.
  auto wait_kv = [&](int it, int it_v) {
    sm90::mbar_wait(bar_k_full(it % kStages), (it / kStages) & 1);
    if (Cfg::kSplitKV && it_v >= 0) sm90::mbar_wait(bar_v_full(it_v % kStages), (it_v / kStages) & 1);
    fence_copied_tile();
  };
  auto wait_v = [&](int it_v) {  // before the last O += P V of a work tile
    if (Cfg::kSplitKV) {
      sm90::mbar_wait(bar_v_full(it_v % kStages), (it_v / kStages) & 1);
      fence_copied_tile();
    }
  };
  auto release = [&](uint32_t bar) {
    if (lane == 0) sm90::mbar_arrive(bar);
  };
  auto release_k = [&](int it) {  // S = Q K[it]^T has run (split barriers; else freed with V)
    if (Cfg::kSplitKV) release(bar_k_empty(it % kStages));
  };
  // Packed sequences (kPackedSeqs): the first K/V tile a work tile walks may reach past the
  // sequence's keys into the next sequence's rows (the maps cover the packed tensors, not one
  // sequence; past the tensor's end TMA fills zeros). Their scores are masked (-inf by a select,
  // score_program.cuh), but O += P V would still multiply those V rows by P = 0, and an inf or
  // NaN there would leak into this sequence's rows. So each consumer zeroes those rows of the V
  // tile in shared memory once it has landed, while its S = Q K[0]^T runs: all of them, with its
  // own 128 threads, so that no consumer waits for another (the persistent kernel's lagged turns
  // keep the second consumer turns behind the first). Where both write, they write the same
  // zeros, so a consumer whose P V already reads the rows reads zeros either way. The stores are
  // generic-proxy writes that wgmma reads through the async proxy: each thread fences, and the
  // consumer's next turn barrier (turn_begin: a bar.sync of its 128 threads, before its first
  // P V) orders every thread's stores before that wgmma, as for P through shared memory.
  auto zero_v_rows = [&](int it, int from) {
    static_assert(!kPackedSeqs || Cfg::kTmaOnly || Cfg::kPersistent, "a TMA-fed launch of packed sequences");
    if (Cfg::kSplitKV) sm90::mbar_wait(bar_v_full(it % kStages), (it / kStages) & 1);
    constexpr int kColumnBlocks = kHeadDim * 2 / kSwizzle, kRowChunks = kSwizzle / 16;
    const int chunks = (kBlockN - from) * kRowChunks;  // per column block
    unsigned char* tile = smem + (sV(it % kStages) - smem_base);
    for (int i = ctid % 128; i < kColumnBlocks * chunks; i += 128) {
      const int block = i / chunks, row_chunk = i - block * chunks;
      // A blocked tile's column block holds its rows back to back: one add (the offset below in
      // its general form took 64 more instructions in the packed twin at head_dim 96).
      const uint32_t offset = KvLayout::kGroupStride == 8 * kSwizzle
                                  ? block * KvLayout::kBlockStride + from * kSwizzle + row_chunk * 16
                                  : sm90::unswizzled_offset<KvLayout, kSwizzle>(block, from + row_chunk / kRowChunks,
                                                                                row_chunk % kRowChunks);
      *reinterpret_cast<uint4*>(tile + offset) = make_uint4(0u, 0u, 0u, 0u);
    }
    sm90::fence_proxy_async_smem();
  };
  // Turns, in a ring: a consumer issues only after the one before it has issued (each turn
  // barrier: that one's 128 arrivals and this one's 128). The last consumer arrives once
  // ahead so that consumer 0 goes first; consumer 0 takes that arrival back at the end. Every
  // consumer takes as many turns (they walk the same K/V tiles), so the ring never skips.
  auto turn_begin = [&] { sm90::named_barrier_sync(kBarTurn0 + consumer, 256); };
  auto turn_end = [&] { sm90::named_barrier_arrive(kBarTurn0 + (consumer + 1) % kWGs, 256); };
  if (consumer == kWGs - 1) turn_end();
  // The softcap-only instance (BoundedSoftcap: a tanh and an exp2 per score, so the
  // special-function unit's work per tile equals the tensor cores') passes the turn once its
  // S = Q K^T has landed instead of right after issuing its products: the next consumer's
  // products then queue behind this Q K^T, and the consumers' softmaxes start apart. Against the
  // early pass (H100, session 84, docs/benchmarks.md): softcap 50 over 8k tokens at head_dim 64
  // +4.5% non-causal, +2.6% causal, at 96 +1.5% / level, at 128 level. The other instances were
  // level with it too (12 prefill rows 0.986-1.021), so they keep the early pass.
  constexpr bool kTurnAfterS = P::kBoundedSoftcap && !Cfg::kPersistent;
  auto turn_end_issued = [&] {
    if constexpr (!kTurnAfterS) turn_end();
  };
  auto turn_end_s_landed = [&] {
    if constexpr (kTurnAfterS) turn_end();
  };
  // Lagged turns (Sm90Tiles::kLagTurns): the last consumer passes its first lag_turns turns,
  // the first its last ones; both then take as many turns as before. Causal calls lag by one
  // turn: their work tiles hold 1-8 K/V tiles, a lag of two lost 3-4% there, one gained 0-3%.
  const int lag_turns = Cfg::kLagTurns == 0 ? 0 : p.is_causal ? 1 : Cfg::kLagTurns;
  auto pass_turns = [&] {
    for (int t = 0; t < lag_turns; ++t) {
      turn_begin();
      turn_end();
    }
  };
  if (consumer == kWGs - 1) pass_turns();
  // Whether this consumer's rows see no key of the work tile's first K/V tile (at key n0): the
  // rightmost key its last row sees (the causal diagonal, or the window's right edge) lies
  // before n0. Uniform over the consumer. Only the TMA-only plain launch, one work tile a CTA.
  constexpr bool kMaySkipFirstTile = Cfg::kTmaOnly && !Cfg::kPersistent;
  auto skips_first_tile = [&](const CtaWork& w, int n_tiles, int n0) {
    if (!kMaySkipFirstTile || n_tiles < 2) return false;
    int right;  // the rightmost key the diagonal key's row sees, past that key
    if constexpr (P::kBand) {
      if (p.window_right < 0) return false;
      right = p.window_right;
    } else {
      if (!p.is_causal) return false;
      right = 0;
    }
    const int last_row = min(w.m0 + consumer * 64 + 63, w.rows - 1);
    return p.rows_per_query.div(last_row) + w.diag + right < n0;
  };
  // A K/V tile this consumer's rows see none of: its turn passes (the ring keeps its order) and
  // its stage is freed, unread.
  auto pass_tile = [&](int tile) {
    turn_begin();
    turn_end();
    release_k(tile);
    release(bar_v_empty(tile % kStages));
  };

  // The epilogue of a work tile: O /= l, the LSE, and (persistent kernel) O from registers to
  // global memory; the plain kernel stages O in shared memory below. Its parts that read no O
  // (ends: the rows' 1 / l and LSE, and the LSE's store; the output rows' addresses) are
  // separate, for the persistent kernel's early epilogue (kEarlyEpilogue below).
  auto ends_and_lse = [&](const CtaWork& w) {
    float sink_buffer[2];
    // kSumByMma: each of a row's 4 lanes holds the row's whole sum, in the extra n8 tile.
    if constexpr (Cfg::kSumByMma) {
      row_sum[0] = acc_o[kNTilesO][0];
      row_sum[1] = acc_o[kNTilesO][2];
    }
    const RowEnds e = row_ends<Cfg::kSumByMma>(row_max, row_sum, p.lse_scale,
                                               P::kSinks ? row_sinks(p, w, tile_row, sink_buffer) : nullptr);
    store_lse(p, w, e.lse, tile_row, lane);
    return e;
  };
  auto finish_and_store = [&](const CtaWork& w) {
    const RowEnds e = ends_and_lse(w);
    rescale_rows(o_tiles, e.inv);
    if (Cfg::kPersistent) store_output_rows<T>(output_rows<T>(p, w, tile_row), o_tiles, p.head_dim, lane);
  };
  // Persistent kernel below head_dim 256: the early epilogue. Between a consumer's last
  // O += P V and its next work tile's first S = Q K^T the tensor cores see only the other
  // consumer's last P V, and the turns hold that one back too. Traced with clock64 stamps on the
  // H200 (head_dim 128, 512 tokens; docs/benchmarks.md, 2026-12-04 19:33): of a work tile's
  // ~15,100 cycles, 2,100 went to the epilogue and 630-810 to the next tile's CtaWork
  // (cta_work), all after the last P V had retired, while the next Q had landed already. So the
  // epilogue is cut in three: what reads no O runs while that P V is in flight (the rows' ends
  // and the LSE's store, except with kSumByMma, whose row sums come out of it; the output rows'
  // addresses; the next work tile's CtaWork), O /= l and its conversion to 16 bits after it,
  // and its shuffles and stores once the next tile's first Q K^T is issued, beside it
  // (pending_o: head_dim / 4 registers; a whole fp32 O beside the next S spilled 744 bytes at
  // 128, 2026-12-01). Against the epilogue after the last P V (H200, 2026-12-04 19:50, three
  // rounds): head_dim 64 and 128 at 512-1k tokens +0.6-3.1%, 96 +2.7% non-causal and -1.5%
  // causal (where a fp32 O had waited for the next Q K^T since 2026-12-01), 256 -0.3-0.7%, so
  // not there.
  constexpr bool kEarlyEpilogue = Cfg::kPersistent && kHeadDim < 256;
  // The lazy running max (softmax_step) where O's rescale is a large part of a tile's softmax:
  // above head_dim 128, in the TMA-only instance (the long K/V; at 256, every length). A
  // thread's O holds head_dim / 2 values and its S kBlockN / 2, so a rescale costs a
  // multiply per O value against 40 scores at 256 (80-key tiles), 56 at 192, 88 at 128.
  // Measured on the H200 (2026-12-02, docs/bench-history/2026-12-02.md): head_dim 256 +4-7% at 4k-8k
  // tokens, +0-11% at 1k, 192 +1-3%; at 64-128 the warp's vote and branch cost more than the
  // skipped multiplies save: 2-5% slower from 2k tokens.
  // It costs accuracy. On the H100 (session 65, tools/lab/lazy_max_probe.py, docs/benchmarks.md)
  // the TMA-only instance's largest error on sequences of 700-3000 keys was up to 1.96x
  // PyTorch's with it (dense calls, and the packed twin built with it: mostly the same numbers),
  // up to 1.26x in the packed twin without it; on shorter packed sequences it crossed the tests'
  // 2x (2.13x at head_dim 256, 301 keys). The explanation that fits: with the exact max a row's
  // largest P is 2^0, exact in 16 bits; with a stale one the largest P are any value up to 2^8,
  // rounded for P V while the row sum adds them unrounded, and where a few keys carry most of a
  // row's weight that rounding does not average out. So not in the kPackedSeqs twins, whose
  // calls run this instance over sequences of any length (a dense call over few keys has a small
  // grid, which splits on the SM80 kernel).
  constexpr bool kLazyMax = Cfg::kTmaOnly && kHeadDim > 128 && !kPackedSeqs;
  // Where O is rescaled (by the last softmax's correction): in the consumer's turn, between
  // issuing S = Q K^T and O += P V, where its multiplies run while the tensor cores compute
  // Q K^T; otherwise after the wait for the previous P V, on the way to the next turn. In the
  // turn: the TMA-only instances of plain scores (and of ALiBi alone) up to head_dim 128.
  // Not around a run-time branch (the lazy max's, a softcap's bounded logits): a matrix
  // product would be in flight across it, and ptxas serializes them. H200, 2026-12-02
  // (docs/bench-history/2026-12-02.md): level to +2.5% at head_dim 64-128 from 4k tokens, ALiBi at head_dim
  // 128, 8k tokens 0.91-0.93x -> 0.93-0.97x of plain attention's speed; in the persistent
  // kernel (short K/V) 1-1.5% slower, and with a window's band (BandSinks) a 4096-key window
  // over 32k causal tokens took 1.77-1.98 ms against 1.70-1.76.
  constexpr bool kRescaleInTurn = Cfg::kTmaOnly && !kLazyMax && !P::kScoreMods && !P::kBand;
  uint32_t pending_o[kEarlyEpilogue ? kNTilesO : 1][2];  // the last work tile's O, 16-bit, not yet stored
  OutputRows<T> pending_rows;
  bool has_pending = false;
  auto flush_pending = [&] {
    if constexpr (kEarlyEpilogue) {
      if (has_pending) store_packed_rows<T>(pending_rows, pending_o, p.head_dim, lane);
      has_pending = false;
    }
  };
  auto start_rows = [&](bool bounded) {
#pragma unroll
    for (int j = 0; j < kNTilesAcc; ++j) acc_o[j][0] = acc_o[j][1] = acc_o[j][2] = acc_o[j][3] = 0.f;
    row_max[0] = row_max[1] = bounded ? p.logit_offset : -INFINITY;
    row_sum[0] = row_sum[1] = 0.f;
  };

  // The consumers' walk over their work tiles: for_each_work_tile's, except that the persistent
  // kernel's body is handed `ahead`, which computes the next work tile's CtaWork (kEarlyEpilogue:
  // beside the last P V); the walk computes it where the body did not.
  auto for_each_consumer_tile = [&](auto&& body) {
    if constexpr (kDrawsTiles) {
      // The tiles the producer posts (for_each_work_tile). Lane 0 of each consumer warp waits
      // for a slot, reads it and frees it (its own read ordered before its arrival: the
      // producer's next store into the slot cannot race it); the warp takes the number from it.
      int reads = 0;
      auto take = [&] {
        const int slot = reads & 1;
        int tile = 0;
        if (lane == 0) {
          sm90::mbar_wait(bar_tile_posted(slot), (reads >> 1) & 1);
          tile = tile_slots[slot];
          sm90::mbar_arrive(bar_tile_read(slot));
        }
        ++reads;
        return __shfl_sync(0xffffffffu, tile, 0);
      };
      auto work = [&](int tile) {
        return cta_work<P, Cfg::kTmaOnly, Cfg::kPersistent>(p, num_m_blocks, kBlockM, kBlockN, max(tile, 0));
      };
      int tile = take();
      CtaWork w = work(tile);
      while (tile >= 0) {
        int next_tile = -1;
        CtaWork next = w;
        bool next_known = false;
        auto ahead = [&] {
          next_tile = take();
          if (next_tile >= 0) next = work(next_tile);
          next_known = true;
        };
        body(w, ahead);
        if (!next_known) ahead();
        tile = next_tile;
        w = next;
      }
    } else if constexpr (kEarlyEpilogue) {
      const int step = static_cast<int>(gridDim.x);
      CtaWork w = cta_work<P, Cfg::kTmaOnly, Cfg::kPersistent>(p, num_m_blocks, kBlockM, kBlockN, blockIdx.x);
      for (int tile = blockIdx.x; tile < num_tiles; tile += step) {
        CtaWork next = w;
        bool next_known = false;
        auto ahead = [&] {
          if (tile + step < num_tiles)
            next = cta_work<P, Cfg::kTmaOnly, Cfg::kPersistent>(p, num_m_blocks, kBlockM, kBlockN, tile + step);
          next_known = true;
        };
        body(w, ahead);
        if (!next_known) ahead();
        w = next;
      }
    } else {
      for_each_work_tile([&](const CtaWork& w) { body(w, [] {}); });
    }
  };

  int it = 0, q_uses = 0;
  // trace.cuh: one thread of each consumer stamps its events of the work tile `traced`.
  FORGE_FLASH_TRACE_CODE(int visited = 0; auto stamp = [&, stamper = ctid % 128 == 0](int traced, int event) {
    if (stamper) trace_stamp(p, traced, kTraceConsumer + 6 * consumer + event);
  };)
  for_each_consumer_tile([&](const CtaWork& w, auto&& ahead) {
    FORGE_FLASH_TRACE_CODE(const int traced = visited++; if (ctid == 0) trace_stamp(p, traced, kTraceBodyTop);)
    if (w.m0 >= w.rows) return;
    const int n_tiles = kv_tiles(w);
    const int q_buffer = q_uses % kQBuffers;  // the producer loads no Q for a tile without K/V
    // Bounded logits (softcap): a fixed offset stands for the row maximum (softmax_bounded).
    // Not where the variant consumers have no registers to spare for a second softmax: the
    // persistent kernel, head_dim 256 (24-60 bytes of spills). The BoundedSoftcap instance
    // compiles this softmax alone.
    const bool bounded =
        P::kBoundedSoftcap || (P::kScoreMods && !Cfg::kPersistent && kHeadDim < 256 && p.bounded_logits);
    if (n_tiles == 0) flush_pending();  // else beside the tile's first Q K^T
    // kDrawsTiles with lagged turns: a work tile without keys (causal rows before their first
    // key, a sequence of no keys) takes the two turns of a one-K/V-tile one, in both consumers.
    // Else a run of them lets the first consumer walk on without turns while the last waits for
    // its next one; the producer's post two tiles later waits for the last consumer's read of
    // the tile numbers, and the first waits for that post: a deadlock (it hung the GPU suite's
    // short causal and empty-sequence calls at head_dim 64). With two turns per tile, the last
    // consumer stays within one work tile of the first, which the queue's two slots cover.
    if (kDrawsTiles && n_tiles == 0 && lag_turns > 0)
      for (int t = 0; t < 2; ++t) {
        turn_begin();
        turn_end();
      }
    start_rows(bounded);
    const ScoreRows rows = score_rows<P>(p, w, tile_row);
    auto tile_n0 = [&](int i) { return (w.n_end - 1 - i) * kBlockN + w.key0; };
    // The first K/V tile walked is the one across the causal diagonal (or the window's right
    // edge). Where the tiles are wider than a consumer's 64 rows are deep and not aligned with
    // them (the TMA-only instance: 192 keys at head_dim 96, 176 at 128, and 192 query rows over
    // 128-key tiles at 64), this consumer's rows may see none of its keys: a consumer-tile of
    // Q K^T, softmax and P V whose P is all zeros (at 96 and 128 the first consumer's in 31-36%
    // of a causal call's query blocks, at 64 one or two consumers' in every one: 2.4-5% of the
    // consumer-tiles over 2k tokens). Such a consumer starts at the second tile (first = 1): it
    // passes its turn of the first and releases its stage (skips_first_tile).
    const int first = skips_first_tile(w, n_tiles, tile_n0(0)) ? 1 : 0;
    // kPackedSeqs: the rows of the first K/V tile within the sequence (zero_v_rows zeroes the rest).
    const int v0_rows = kPackedSeqs && n_tiles > 0 ? w.seq.seqlen_k - tile_n0(0) : kBlockN;
    // Returns whether O needs its rescale (kLazyMax: not when no row of the warp moved its max).
    auto softmax = [&](int i, float (&correction)[2]) {
      const TileFacts tile = tile_facts<P>(p, w, tile_n0(i), kBlockN);
      bool rescale = false;
      if (bounded) {
#pragma unroll
        for (int j = 0; j < kNTilesS; ++j)
#pragma unroll
          for (int e = 0; e < 4; ++e) acc_s[j][e] = softcap_tanh(acc_s[j][e], p);
        if (tile.needs_mask) mask_tile<P>(acc_s, p, w, tile.n0, tile_row, lane);
        softmax_bounded(acc_s, row_sum, p.softcap_log2, p.logit_offset);
      } else if constexpr (!P::kBoundedSoftcap) {
        float bias[2];
        scores_to_logits<P>(acc_s, p, w, tile, rows, tile_row, lane, bias);
        rescale =
            softmax_step<P::kAlibi, kLazyMax, Cfg::kSumByMma>(acc_s, row_max, row_sum, p.scale_log2, correction, bias);
      }
      if (Cfg::kPersistent && i == n_tiles - 1) release(bar_q_empty(q_buffer));  // last Q K^T ran: Q may be replaced
      return rescale;
    };

    [[maybe_unused]] RowEnds ends;  // kEarlyEpilogue: worked out beside the last P V
    [[maybe_unused]] OutputRows<T> out_rows;
    if (n_tiles > 0) {
      FORGE_FLASH_TRACE_CODE(if (ctid == 0) trace_stamp(p, traced, kTraceBeforeQWait);)
      sm90::mbar_wait(bar_q_full(q_buffer), (q_uses++ / kQBuffers) & 1);
      FORGE_FLASH_TRACE_CODE(stamp(traced, kTraceQLanded);)
      sQ_rows = sQ(q_buffer) + consumer * 64 * kSwizzle;
      float correction[2];
      if (first == 1) pass_tile(it);
      wait_kv(it + first, -1);
      FORGE_FLASH_TRACE_CODE(stamp(traced, kTraceK0Landed);)
      turn_begin();
      FORGE_FLASH_TRACE_CODE(stamp(traced, kTraceTurn);)
      sm90::wgmma_fence();
      issue_qk(it + first);
      turn_end_issued();
      if (kPackedSeqs && first == 0 && v0_rows < kBlockN) zero_v_rows(it, v0_rows);  // beside this Q K^T
      flush_pending();  // the previous work tile's stores, beside this Q K^T
      sm90::wgmma_wait<0>();
      sm90::fence_operand(s_flat);
      turn_end_s_landed();
      FORGE_FLASH_TRACE_CODE(stamp(traced, kTraceS0);)
      release_k(it + first);
      softmax(first, correction);  // O is still zero: rescaled in the turn, it stays zero
      store_p();

      for (int i = first + 1; i < n_tiles; ++i) {
        wait_kv(it + i, it + i - 1);
        turn_begin();
        sm90::wgmma_fence();  // orders the writes of S's old value, P and O before the MMAs
        issue_qk(it + i);
        if constexpr (kRescaleInTurn) {
          rescale_rows(acc_o, correction);
          sm90::wgmma_fence();  // the rescaled O before the MMA that adds to it
        }
        issue_pv(it + i - 1);
        turn_end_issued();
        sm90::wgmma_wait<1>();  // S of tile i; O += P V still running
        sm90::fence_operand(s_flat);
        turn_end_s_landed();
        release_k(it + i);
        const bool rescale = softmax(i, correction);
        sm90::wgmma_wait<0>();
        sm90::fence_operand(o_flat);
        if constexpr (!kPFromSmem) sm90::fence_operand(p_flat);  // P stayed live (read by the MMA) until here
        release(bar_v_empty((it + i - 1) % kStages));
        if (!kRescaleInTurn && (kLazyMax ? rescale : !bounded)) rescale_rows(acc_o, correction);
        store_p();
      }
      wait_v(it + n_tiles - 1);
      turn_begin();
      if constexpr (kRescaleInTurn) rescale_rows(acc_o, correction);  // one K/V tile: O = 0, the factor 0
      sm90::wgmma_fence();
      issue_pv(it + n_tiles - 1);
      turn_end();
      if constexpr (kEarlyEpilogue) {  // beside the last P V: the epilogue's parts that read no O
        if constexpr (!Cfg::kSumByMma) ends = ends_and_lse(w);
        out_rows = output_rows<T>(p, w, tile_row);
        ahead();
      }
      sm90::wgmma_wait<0>();
      sm90::fence_operand(o_flat);
      if constexpr (!kPFromSmem) sm90::fence_operand(p_flat);
      release(bar_v_empty((it + n_tiles - 1) % kStages));
      FORGE_FLASH_TRACE_CODE(stamp(traced, kTraceLastPV);)
      it += n_tiles;
      if constexpr (kEarlyEpilogue) {
        if constexpr (Cfg::kSumByMma) ends = ends_and_lse(w);
        rescale_rows(o_tiles, ends.inv);
        pack_rows<T>(o_tiles, pending_o);
        pending_rows = out_rows;
        has_pending = true;
        FORGE_FLASH_TRACE_CODE(stamp(traced, kTraceEpilogue);)
        return;
      }
    }

    // ---- epilogue (the dispatcher runs this kernel only without split-KV: O is final) ----
    finish_and_store(w);
    FORGE_FLASH_TRACE_CODE(stamp(traced, kTraceEpilogue);)
    if (Cfg::kPersistent) return;  // Q's space may hold the next tile already: stored from registers
    // Plain: stage the tile in Q's space (head_dim 96: and past it, in the K/V ring, whose
    // tiles have all been consumed) for 16-byte coalesced stores.
    T* staging = reinterpret_cast<T*>(smem);
    sm90::named_barrier_sync(kBarConsumers, kConsumers);  // every consumer is done reading Q, K, V
    stage_output<T, Cfg::kOutputPitch>(staging, o_tiles, tile_row, lane);
    sm90::named_barrier_sync(kBarConsumers, kConsumers);
    store_output<T, Cfg::kOutputPitch, kBlockM, kChunks, kConsumers>(p, w, staging, ctid);
  });
  flush_pending();  // the last work tile's epilogue
  FORGE_FLASH_TRACE_CODE(if (ctid == 0) trace_cta_end(p);)
  if (consumer == 0) pass_turns();
  if (consumer == 0) turn_begin();
#endif
}

}  // namespace forge_flash
