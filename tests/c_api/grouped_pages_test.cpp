// The paged twin's grouped loads (csrc/kernels/grouped_pages.h) against a simulation of the TMA
// unit: each box of a K/V tile, loaded through the map grouped_pages_map encodes at the
// coordinates grouped_box_load gives, element by element as TMA walks a box (innermost
// dimension first, the global address the sum of coordinate times stride, the shared-memory
// address the box's running offset), must put every element of the tile where the grouped tile
// keeps it: row r, column c of the tile at (r / 8) * blocks * 8 * W + (c / (W / 2)) * 8 * W +
// (r % 8) * W + (c % (W / 2)) * 2 bytes (W = the swizzle width, before the swizzle, which only
// permutes 16-byte chunks within a row). Each tile byte written once, every element from its
// own key's page, row, head and column. Over head_dim 64-256, page sizes 8-256, the twin's
// K/V tiles, one and several heads, packed and padded strides; and the map refused where it
// must be. Prints the first failures and exits non-zero on any. Run by
// tests/c_api/test_grouped_pages.py.
#include "../../csrc/kernels/grouped_pages.h"

#include <cstdio>
#include <vector>

#include "../../csrc/kernels/paged_boxes.h"

using namespace forge_flash;

namespace {

int failures = 0;

void fail(const char* what, int head_dim, int heads, int page, int extra) {
  if (++failures <= 8)
    std::printf("FAIL %s: head_dim %d, heads %d, pages of %d (%d)\n", what, head_dim, heads, page, extra);
}

// One cache layout: loads every tile of a sequence of `keys` keys whose pages sit at the block ids
// of `table`, for head kv_head, and checks each element's place.
void check(int head_dim, int heads, int page, int block_n, int row_pad, int block_pad) {
  const int swizzle = head_dim % 64 == 0 ? 128 : 64, blocks = head_dim * 2 / swizzle;
  const int box = paged_box_rows(page, block_n), num_blocks = 2 * 256 / page + 3;
  const int64_t head_stride = head_dim, row_stride = int64_t(heads) * head_dim + row_pad;
  const int64_t block_stride = row_stride * page + block_pad;
  const int64_t strides[3] = {head_stride, row_stride, block_stride};
  GroupedPagesMap m{};
  if (!grouped_pages_map(head_dim, heads, page, num_blocks, strides, swizzle, box, &m)) {
    fail("map refused", head_dim, heads, page, row_pad);
    return;
  }
  const int group_stride = blocks * 8 * swizzle, tile_bytes = block_n * head_dim * 2;
  // A sequence of two tiles' keys, its pages at descending block ids.
  for (int kv_head = 0; kv_head < heads; kv_head += heads > 1 ? heads - 1 : 1)
    for (int t = 0; t < 2; ++t) {
      std::vector<int> written(tile_bytes / 2, 0);
      for (int r = 0; r < block_n; r += box) {  // lane r / box's box
        const int key = t * block_n + r, page_id = num_blocks - 1 - key / page;
        const GroupedBoxLoad g = grouped_box_load(kv_head, blocks, key & (page - 1), r, group_stride);
        const uint64_t c[5] = {uint64_t(g.coords[0]), uint64_t(g.coords[1]), uint64_t(g.coords[2]),
                               uint64_t(g.coords[3]), uint64_t(page_id)};
        uint64_t smem = g.smem_offset;
        for (uint32_t i4 = 0; i4 < m.box[4]; ++i4)
          for (uint32_t i3 = 0; i3 < m.box[3]; ++i3)
            for (uint32_t i2 = 0; i2 < m.box[2]; ++i2)
              for (uint32_t i1 = 0; i1 < m.box[1]; ++i1)
                for (uint32_t i0 = 0; i0 < m.box[0]; ++i0, smem += 2) {
                  const uint64_t at[5] = {c[0] + i0, c[1] + i1, c[2] + i2, c[3] + i3, c[4] + i4};
                  for (int d = 0; d < 5; ++d)
                    if (at[d] >= m.dims[d]) return fail("a box past the map", head_dim, heads, page, d);
                  const uint64_t bytes = at[0] * 2 + at[1] * m.strides[0] + at[2] * m.strides[1] +
                                         at[3] * m.strides[2] + at[4] * m.strides[3];
                  // The element that address holds: block, row in page, head, column.
                  const uint64_t elem = bytes / 2;
                  const int64_t blk = elem / block_stride, in_block = elem % block_stride;
                  const int64_t row = in_block / row_stride, in_row = in_block % row_stride;
                  const int64_t head = in_row / head_stride, col = in_row % head_stride;
                  const int tile_row = r + int(row) - (key & (page - 1));
                  if (blk != page_id || head != kv_head || col >= head_dim || tile_row < r || tile_row >= r + box) {
                    fail("an element from the wrong place", head_dim, heads, page, int(col));
                    return;
                  }
                  const int64_t want = (tile_row / 8) * group_stride + (col / (swizzle / 2)) * 8 * swizzle +
                                       (tile_row % 8) * swizzle + (col % (swizzle / 2)) * 2;
                  if (int64_t(smem) != want) {
                    fail("an element in the wrong place", head_dim, heads, page, tile_row);
                    return;
                  }
                  ++written[smem / 2];
                }
      }
      for (int x : written)
        if (x != 1) return fail("a tile element written other than once", head_dim, heads, page, x);
    }
}

}  // namespace

int main() {
  const struct {
    int head_dim, block_n;
  } twins[] = {{64, 128}, {96, 128}, {128, 128}, {192, 112}, {256, 80}};
  int cases = 0;
  for (const auto& tw : twins)
    for (int page : {8, 16, 32, 64, 128, 256})
      for (int heads : {1, 3, 8})
        for (int pad : {0, 8}) {
          check(tw.head_dim, heads, page, tw.block_n, pad, pad * 4);
          ++cases;
        }
  // Refused: zero-filled columns, heads apart, pages or boxes not whole groups, odd strides.
  GroupedPagesMap m{};
  const int64_t packed96[3] = {96, 96 * 4, 96 * 4 * 16}, packed80[3] = {80, 80 * 4, 80 * 4 * 16};
  const int64_t apart[3] = {192, 96 * 8, 96 * 8 * 16}, odd_row[3] = {96, 96 * 4 + 4, (96 * 4 + 4) * 16};
  if (!grouped_pages_map(96, 4, 16, 10, packed96, 64, 16, &m)) fail("a packed cache refused", 96, 4, 16, 0);
  if (grouped_pages_map(80, 4, 16, 10, packed80, 64, 16, &m)) fail("zero-filled columns taken", 80, 4, 16, 0);
  if (grouped_pages_map(96, 4, 16, 10, apart, 64, 16, &m)) fail("heads apart taken", 96, 4, 16, 0);
  if (grouped_pages_map(96, 4, 16, 10, odd_row, 64, 16, &m)) fail("a row stride of 8 bytes taken", 96, 4, 16, 0);
  if (grouped_pages_map(96, 4, 4, 10, packed96, 64, 4, &m)) fail("pages of 4 taken", 96, 4, 4, 0);
  if (grouped_pages_map(96, 4, 16, 10, packed96, 32, 16, &m)) fail("a 32-byte swizzle taken", 96, 4, 16, 0);
  if (failures == 0) std::printf("%d cache layouts: all hold\n", cases);
  return failures == 0 ? 0 : 1;
}
