// Which page sizes of a paged cache the Hopper kernel's TMA tile loads take (host and device
// arithmetic only: tests/c_api/paged_boxes_test.cpp checks it on the host).
#pragma once

namespace forge_flash {

// Whether a paged cache's pages fit the K/V tiles of block_n keys as TMA boxes of
// min(page_size, block_n) rows, each within one page: pages of at least 8 rows (a box fills a
// swizzle atom), a power of two (the producer finds a key's page and row by shift and mask),
// and either a whole number of them per tile (smaller pages) or
// of tiles per page (larger ones). Tiles of 80 keys (head_dim 256) and 112 (192) take pages of 8
// and 16; tiles of 128 every power of two from 8.
constexpr bool paged_boxes_fit(int page_size, int block_n) {
  return page_size >= 8 && (page_size & (page_size - 1)) == 0 && block_n > 0 &&
         (page_size <= block_n ? block_n % page_size == 0 : page_size % block_n == 0);
}

}  // namespace forge_flash
