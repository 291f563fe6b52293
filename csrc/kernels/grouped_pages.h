// The TMA map of a paged cache for the Hopper paged twin's grouped K/V tiles, and where each of
// a tile's boxes loads from and lands (host and device arithmetic only: tma_maps.cu encodes the
// map, sm90/fwd_kernel_sm90.cuh issues the loads, tests/c_api/grouped_pages_test.cpp simulates
// them on the host).
//
// The grouped tile (sm90::GroupedTile in sm90/wgmma.cuh) keeps each 8-row group's column blocks
// together: column block c (swizzle bytes of a row) of group g at c * 8 * swizzle + g * blocks *
// 8 * swizzle. A box of a page's rows then is one TMA load, where the blocked tile takes one
// per column block.
#pragma once

#include <cstdint>

#include "host_device.h"

namespace forge_flash {

// TMA's rule for a map's strides (every map tma_maps.cu encodes): 16-byte multiples below 2^40.
inline bool tma_stride_ok(uint64_t bytes) { return bytes != 0 && bytes % 16 == 0 && bytes < (uint64_t{1} << 40); }

// A five-dimensional map, innermost first: a column block's columns (swizzle / 2), 8 rows (the
// row stride), the column blocks of every head (heads * head_dim * 2 / swizzle, stride = the
// swizzle width: a row's heads lie back to back, so head h's block c is block h * blocks + c of
// the row), the page's 8-row groups (8 row strides), the blocks (the block stride). Its boxes
// (swizzle / 2, 8, blocks, box_rows / 8, 1) land in shared memory group by group, each group's
// column blocks in turn: the grouped tile's order. Strides in bytes, as the driver takes them.
struct GroupedPagesMap {
  uint64_t dims[5], strides[4];
  uint32_t box[5];
};

// The map of a (num_blocks, page_size, heads, head_dim) cache with element strides (head, row,
// block), or false where it cannot hold one: columns the tile zero-fills (head_dim * 2 not a
// multiple of the swizzle), heads not back to back (head stride != head_dim), pages or boxes not
// whole 8-row groups, or strides TMA refuses (16-byte multiples below 2^40).
inline bool grouped_pages_map(int head_dim, int heads, int page_size, int num_blocks, const int64_t (&strides)[3],
                              int swizzle, int box_rows, GroupedPagesMap* map) {
  if (swizzle != 64 && swizzle != 128) return false;
  if (head_dim <= 0 || head_dim * 2 % swizzle != 0 || strides[0] != head_dim || page_size % 8 != 0 ||
      box_rows % 8 != 0 || box_rows <= 0 || box_rows > page_size || heads <= 0 || num_blocks <= 0)
    return false;
  if (strides[1] <= 0 || strides[2] <= 0) return false;
  const int blocks = head_dim * 2 / swizzle;
  const uint64_t row = static_cast<uint64_t>(strides[1]) * 2, block = static_cast<uint64_t>(strides[2]) * 2;
  const GroupedPagesMap m{
      {static_cast<uint64_t>(swizzle / 2), 8, static_cast<uint64_t>(heads) * blocks,
       static_cast<uint64_t>(page_size / 8), static_cast<uint64_t>(num_blocks)},
      {row, static_cast<uint64_t>(swizzle), 8 * row, block},
      {static_cast<uint32_t>(swizzle / 2), 8, static_cast<uint32_t>(blocks), static_cast<uint32_t>(box_rows / 8), 1}};
  for (uint64_t s : m.strides)
    if (!tma_stride_ok(s)) return false;
  *map = m;
  return true;
}

// The load of one box: the rows [key, key + box_rows) of a page (key_in_page = key's row in its
// page, a multiple of 8), head kv_head's every column block, landing tile_row (the box's first
// row in the K/V tile, a multiple of 8) / 8 groups into the grouped tile. The block coordinate is
// the page's block id (the caller's).
struct GroupedBoxLoad {
  int coords[4];         // the map's first four coordinates (the fifth: the block id)
  uint32_t smem_offset;  // bytes into the tile
};
FF_HOST_DEVICE_INLINE GroupedBoxLoad grouped_box_load(int kv_head, int blocks, int key_in_page, int tile_row,
                                                      int group_stride) {
  return {{0, 0, kv_head * blocks, key_in_page / 8}, static_cast<uint32_t>(tile_row / 8 * group_stride)};
}

}  // namespace forge_flash
