// paged_boxes_fit and paged_box_rows (csrc/kernels/paged_boxes.h) against the TMA loads they
// stand for, simulated: the Hopper paged twin loads K/V tile t (keys [t * block_n, (t + 1) *
// block_n)) as boxes of `box` rows, box i from key t * block_n + i * box, each at its page's block
// id, the row within the page found by key & (page_size - 1), one producer lane a box. That is
// right only where every box lies within one page, the boxes tile the tile exactly, the page size
// is a power of two (the shift and mask), a box fills a 128-byte swizzle atom's 8 rows and there
// are at most 32 boxes. For every page size of 1-1024 rows and the K/V tiles the kernels use (and
// a few more), over 64 tiles: the rule must say yes exactly where some box size makes the loads
// right, and where it does, its box size must. Prints the first failures and exits non-zero on
// any. Run by tests/c_api/test_paged_boxes.py.
#include "../../csrc/kernels/paged_boxes.h"

#include <cstdio>

namespace {

bool loads_are_right(int page_size, int block_n, int box) {
  if (page_size < 8 || (page_size & (page_size - 1)) != 0) return false;
  // a swizzle atom's 8 rows a box, the tile covered exactly, a lane a box
  if (box < 8 || block_n % box != 0 || block_n / box > 32) return false;
  for (int t = 0; t < 64; ++t)
    for (int first = t * block_n; first < (t + 1) * block_n; first += box) {
      const int last = first + box - 1;
      if (first / page_size != last / page_size) return false;  // a box across two pages
      if ((first & (page_size - 1)) != first % page_size) return false;
    }
  return true;
}

bool some_box_is_right(int page_size, int block_n) {
  for (int box = 1; box <= block_n; ++box)
    if (loads_are_right(page_size, block_n, box)) return true;
  return false;
}

}  // namespace

int main() {
  int failures = 0, fits = 0;
  const int tiles[] = {16, 64, 80, 96, 112, 128, 160, 176, 192, 256};
  for (int block_n : tiles)
    for (int page_size = 1; page_size <= 1024; ++page_size) {
      const bool got = forge_flash::paged_boxes_fit(page_size, block_n);
      fits += got;
      const bool right = got ? loads_are_right(page_size, block_n, forge_flash::paged_box_rows(page_size, block_n))
                             : !some_box_is_right(page_size, block_n);
      if (!right && failures++ < 10)
        std::printf("FAIL page_size %d, block_n %d: paged_boxes_fit says %d, box %d\n", page_size, block_n, got,
                    forge_flash::paged_box_rows(page_size, block_n));
    }
  // The head dims' tiles take the pages and boxes their comments name.
  static_assert(forge_flash::paged_boxes_fit(16, 80) && forge_flash::paged_boxes_fit(8, 112));
  static_assert(forge_flash::paged_boxes_fit(32, 80) && forge_flash::paged_box_rows(256, 80) == 16);
  static_assert(forge_flash::paged_box_rows(64, 112) == 16 && forge_flash::paged_box_rows(8, 80) == 8);
  static_assert(forge_flash::paged_boxes_fit(256, 128) && forge_flash::paged_box_rows(256, 128) == 128);
  static_assert(!forge_flash::paged_boxes_fit(4, 128) && !forge_flash::paged_boxes_fit(24, 80));
  if (failures) return 1;
  std::printf("all hold (%d fitting pairs)\n", fits);
  return 0;
}
