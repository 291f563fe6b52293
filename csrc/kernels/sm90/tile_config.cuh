// The Hopper forward kernel's tiles, one set per head dim and instance: the CTA's warpgroups
// and register split, its shared-memory layout and barriers (Sm90Config), and the tile shapes
// chosen per head dim with the measurements that chose them (Sm90Tiles). The kernel
// (fwd_kernel_sm90.cuh) reads them as `Cfg`; fwd_instantiate.cuh instantiates one per table
// entry.
#pragma once

#include "../policies.h"
#include "wgmma.cuh"

namespace forge_flash {

// Rows a producer copies at once: the largest power of two whose rows of `chunks` 16-byte
// chunks the producer's threads cover (each thread keeps one chunk column).
constexpr int sm90_copy_row_step(int chunks, int threads) {
  int step = 1;
  while (2 * step * chunks <= threads) step *= 2;
  return step;
}

// One instance's CTA: its warpgroups and their registers, the producer's copy lanes, the tiles'
// shared memory and barriers.
template <int kHeadDim_, int kBlockN_, int kStages_, bool kPersistent_, bool kTmaOnly_ = false, int kConsumerWGs_ = 2,
          int kQBuffers_ = 1, int kLagTurns_ = 0, bool kPFromSmem_ = false, bool kSumByMma_ = false>
struct Sm90Config {
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kConsumerWGs = kConsumerWGs_;  // consumer warpgroups, 64 query rows each
  static constexpr int kBlockM = 64 * kConsumerWGs;
  static constexpr int kKvTilesPerStep = 1;  // K/V tiles a CTA works on at once (KernelInfo)
  static constexpr int kBlockN = kBlockN_;
  static constexpr int kStages = kStages_;
  static constexpr bool kPersistent = kPersistent_;
  // TMA-only instance (plan_fwd runs it where the call's maps encode): its producer is one
  // thread issuing TMA loads, which needs 24 registers, so the consumers get 240 (160 each
  // with three consumer warpgroups).
  static constexpr bool kTmaOnly = kTmaOnly_;
  static constexpr int kProducerThreads = 128;
  static constexpr int kConsumerThreads = 128 * kConsumerWGs;
  static constexpr int kNThreads = kProducerThreads + kConsumerThreads;
  static constexpr int kLaunchRegs = 65536 / kNThreads / 8 * 8;  // per thread at launch
  // 65536 registers / 384 threads = 168 each at launch (128 with three consumers); the
  // producer gives most of its share to the consumers: 56 * 128 + 224 * 256 = 168 * 384
  // (24 * 128 + 160 * 384 <= 128 * 512 with three). Multiples of 8; a smaller producer
  // share spills its address arithmetic at head_dim 128, and the persistent producer's tile
  // loop needs 72 there. Above head_dim 128 the consumers need all 224 (O alone is 96-128),
  // and the persistent producer fits 56 by recomputing its row addresses per work tile. A
  // persistent TMA-only producer (the paged twin's persistent instance: a warp that walks the
  // work tiles, draws them and looks up pages) spilled 8-28 bytes at 32 and none at 40.
  static constexpr int kProducerRegs = kTmaOnly && kPersistent            ? 40
                                       : kTmaOnly                         ? 24
                                       : (kPersistent && kHeadDim <= 128) ? 72
                                                                          : 56;
  static constexpr int kConsumerRegs = (kLaunchRegs * (kConsumerWGs + 1) - kProducerRegs) / kConsumerWGs / 8 * 8;
  static_assert(kHeadDim % 32 == 0 && kHeadDim >= 64 && kHeadDim <= 256, "wgmma tiles: head_dim 64..256, 32k");
  static_assert(kBlockN % 16 == 0 && kBlockN <= 256, "keys: whole k16 slices of P V, wgmma N <= 256");
  // Tile layout (sm90/wgmma.cuh): 128B swizzle, or 64B where head_dim is not a multiple of 64.
  static constexpr int kSwizzle = sm90::swizzle_bytes_for(kHeadDim);
  // Copies: a producer thread copies one 16-byte chunk column of every kCopyRowStep-th row.
  // Where the chunks of a row do not divide the warpgroup (head_dim 96, 192: 12, 24 chunks),
  // only the first kCopyThreads threads (3 whole warps) copy; the last warp has nothing to do.
  static constexpr int kChunks = kHeadDim / 8;
  static constexpr int kCopyRowStep = sm90_copy_row_step(kChunks, kProducerThreads);
  static constexpr int kCopyThreads = kChunks * kCopyRowStep;
  static_assert(kCopyThreads % 32 == 0 && kBlockM % kCopyRowStep == 0 && kBlockN % kCopyRowStep == 0,
                "whole copying warps, whole row steps");
  // head_dim 96, 192, 256 also run smaller head dims (routed ones: 72-88, 136-184, 200-248):
  // the copies zero-fill the chunks past head_dim, so Q K^T adds zeros and O's extra columns
  // are 0 and never stored. 64 and 128 keep their head_dim-only copy loop (the dispatcher
  // sends them nothing smaller: dispatch.cu, hopper_runs_head_dim).
  static constexpr bool kPadsHeadDim = kHeadDim == 96 || kHeadDim > 128;
  // With 2 stages, K and V get barriers of their own: a consumer frees K[i] once S = Q K[i]^T
  // has run and V[i] once O += P V[i] has, so the producer loads K[i + 2] while V[i] is still
  // in use. A shared stage barrier would free K[i] and V[i] together, after P V[i], and the
  // next tile's load would then start only when it is already needed. 3+ stages keep one
  // barrier pair per stage.
  static constexpr bool kSplitKV = kStages < 3;
  static constexpr int kQBytes = kBlockM * kHeadDim * 2;
  static constexpr int kKVBytes = kBlockN * kHeadDim * 2;
  static_assert(kQBytes % 1024 == 0 && kKVBytes % 1024 == 0, "every tile starts on a swizzle atom");
  // Q buffers (persistent kernel: Sm90Tiles::kQBuffers). With two, the producer loads the next
  // work tile's Q, and then its K/V, while the consumers still run Q K^T on this one's; with
  // one, those loads start after this tile's last Q K^T.
  static constexpr int kQBuffers = kQBuffers_;
  static_assert(kQBuffers == 1 || (kPersistent && kQBuffers == 2), "a second Q buffer serves a next work tile");
  // Turns the last consumer runs behind the first, at most (Sm90Tiles::kLagTurns); 0: in step.
  // Why these bounds never wait in a circle: the first consumer starts work tile j + 2, whose Q
  // goes into tile j's buffer, at least three turns after its last Q K^T of tile j (tile j's
  // last P V, then two or more turns of tile j + 1), and the second frees that buffer kLagTurns
  // turns after it: kLagTurns <= 3. K/V tile i refills the stage of tile i - kStages, which the
  // second consumer frees (after its P V) kLagTurns + 1 turns after the first's Q K^T of that
  // tile: kStages >= kLagTurns + 2, and one more to load ahead.
  static constexpr int kLagTurns = kLagTurns_;
  static_assert(kLagTurns == 0 ||
                    (kPersistent && kQBuffers == 2 && kConsumerWGs == 2 && kLagTurns <= 3 && kStages >= kLagTurns + 3),
                "a lagging consumer reads the previous work tile's Q and holds kLagTurns more K/V stages");
  // P through shared memory (Sm90Tiles::kPFromSmem): each consumer writes its P tile (64 rows of
  // kBlockN keys, the 128B K-major layout of sm90/wgmma.cuh) after the ring, and O += P V reads
  // it as an SS operand, so P takes no registers.
  static constexpr bool kPFromSmem = kPFromSmem_;
  static constexpr int kPSwizzle = sm90::swizzle_bytes_for(kBlockN);  // 128 (64 keys a block)
  static_assert(!kPFromSmem || kBlockN % 32 == 0, "P's tile: whole column blocks");
  static constexpr int kPBytes = kPFromSmem ? 64 * kBlockN * 2 : 0;  // one consumer's P tile
  static constexpr int kRingBytes = kQBuffers * kQBytes + kStages * 2 * kKVBytes;
  static constexpr int kTileBytes = kRingBytes + kConsumerWGs * kPBytes;
  // Row sums by the tensor cores (Sm90Tiles::kSumByMma): O += P V runs with N = head_dim + 8,
  // whose last 8 columns read 16 rows of ones (sm90::desc_mnmajor_ones) after the tiles.
  static constexpr bool kSumByMma = kSumByMma_;
  static_assert(!kSumByMma || (kHeadDim == 64 && !kPFromSmem_), "V in one column block, then the ones");
  static constexpr int kOnesBytes = kSumByMma ? sm90::kOnesBytes : 0;
  // Per Q buffer full, empty; per stage K (or K and V) full, V (or K and V) empty [, V full,
  // K empty].
  static constexpr int kBarrierBytes = 8 * (2 * kQBuffers + (kSplitKV ? 4 : 2) * kStages);
  // + 1 KB so the tiles can start on a 1024-byte boundary (the swizzle atom).
  static constexpr int kSmemBytes = kTileBytes + kOnesBytes + kBarrierBytes + 1024;
  static_assert(kSmemBytes <= 227 * 1024, "fits the shared memory a Hopper CTA may have");
  // A persistent instance that draws its work tiles (fwd_kernel_sm90.cuh, kDrawsTiles) also keeps
  // a queue of two tile numbers after the barriers: two "posted" and two "read" mbarriers, two slots.
  static constexpr int kTileQueueBytes = 48;
  static_assert(kSmemBytes + kTileQueueBytes <= 227 * 1024, "the queue fits too");
  // The plain kernel's epilogue stages O in shared memory (over Q, and past it into the K/V
  // ring, free by then) in rows of a multiple of 64 elements: the staging swizzle XORs the
  // chunk with row % 8 and must stay inside its row.
  static constexpr int kOutputPitch = (kHeadDim + 63) / 64 * 64;
  static_assert(kBlockM * kOutputPitch * 2 <= kTileBytes, "the staged output fits");
};

// Per head_dim: kBlockN keys per K/V tile, stages. Registers per consumer thread: O head_dim / 2,
// S kBlockN / 2, P kBlockN / 4 (+ softmax state, addresses) within kConsumerRegs.
//   64:  128 keys, 4 stages (145 KB); persistent, plain scores: 5 stages and two Q buffers
//        (193 KB, for the lagged turns: Sm90Tiles::kLagTurns).
//   128: 128 keys, 3 stages (226 KB of the 227 KB).
//   96:  128 keys, 4 stages (217 KB; 64B swizzle), O 48 + S 64 + P 32 registers; persistent,
//        plain scores: 3 stages and two Q buffers (192 KB, Sm90Tiles::kQBuffers).
//   192: 112 keys, 2 stages (217 KB), O 96 + S 56 + P 28 registers.
//   256:  80 keys, 2 stages (225 KB), O 128 + S 40 + P 20 registers.
//   256 persistent: 64 keys (193 KB): its tile loop's state needs the 12 registers of 16 keys.
// The TMA-only instance (plain launch; its producer is one thread) has 24 producer registers,
// so its consumers get more; with plain scores (Plain policies) it takes larger tiles:
//   64:  3 consumer warpgroups (192 query rows, 160 registers each: O 32 + S 64 + P 32),
//        128 keys, 4 stages (153 KB). A third consumer is a third instruction stream for the
//        SM's schedulers while the other two wait on their exponentials or matrix products:
//        +12-17% at 2k-16k tokens on the H200 (docs/bench-history/2026-12-01.md, night). Not at
//        head_dim 96/128, whose O, S and P do not fit 160 registers (100-240 bytes of spills).
//   96:  192 keys, 2 stages (169 KB), O 48 + S 96 + P 48 of 240 registers: +1-5% at 4k-8k
//        tokens (three consumers with 80-key tiles: +3% non-causal, -6% causal).
//   96, non-causal calls (an instance of their own: HopperKernels::tma_non_causal): 3
//        consumers, 128 keys, 2 stages, P through shared memory (kPFromSmem, 181 KB): each
//        consumer writes P to a 16 KB tile that O += P V reads as an SS operand, so O 48 + S 64
//        fit 160 registers. Against the tiles above (H200, 2026-12-03, docs/bench-history/2026-12-03.md):
//        non-causal +2-9% at 2k-16k tokens (bf16, fp16), causal -4.5% to +3% (its taller query
//        blocks cross the diagonal in more masked tiles), so causal calls keep them. The same
//        at 64 (160 keys, 3 stages) lost 7-12%, at 128 (3 consumers, 96 keys) 2-8%.
//   128: 176 keys, 2 stages (209 KB), O 64 + S 88 + P 44 of 240 registers: +2-5% from 2k
//        tokens (the variant score program spills 376 bytes there: it keeps 128 keys).
// BandSinks (a window and/or sinks, plain scores) and AlibiOnly (ALiBi alone: a multiply-add
// per score, policies.h; 52 bytes of spills beside the third consumer at head_dim 64) take
// these tiles too. BandSinks' band mask and sink epilogue spill 20-24 bytes at head_dim 64
// and 128, outside the unmasked tiles' path (in the SASS: the masked-tile branch and the
// epilogue); with it a 4096-key window over 32k causal tokens ran 3.68-3.70x -> 3.73-3.84x
// faster than the causal call, sinks 0.87-0.95x -> 0.93-1.12x of plain attention (H200,
// 2026-12-01, tools/lab/bench_variants.py).
template <int kHeadDim, bool kPersistent, bool kTmaOnly, class P, bool kNonCausal = false>
struct Sm90Tiles {
  // The larger tiles above: plain scores over dense K/V (a window's band mask and the sinks,
  // which only the row's end reads, fit too). The paged twin's wide instance (PagedKV through
  // TMA with kNonCausal set: HopperKernels::tma_paged_wide; only its producer reads the table)
  // takes those that add a consumer and keep 128-key tiles: at head_dim 64, and at 96 the
  // non-causal instance's (P through shared memory), for causal calls too. The wider K/V tiles
  // of 96 and 128 would cut its boxes over large pages (paged_box_rows: 16 rows from 176-key
  // tiles, where 128-key tiles take whole pages of 128). A third consumer reads each K/V tile
  // for 192 query rows, not 128: over pages of 16 the twin's TMA loads are small (24 of 1 KB a
  // 128-key tile at 96), and a tile's loads then serve more work. Which calls it pays for:
  // split_plan.h, takes_paged_wide.
  static constexpr bool kPagedWide = kTmaOnly && P::kPagesOnly && kNonCausal && (kHeadDim == 64 || kHeadDim == 96);
  static constexpr bool kWide = kTmaOnly && (!P::kIndexedKV || kPagedWide) && !P::kScoreMods;
  // The softcap-only instance (BoundedSoftcap, head_dim 64-128): three consumers on 128-key
  // tiles, P through shared memory (at 128: O 64 + S 64 registers of 160; no spills at any of the
  // three). A softcapped tile's softmax takes a tanh and an exp2 per score on the
  // special-function unit, longer than a consumer's matrix products, so with two consumers the
  // tensor cores wait for it; a third consumer's products fill that wait. Against the variant
  // instance's two consumers (H100, 2026-12-07, docs/benchmarks.md, sessions 81 and 82): softcap
  // 50 over 8k tokens at head_dim 128 2.25-2.33 -> 2.02-2.05 ms non-causal, 1.19-1.21 -> 1.06-1.07
  // ms causal; at 64 3.78-3.82 -> 3.31-3.32 and 1.91-1.93 -> 1.71-1.74; at 96 2.87-2.91 ->
  // 2.54-2.58 and 1.48-1.49 -> 1.35; Gemma 2 27B's local layer (head_dim 128, window 4096) 1.85-1.88
  // -> 1.69-1.71 ms. Moving 4 of every 8 of its exponentials to the FMA pipe lost 7-8% (session 82).
  static constexpr bool kSoftcap3 = kTmaOnly && !kPersistent && P::kBoundedSoftcap;
  static constexpr bool kPFromSmem = (kWide && kNonCausal && kHeadDim == 96) || kSoftcap3;
  // The paged twin's persistent instance (a CTA an SM drawing its work tiles; short paged calls).
  static constexpr bool kPagedPersistent = kPersistent && kTmaOnly && P::kPagesOnly;
  // The persistent kernel at head_dim 64 with plain scores (no window, score transform or sinks)
  // over dense K/V, or over whole pages in the paged twin's persistent instance: where the row
  // sums by the tensor cores and the lagged turns below apply. In the paged instance both
  // together +5-11% over sequences of 512-1k tokens in pages of 16 (H100, session 69,
  // docs/benchmarks.md; the row sums alone level to +4%).
  static constexpr bool kPlainPersistent64 = kPersistent && kHeadDim == 64 && !P::kBand && !P::kScoreMods &&
                                             !P::kSinks && !P::kAlibiOnly && (!P::kIndexedKV || kPagedPersistent);
  // Row sums by the tensor cores in the persistent kernel at head_dim 64, plain scores: O += P V
  // with 8 more columns, of ones (Sm90Config::kSumByMma), adds up each row's P, and the softmax
  // drops its adds (64 of a K/V tile's ~500 instructions per thread, where the softmax is bound
  // by issue slots) for 12.5% more P V work. H200, 2026-12-03 (docs/bench-history/2026-12-03.md): non-causal
  // 512 and 1k tokens +5-6%, causal +0.5-2.5%; in the TMA-only instance (2k tokens and up;
  // 24 bytes of spills beside its third consumer) 1-5% slower.
  static constexpr bool kSumByMma = kPlainPersistent64;
  static constexpr int kConsumerWGs = (kWide && (kHeadDim == 64 || kPFromSmem)) || kSoftcap3 ? 3 : 2;
  static constexpr int kBlockN = kHeadDim == 256            ? (kPersistent ? 64 : 80)
                                 : kHeadDim == 192          ? 112
                                 : kPFromSmem               ? 128
                                 : kWide && kHeadDim == 96  ? 192
                                 : kWide && kHeadDim == 128 ? 176
                                                            : 128;
  // Q buffers of the persistent kernel: at head_dim 96, plain scores, it trades a K/V stage for
  // a second one (3 stages, 192 KB), so the next work tile's loads need not wait for this one's
  // last Q K^T: +2-3% at 1k tokens. At 64 alone level (-0.3-0.8%; it serves the lagged turns
  // below); not at 128, which has room for a second Q buffer only beside 2 stages of 128 keys
  // (-2-3% non-causal) or 3 of 96 keys (-12-17%) (H200, 2026-12-01,
  // docs/bench-raw/2026-12-01h-h200-double-q-ab.txt). The variant instances were not measured
  // with it.
  // Lagged turns (persistent kernel, head_dim 64, plain scores): the second consumer runs
  // kLagTurns turns behind the first, so that their work tiles' edges (a turn of P V alone, then
  // one of Q K^T alone, whose softmax has only the other consumer's turn to hide behind) no
  // longer fall together. It takes a second Q buffer (the first consumer starts the next work
  // tile while the second still reads this one's Q) and kLagTurns more K/V stages. H200,
  // 2026-12-02 (docs/bench-history/2026-12-02.md, 14:15-15:30): non-causal 512-1k tokens +3.3-4.1% (bf16 and
  // fp16); causal calls lag by one turn (by two: -3-4%; by none, beside the five stages and the
  // second Q buffer: -0-1.7%). Three turns, six stages: -3.5% at 512 tokens. Lagged at 128 too,
  // whose ring then holds 64-key tiles only: -19%.
  static constexpr int kLagTurns = kPlainPersistent64 ? 2 : 0;
  // The paged twin's persistent instance (up to head_dim 128) takes a second Q buffer too, so
  // that a work tile's Q and K/V loads need not wait for the last tile's last Q K^T: at 128
  // beside 2 stages. Short paged calls (H100, session 69, docs/benchmarks.md): 64 causal +7.5%,
  // non-causal -3%, 96 non-causal -2%; 128 non-causal +2-6% (at 64 it then serves the lagged
  // turns).
  static constexpr int kQBuffers =
      kLagTurns > 0 || (kPersistent && kHeadDim == 96 && !P::kAny) || (kPagedPersistent && kHeadDim <= 128) ? 2 : 1;
  static constexpr int kStages = kLagTurns > 0                                   ? kLagTurns + 3
                                 : kPFromSmem || kBlockN > 128 || kHeadDim > 128 ? 2
                                 : kHeadDim == 128 && kQBuffers == 2             ? 2
                                 : kHeadDim == 128 || kQBuffers == 2             ? 3
                                                                                 : 4;
};
// kNonCausal: the tiles of an instance for calls without the causal mask (the mask itself stays
// a run-time flag: such an instance still computes causal calls correctly).
template <int kHeadDim, bool kPersistent, bool kTmaOnly, class P, bool kNonCausal = false,
          class Tiles = Sm90Tiles<kHeadDim, kPersistent, kTmaOnly, P, kNonCausal>>
using Sm90PrefillConfig =
    Sm90Config<kHeadDim, Tiles::kBlockN, Tiles::kStages, kPersistent, kTmaOnly, Tiles::kConsumerWGs, Tiles::kQBuffers,
               Tiles::kLagTurns, Tiles::kPFromSmem, Tiles::kSumByMma>;

}  // namespace forge_flash
