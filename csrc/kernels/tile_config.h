// Tile shapes of the forward kernel, and the head dimensions we instantiate.
#pragma once

namespace forge_flash {

// Shared-memory row pitch of a tile with kHeadDim columns: a power of two of at least 64
// elements (128 bytes), so that the XOR swizzle (chunk c of row r lives at chunk c ^ (r % 8))
// stays inside the row and a thread's chunk column stays fixed while it copies a tile.
constexpr int row_pitch(int head_dim) { return head_dim <= 64 ? 64 : head_dim <= 128 ? 128 : 256; }

// The least shared memory a CTA may opt into on a GPU the SM80 kernels run on (SM86 and SM89:
// 99 KB; A100 163 KB, H100 227 KB).
constexpr int kSmallestSmemOptin = 99 * 1024;
// The most a CTA may opt into on SM90 (H100/H200), for tiles only Hopper launches.
constexpr int kHopperSmemOptin = 227 * 1024;

// kHeadDim: the instantiated head dimension (a multiple of 32); smaller real head
// dimensions are routed up to it with predicated loads and stores.
// kBlockM query rows x kBlockN keys per tile; each warp owns kBlockM / kNWarps rows, as
// kMTiles m16 MMA tiles, so the softmax never needs a cross-warp reduction.
template <int kHeadDim_, int kBlockM_, int kBlockN_, int kNWarps_>
struct TileConfig {
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kBlockM = kBlockM_;
  static constexpr int kBlockN = kBlockN_;
  static constexpr int kNWarps = kNWarps_;
  static constexpr int kNThreads = kNWarps * 32;
  static constexpr int kMTiles = kBlockM / (16 * kNWarps);
  static_assert(kHeadDim % 32 == 0 && kHeadDim <= 256, "head dim tiles are multiples of 32");
  static_assert(kBlockM % (16 * kNWarps) == 0, "each warp owns whole m16 tiles");
  static_assert(kBlockN % 16 == 0, "keys come in k16 MMA steps");

  static constexpr int kChunks = kHeadDim / 8;  // 16-byte chunks per row that carry data
  static constexpr int kRowPitch = row_pitch(kHeadDim);
  static constexpr int kSmemQElems = kBlockM * kRowPitch;
  static constexpr int kSmemKVElems = kBlockN * kRowPitch;
  static constexpr int kSmemBytes = (kSmemQElems + 2 * kSmemKVElems) * 2;
  static_assert(kSmemBytes <= kSmallestSmemOptin, "a CTA fits every SM80+ GPU");
  static constexpr int kKvTilesPerStep = 1;  // K/V tiles the CTA works on at once
};

// Prefill tiles: the published SM80 choices (128x128 for small heads, 128x64 up to 128,
// 64x64 beyond, 4 warps).
template <int kHeadDim>
using PrefillConfig = TileConfig<kHeadDim, (kHeadDim <= 128 ? 128 : 64), 64, 4>;

// Decode tiles (decode_kernel.cuh): 16 query rows (one token, or the query heads of one GQA
// group folded into rows) shared by kNWarps warps, each walking its own K/V tiles of kBlockN
// keys in its own K and V buffers; the warps' partial results merge in shared memory. The CTA
// has kNWarps K/V tiles in flight and kNWarps tensor-core quadrants busy, where a single warp
// had one and one.
// kHopperOnly: tiles only Hopper GPUs launch (dispatch.cu), which may take more shared memory.
template <int kHeadDim_, int kBlockN_, int kNWarps_, bool kHopperOnly_ = false>
struct DecodeTileConfig {
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr bool kHopperOnly = kHopperOnly_;
  static constexpr int kBlockM = 16;
  static constexpr int kBlockN = kBlockN_;  // keys per warp tile
  static constexpr int kNWarps = kNWarps_;
  static constexpr int kNThreads = kNWarps * 32;
  static_assert(kHeadDim % 32 == 0 && kHeadDim <= 256, "head dim tiles are multiples of 32");
  static_assert(kBlockN % 16 == 0, "keys come in k16 MMA steps");

  static constexpr int kChunks = kHeadDim / 8;
  static constexpr int kRowPitch = row_pitch(kHeadDim);
  // A warp copies its K/V tile as 32 / (kRowPitch / 8) groups of lanes, each one 16-byte chunk
  // column of kLaneRows consecutive rows (load_kv_tile_paged_warp): pages of at least that
  // many keys hold a lane's rows whole.
  static constexpr int kLaneRows = kBlockN / (32 / (kRowPitch / 8));
  static constexpr int kSmemQElems = kBlockM * kRowPitch;
  static constexpr int kSmemKVElems = kBlockN * kRowPitch;  // one warp's K (or V) tile
  // The merge reuses the Q and K/V buffers: each warp's fp32 partial O (rows padded by 8
  // floats against bank conflicts), its rows' max, sum and merge factor, and the merged LSE.
  static constexpr int kPartialPitch = kHeadDim + 8;
  static constexpr int kMergeBytes = (kNWarps * kBlockM * (kPartialPitch + 3) + kBlockM) * 4;
  static constexpr int kTileBytes = (kSmemQElems + 2 * kNWarps * kSmemKVElems) * 2;
  static constexpr int kSmemBytes = kTileBytes > kMergeBytes ? kTileBytes : kMergeBytes;
  static_assert(kSmemBytes <= (kHopperOnly ? kHopperSmemOptin : kSmallestSmemOptin), "a CTA fits its GPUs");
  static constexpr int kKvTilesPerStep = kNWarps;
};

// 4 warps of 32-key tiles up to head_dim 128 (16 above): 68-72 KB. Measured on the H100
// (docs/benchmarks.md): CTAs above 113 KB (one per SM) let it hold only 7 clusters of 16 at
// once, so a decode over 8 KV heads ran in two waves (4 warps of 64 keys: 50% longer at 4k
// keys); 8 warps of 16 keys also fill 132 KB; 2 warps of 64 keys were 0-6% slower.
template <int kHeadDim>
using DecodeConfig = DecodeTileConfig<kHeadDim, (kHeadDim <= 128 ? 32 : 16), 4>;

// The same tiles in CTAs of 3 warps, for Hopper decode grids that fill the GPU (dispatch.cu,
// plan_fwd): 53 KB and 96 threads of 160-168 registers at head_dim 128, so an SM holds 4 of
// them where it holds 3 of DecodeConfig's (shared memory), 12 warps either way; batch 64 over
// 4k keys (512 CTAs) then runs in one wave instead of 1.29. Hopper-only: no SM80 code.
template <int kHeadDim>
using DecodeFullGridConfig = DecodeTileConfig<kHeadDim, 32, 3, true>;

// The same tiles in CTAs of 8 warps, for Hopper decode grids of at most one wave of them
// (dispatch.cu, takes_wide_decode): 132 KB at head_dim 96 and 128 (one per SM), 66 KB at 64 (two
// per SM, by registers); twice the K/V tiles in flight of a 4-warp CTA, and two warps per
// scheduler to hide each other's waits.
template <int kHeadDim>
using DecodeWideConfig = DecodeTileConfig<kHeadDim, 32, 8, true>;

// The head dims compiled in the 3- and 8-warp shapes: 64, 96 and 128, the ones measured and
// tested (32-key tiles; not 32, whose occupancy was not).
constexpr bool has_hopper_decode_shapes(int head_dim) { return head_dim == 64 || head_dim == 96 || head_dim == 128; }

}  // namespace forge_flash
