// Which page sizes of a paged cache the Hopper kernel's TMA tile loads take, and the boxes they
// load them as (host and device arithmetic only: tests/c_api/paged_boxes_test.cpp checks it on
// the host).
#pragma once

#include "host_device.h"

namespace forge_flash {

// The rows of each TMA box of a K/V tile of block_n keys over pages of page_size rows (a power
// of two): the largest power of two that divides both, so that the boxes tile the tile exactly
// and none crosses a page (a tile starts at a multiple of block_n keys). Tiles of 128 keys take
// boxes of min(page_size, 128) rows; tiles of 80 (head_dim 256) and 112 (192), whose largest
// power-of-two divisor is 16, boxes of 8 rows over pages of 8 and of 16 over larger pages (five
// and seven boxes a tile).
FF_HOST_DEVICE constexpr int paged_box_rows(int page_size, int block_n) {
  const int low_bit = block_n & -block_n;
  return page_size < low_bit ? page_size : low_bit;
}

// Whether a paged cache's pages fit the K/V tiles of block_n keys as such boxes: pages a power
// of two (the producer finds a key's page and row by shift and mask), boxes of at least 8 rows
// (a box fills a swizzle atom) and at most 32 of them a tile (the producer warp's lanes issue a
// box each). Every power of two from 8 fits the tiles the kernels use (80, 112 and 128 keys).
constexpr bool paged_boxes_fit(int page_size, int block_n) {
  if (page_size < 8 || (page_size & (page_size - 1)) != 0 || block_n <= 0) return false;
  const int box = paged_box_rows(page_size, block_n);
  return box >= 8 && block_n / box <= 32;
}

}  // namespace forge_flash
