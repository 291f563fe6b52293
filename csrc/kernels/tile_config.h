// Tile shapes of the forward kernel, and the head dimensions we instantiate.
#pragma once

namespace forge_flash {

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

  // 16-byte chunks per row that carry data, and the shared-memory row pitch: a power of
  // two of at least 64 elements (128 bytes), so that the XOR swizzle (chunk c of row r
  // lives at chunk c ^ (r % 8)) stays inside the row and a thread's chunk column stays
  // fixed while it copies a tile.
  static constexpr int kChunks = kHeadDim / 8;
  static constexpr int kRowPitch = kHeadDim <= 64 ? 64 : kHeadDim <= 128 ? 128 : 256;
  static constexpr int kSmemQElems = kBlockM * kRowPitch;
  static constexpr int kSmemKVElems = kBlockN * kRowPitch;
  static constexpr int kSmemBytes = (kSmemQElems + 2 * kSmemKVElems) * 2;
};

// Prefill tiles: the published SM80 choices (128x128 for small heads, 128x64 up to 128,
// 64x64 beyond, 4 warps).
template <int kHeadDim>
using PrefillConfig = TileConfig<kHeadDim, (kHeadDim <= 128 ? 128 : 64), 64, 4>;

// Decode tiles: at most 16 query rows (one token, or the query heads of one GQA group
// folded into rows), one warp. Many small CTAs plus split-KV keep enough K/V loads in
// flight to run at memory bandwidth; 128-key tiles put twice the bytes of a 64-key tile in
// each load (H100, 32/8 heads, d128: 8-15% less GPU time at 8k-32k keys, 2% at 128k).
// Above head_dim 128 they stay at 64 keys, so the CTA fits the 99 KB of SM86/SM89.
template <int kHeadDim>
using DecodeConfig = TileConfig<kHeadDim, 16, (kHeadDim <= 128 ? 128 : 64), 1>;

}  // namespace forge_flash
