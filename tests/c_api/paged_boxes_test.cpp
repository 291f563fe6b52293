// paged_boxes_fit (csrc/kernels/paged_boxes.h) against the TMA loads it stands for, simulated:
// the Hopper paged twin loads K/V tile t (keys [t * block_n, (t + 1) * block_n)) as boxes of
// min(page_size, block_n) rows, box i from key t * block_n + i * box, each at its page's block
// id, the row within the page found by key & (page_size - 1). That is right only where every
// box lies within one page, the boxes tile the tile exactly, the page size is a power of two
// (the shift and mask) and a box fills a 128-byte swizzle atom's 8 rows. Every page size of
// 1-1024 rows and the K/V tiles the kernels use (and a few more) over 64 tiles. Prints the
// first failures and exits non-zero on any. Run by tests/c_api/test_paged_boxes.py.
#include "../../csrc/kernels/paged_boxes.h"

#include <algorithm>
#include <cstdio>

namespace {

bool loads_are_right(int page_size, int block_n) {
  if (page_size < 8 || (page_size & (page_size - 1)) != 0) return false;
  const int box = std::min(page_size, block_n);
  if (block_n % box != 0) return false;  // the boxes must cover the tile exactly
  for (int t = 0; t < 64; ++t)
    for (int first = t * block_n; first < (t + 1) * block_n; first += box) {
      const int last = first + box - 1;
      if (first / page_size != last / page_size) return false;  // a box across two pages
      if ((first & (page_size - 1)) != first % page_size) return false;
    }
  return true;
}

}  // namespace

int main() {
  int failures = 0, fits = 0;
  const int tiles[] = {16, 64, 80, 96, 112, 128, 160, 176, 192, 256};
  for (int block_n : tiles)
    for (int page_size = 1; page_size <= 1024; ++page_size) {
      const bool got = forge_flash::paged_boxes_fit(page_size, block_n);
      fits += got;
      if (got != loads_are_right(page_size, block_n) && failures++ < 10)
        std::printf("FAIL page_size %d, block_n %d: paged_boxes_fit says %d\n", page_size, block_n, got);
    }
  // The head dims' tiles take the pages their comments name.
  static_assert(forge_flash::paged_boxes_fit(16, 80) && forge_flash::paged_boxes_fit(8, 112));
  static_assert(!forge_flash::paged_boxes_fit(32, 80) && !forge_flash::paged_boxes_fit(64, 112));
  static_assert(forge_flash::paged_boxes_fit(256, 128) && !forge_flash::paged_boxes_fit(4, 128));
  if (failures) return 1;
  std::printf("all hold (%d fitting pairs)\n", fits);
  return 0;
}
