// Encoding the TMA tensor maps of one forward call. The driver's encoder is reached through
// the runtime (cudaGetDriverEntryPoint), so the plugin still links no libcuda: the driver
// that runs the kernels provides it.
//
// Encoding costs the host 2-3 us a map (H200 machine, 2026-12-01: a small prefill call took
// 19-21 us instead of 12 with three fresh maps per call), so each thread keeps the maps it
// encoded: a call with the same shape, strides and box reuses its map, and where only the
// tensor's address moved, the driver patches the address into a copy (cuTensorMapReplaceAddress).
#include <cuda.h>
#include <cudaTypedefs.h>

#include <cstdint>
#include <cstring>

#include "grouped_pages.h"
#include "tma_maps.h"

namespace forge_flash {
namespace {

template <typename Fn>
Fn driver_entry(const char* name) {
  void* entry = nullptr;
  cudaDriverEntryPointQueryResult found{};
#if CUDART_VERSION >= 12050
  const cudaError_t err = cudaGetDriverEntryPointByVersion(name, &entry, 12000, cudaEnableDefault, &found);
#else
  const cudaError_t err = cudaGetDriverEntryPoint(name, &entry, cudaEnableDefault, &found);
#endif
  if (err != cudaSuccess || found != cudaDriverEntryPointSuccess) {
    cudaGetLastError();  // no entry point: the copies serve every call
    entry = nullptr;
  }
  return reinterpret_cast<Fn>(entry);
}

struct Driver {
  PFN_cuTensorMapEncodeTiled_v12000 encode;
  PFN_cuTensorMapReplaceAddress_v12000 replace_address;
};
const Driver& driver() {
  static const Driver d{driver_entry<PFN_cuTensorMapEncodeTiled_v12000>("cuTensorMapEncodeTiled"),
                        driver_entry<PFN_cuTensorMapReplaceAddress_v12000>("cuTensorMapReplaceAddress")};
  return d;
}

// Everything a map encodes but the address: rank 4 (head_dim, heads, rows, batch) or 5 (the
// grouped paged map below), each box's extents and the swizzle.
struct MapShape {
  uint64_t dims[5], strides[4];
  uint32_t box[5];
  int rank, swizzle;
  bool bf16;
  bool operator==(const MapShape& o) const {
    return std::memcmp(dims, o.dims, sizeof dims) == 0 && std::memcmp(strides, o.strides, sizeof strides) == 0 &&
           std::memcmp(box, o.box, sizeof box) == 0 && rank == o.rank && swizzle == o.swizzle && bf16 == o.bf16;
  }
};
struct CachedMap {
  MapShape shape;
  const void* data;
  TmaDescriptor map;
};
constexpr int kCachedMaps = 16;  // Q, K, V of a few call shapes
thread_local CachedMap cached[kCachedMaps];
thread_local int cached_count = 0, next_slot = 0;

bool encode_new(TmaDescriptor* map, const MapShape& s, const void* data) {
  const cuuint32_t unit[5] = {1, 1, 1, 1, 1};
  return driver().encode(reinterpret_cast<CUtensorMap*>(map),
                         s.bf16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16,
                         static_cast<cuuint32_t>(s.rank), const_cast<void*>(data), s.dims, s.strides, s.box, unit,
                         CU_TENSOR_MAP_INTERLEAVE_NONE,
                         s.swizzle == 128 ? CU_TENSOR_MAP_SWIZZLE_128B : CU_TENSOR_MAP_SWIZZLE_64B,
                         CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

// The map of `s` at `data`: from the cache, with its address replaced, or newly encoded.
bool find_or_encode(TmaDescriptor* map, const MapShape& s, const void* data) {
  for (int i = 0; i < cached_count; ++i) {
    CachedMap& c = cached[i];
    if (!(c.shape == s)) continue;
    if (c.data != data) {
      const bool moved =
          driver().replace_address != nullptr &&
          driver().replace_address(reinterpret_cast<CUtensorMap*>(&c.map), const_cast<void*>(data)) == CUDA_SUCCESS;
      if (!moved && !encode_new(&c.map, s, data)) {
        c.shape = MapShape{};  // dims of 0: the slot matches no call until it is reused
        return false;
      }
      c.data = data;
    }
    *map = c.map;
    return true;
  }
  if (!encode_new(map, s, data)) return false;
  CachedMap& slot = cached[next_slot];
  slot = {s, data, *map};
  next_slot = (next_slot + 1) % kCachedMaps;
  if (cached_count < kCachedMaps) ++cached_count;
  return true;
}

// One (head_dim, heads, rows, batch) tensor with element strides in `strides` (head, row,
// batch), boxes of one column block (`swizzle` bytes) by box_rows rows. TMA wants 16-byte
// multiples; a dimension of extent 1 never steps, so its stride is replaced by a packed one (a
// broadcast or odd stride there would otherwise refuse the map).
bool encode(TmaDescriptor* map, const void* data, bool bf16, int head_dim, int heads, int rows, int batch,
            const int64_t (&strides)[3], int swizzle, int box_rows) {
  MapShape s{};
  const int extents[4] = {head_dim, heads, rows, batch};
  for (int i = 0; i < 4; ++i) s.dims[i] = static_cast<uint64_t>(extents[i]);
  uint64_t packed = static_cast<uint64_t>(head_dim) * 2;
  for (int i = 0; i < 3; ++i) {
    packed = (packed + 15) / 16 * 16;
    s.strides[i] = s.dims[i + 1] == 1 ? packed : static_cast<uint64_t>(strides[i]) * 2;
    if (strides[i] < 0 || !tma_stride_ok(s.strides[i])) return false;
    packed = s.strides[i] * s.dims[i + 1];
  }
  if (reinterpret_cast<uintptr_t>(data) % 16 != 0) return false;
  const uint32_t box[5] = {static_cast<uint32_t>(swizzle / 2), 1, static_cast<uint32_t>(box_rows), 1, 1};
  std::memcpy(s.box, box, sizeof box);
  s.rank = 4;
  s.swizzle = swizzle;
  s.bf16 = bf16;
  return find_or_encode(map, s, data);
}

// A paged cache's grouped map (grouped_pages.h: one box a page's rows, every column block of
// a head, for the PagedKV twin's grouped K/V tiles).
bool encode_grouped_pages(TmaDescriptor* map, const void* data, bool bf16, int head_dim, int heads, int page_size,
                          int num_blocks, const int64_t (&strides)[3], int swizzle, int box_rows) {
  GroupedPagesMap m{};
  if (!grouped_pages_map(head_dim, heads, page_size, num_blocks, strides, swizzle, box_rows, &m) ||
      reinterpret_cast<uintptr_t>(data) % 16 != 0)
    return false;
  MapShape s{};
  std::memcpy(s.dims, m.dims, sizeof s.dims);
  std::memcpy(s.strides, m.strides, sizeof s.strides);
  std::memcpy(s.box, m.box, sizeof s.box);
  s.rank = 5;
  s.swizzle = swizzle;
  s.bf16 = bf16;
  return find_or_encode(map, s, data);
}

}  // namespace

bool set_tma_maps(FwdParams& p, bool bf16, const KernelInfo& k, KvMaps kv) {
  p.tma = p.tma_grouped_pages = false;
  const int swizzle = k.tma_swizzle, block_m = k.block_m, block_n = k.block_n;
  if (swizzle != 64 && swizzle != 128) return false;
  const bool packed = kv != KvMaps::kDense, paged = kv == KvMaps::kPaged;  // Q packed in both varlen layouts
  const bool varlen = p.cu_seqlens_q != nullptr || p.cu_seqlens_k != nullptr;
  if (varlen != packed ||
      (packed && (p.cu_seqlens_q == nullptr || p.cu_seqlens_k == nullptr || p.kv_batch_idx != nullptr)))
    return false;
  if (paged != (p.block_table != nullptr) || (paged && !paged_boxes_fit(p.page_size, block_n))) return false;
  if (p.seqused_k != nullptr || p.k_start != nullptr || p.pack_gqa || p.seqlen_new > 0 || driver().encode == nullptr)
    return false;
  const int64_t q_strides[3] = {p.q_head_stride, p.q_row_stride, p.q_batch_stride};
  const int64_t k_strides[3] = {p.k_head_stride, p.k_row_stride, p.k_batch_stride};  // kPaged: a block's stride
  const int64_t v_strides[3] = {p.v_head_stride, p.v_row_stride, p.v_batch_stride};
  const int q_rows = packed ? p.total_q : p.seqlen_q, q_batch = packed ? 1 : p.batch;
  p.tma = encode(&p.tma_q, p.q, bf16, p.head_dim, p.num_heads, q_rows, q_batch, q_strides, swizzle, block_m);
  // K's map and V's alike: `one` encodes a map of the cache at `data` with element strides `s`.
  auto k_and_v = [&](auto&& one) { return one(&p.tma_k, p.k, k_strides) && one(&p.tma_v, p.v, v_strides); };
  if (paged) {
    // The grouped maps, boxes of paged_box_rows rows (within a page: paged_boxes.h); where they
    // do not encode (zero-filled columns, heads apart), maps of (head_dim, heads_k, page_size,
    // num_blocks) whose boxes are one column block of one 8-row group: the twin then issues
    // blocks x rows / 8 loads a box, each filling its place in the grouped tile. Tiles of one
    // column block a row take those maps with boxes of the page's rows: their grouped tile is
    // the blocked one.
    const int box = paged_box_rows(p.page_size, block_n);
    auto pages_by = [&](int rows) {
      return k_and_v([&](TmaDescriptor* map, const void* data, const int64_t (&s)[3]) {
        return encode(map, data, bf16, p.head_dim, p.num_heads_k, p.page_size, p.num_blocks, s, swizzle, rows);
      });
    };
    if (k.tma_row_blocks == 1) return p.tma = p.tma && pages_by(box);
    p.tma_grouped_pages = k_and_v([&](TmaDescriptor* map, const void* data, const int64_t (&s)[3]) {
      return encode_grouped_pages(map, data, bf16, p.head_dim, p.num_heads_k, p.page_size, p.num_blocks, s, swizzle,
                                  box);
    });
    return p.tma = p.tma && (p.tma_grouped_pages || pages_by(8));
  }
  // K/V batch rows: a call with kv_batch_idx reads rows of a cache with kv_batch_rows of them.
  // Packed: one batch of every sequence's rows.
  const int kv_batch = packed ? 1 : p.kv_batch_idx != nullptr ? p.kv_batch_rows : p.batch;
  const int k_rows = packed ? p.total_k : p.seqlen_k;
  p.tma = p.tma && k_and_v([&](TmaDescriptor* map, const void* data, const int64_t (&s)[3]) {
            return encode(map, data, bf16, p.head_dim, p.num_heads_k, k_rows, kv_batch, s, swizzle, block_n);
          });
  return p.tma;
}

}  // namespace forge_flash
