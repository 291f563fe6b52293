// Hopper (sm_90a) building blocks for a wgmma FlashAttention forward kernel: the shared-
// memory tile layout a cp.async loader writes, the 64-bit matrix descriptors that let
// wgmma.mma_async read that layout, the wgmma instructions of S = Q K^T and O += P V, and
// the register layouts of their accumulators and register A operand.
//
// Every formula here is checked on the GPU by tools/lab/wgmma_selftest.cu (bf16 and fp16, every
// head_dim and key count the kernels use; tests/gpu/test_tools.py builds and runs it); change
// nothing here without re-running it.
//
// ---- The shared-memory tile layout (128-byte swizzle) ----------------------------------
// A [rows][head_dim] tile of 16-bit elements (head_dim a multiple of 64, rows a multiple of
// 8, tile base 1024-byte aligned) is stored as head_dim / 64 COLUMN BLOCKS, block b holding
// columns [64 b, 64 b + 64) of every row, block 0 first, each block rows * 128 bytes:
//
//   byte_offset(row, chunk) = (chunk / 8) * rows * 128          // column block
//                           + row * 128                          // 128 B per row in a block
//                           + ((chunk % 8) ^ (row % 8)) * 16     // 128B swizzle
//
// where chunk = column / 8 is the 16-byte (8-element) chunk of the row. Eight consecutive
// rows of a block form one 1024-byte swizzle atom. This is exactly what the hardware's
// 128B swizzle expects: it computes a canonical (unswizzled) byte address and XORs
// address bits [4,7) with bits [7,10), which is why the tile base must be 1024-aligned.
//
// head_dim 96 (not a multiple of 64) uses the 64-byte swizzle instead, the same scheme at
// half the width: 32-column blocks of 64-byte rows, 8 rows = one 512-byte atom, and the
// hardware XORs address bits [4,6) with bits [7,9):
//
//   byte_offset(row, chunk) = (chunk / 4) * rows * 64 + row * 64
//                           + ((chunk % 4) ^ ((row / 2) % 4)) * 16    // 64B swizzle
//
// (tile_offset(rows, row, chunk, 64)). Three whole blocks hold 96 columns, so no column is
// padded and the descriptors below stay canonical (a 128B layout would leave half of the
// second block empty, and an N = 96 read across it is not a canonical 128B layout).
//
// Relation to the SM80 kernel (fwd_kernel.cuh), whose smem_offset is, in elements,
// row * pitch + ((chunk ^ (row % 8)) * 8):
//  * head_dim 64 (pitch 64): identical, byte for byte (one column block, 128 B rows).
//  * head_dim 128 (pitch 128): NOT the wgmma layout. That layout has 256-byte rows
//    (both 64-column halves of a row side by side); the descriptors below need the two
//    halves in separate blocks of 128-byte rows. Use tile_offset() instead.
//
// ---- Descriptors ------------------------------------------------------------------------
// K-major operands (Q as A and K as B of S = Q K^T; the reduction dim head_dim is the
// contiguous one), one k16 slice kk (head_dim columns [16 kk, 16 kk + 16)):
//   start = tile + (kk / 4) * rows * 128 + (kk % 4) * 32      (32 bytes = 16 elements)
//   SBO   = 1024  (from one 8-row group to the next, along M or N)
//   LBO   = 16    (encoded 1; unused: a k16 slice never leaves its 128-byte row)
// MN-major B (V in O = P V, stored [key][head_dim]; the reduction dim is the key, the
// contiguous dim is head_dim = N), one k16 slice kk (keys [16 kk, 16 kk + 16)):
//   start = tile + kk * 16 * 128                                (2048 bytes per slice)
//   SBO   = 1024        (from one group of 8 keys to the next, along K)
//   LBO   = rows * 128  (from one 64-column block of head_dim to the next, along N;
//                        only used when N > 64)
//   and the instruction's imm-trans-b = 1.
// In both, swizzle mode = 1 (128B) and base offset = 0 (atoms start 1024-aligned; moving
// the start address by 32-byte k steps inside an atom is fine, the hardware swizzles the
// address it computes). The 64B layout: swizzle mode = 2, 64 for 128 in every formula
// (K-major: start = tile + (kk / 2) * rows * 64 + (kk % 2) * 32, SBO = 512; MN-major:
// start = tile + kk * 16 * 64, SBO = 512, LBO = rows * 64 from one 32-column block to the
// next).
//
// ---- Register layouts (thread t = threadIdx.x % 128 of the warpgroup, warp w = t / 32,
// lane l = t % 32) -------------------------------------------------------------------------
// fp32 accumulator of m64nNk16, N/2 floats d[i] per thread (same as acc_row / acc_col):
//   row(i) = 16 w + l / 4 + 8 * ((i / 2) % 2)
//   col(i) = 8 * (i / 4) + 2 * (l % 4) + (i % 2)
// i.e. each n8 column tile j holds d[4j..4j+3] = (row r, cols c, c+1), (row r+8, cols c, c+1)
// with r = 16 w + l / 4, c = 8 j + 2 (l % 4): the m16n8 mma.sync C layout, one per warp.
// A operand of the RS form (64x16, 16-bit), four 32-bit registers a[0..3], each a pair of
// elements (low half = lower column):
//   a[0]: row r,     cols 2 (l%4), +1        a[1]: row r + 8, cols 2 (l%4), +1
//   a[2]: row r,     cols 8 + 2 (l%4), +1    a[3]: row r + 8, cols 8 + 2 (l%4), +1
// (the m16n8k16 mma.sync A layout, one per warp). Hence the accumulator of S restricted
// to columns [16 kk, 16 kk + 16) - d[8 kk .. 8 kk + 7] - is, packed pairwise, exactly the
// A operand of the k16 slice kk of P V:  a[j] = pack(d[8 kk + 2 j], d[8 kk + 2 j + 1]).
// No shuffles are needed (acc_to_a below).
//
// ---- Ordering rules the helpers do not enforce -----------------------------------------
//  * cp.async (and st.shared) writes are generic-proxy writes; wgmma reads through the
//    async proxy. After cp_async_wait, every writing thread runs fence_proxy_async_smem()
//    and then the CTA barrier, before any wgmma reads the tile. TMA's writes are async-proxy
//    writes: waiting on the tile's mbarrier is enough.
//  * wgmma_fence() before the first wgmma of a batch whenever the accumulators or the
//    A registers were written by ordinary instructions (zeroing, rescaling, acc_to_a).
//  * The accumulators and A registers must not be touched between issue and the
//    wgmma_wait<> that retires their group. fence_operand() keeps the compiler from moving
//    such accesses across the asm statements.
//  * All 128 threads of the warpgroup (4 consecutive warps starting at a warp index
//    divisible by 4) execute every wgmma instruction (.sync.aligned).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#include <type_traits>

#include "../ptx.cuh"

// wgmma and its fences exist only on the sm_90a target; other targets get a trap, so a
// translation unit that also builds for sm_80 still compiles.
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define FORGE_FLASH_SM90A_ENABLED 1
#endif

namespace forge_flash {
namespace sm90 {

// ---------------------------------------------------------------------------------------
// Tile layout
// ---------------------------------------------------------------------------------------
constexpr int kSwizzleRowBytes = 128;    // one row of a column block (128B swizzle)
constexpr int kSwizzleAtomBytes = 1024;  // 8 rows: one swizzle atom; tiles align to this

// The swizzle width (= bytes per row of a column block) a tile of head_dim columns uses:
// 128 where head_dim is a multiple of 64, else 64 (head_dim 96: three 32-column blocks).
__host__ __device__ constexpr int swizzle_bytes_for(int head_dim) { return head_dim % 64 == 0 ? 128 : 64; }

// Byte offset of 16-byte chunk `chunk` (= column / 8) of row `row` in a tile of `rows`
// rows (see the layout at the top; `swizzle` = 128 or 64 bytes per column-block row). A
// cp.async loader copies global row `row`, columns [8 chunk, 8 chunk + 8), to
// tile_base + tile_offset(rows, row, chunk).
__host__ __device__ constexpr uint32_t tile_offset(int rows, int row, int chunk, int swizzle = kSwizzleRowBytes) {
  return static_cast<uint32_t>((chunk / (swizzle / 16)) * rows * swizzle + row * swizzle +
                               (((chunk % (swizzle / 16)) ^ ((row * swizzle / 128) % (swizzle / 16))) * 16));
}
// Bytes of a [rows][head_dim] 16-bit tile (a multiple of 1024 when rows % 8 == 0 and
// head_dim % 64 == 0, of 512 when head_dim % 32 == 0).
__host__ __device__ constexpr uint32_t tile_bytes(int rows, int head_dim) {
  return static_cast<uint32_t>(rows * head_dim * 2);
}

// ---------------------------------------------------------------------------------------
// Matrix descriptors
// ---------------------------------------------------------------------------------------
// 64-bit shared-memory matrix descriptor:
//   bits  0-13  start address >> 4        bits 32-45  stride byte offset (SBO) >> 4
//   bits 16-29  leading byte offset >> 4  bits 49-51  base offset (0 here)
//   bits 62-63  swizzle: 0 none, 1 = 128B, 2 = 64B, 3 = 32B
template <int kSwizzle = kSwizzleRowBytes>
__device__ __forceinline__ uint64_t make_desc(uint32_t smem_byte_addr, uint32_t lbo_bytes, uint32_t sbo_bytes) {
  static_assert(kSwizzle == 128 || kSwizzle == 64, "128- or 64-byte swizzle");
  uint64_t desc = 0;
  desc |= static_cast<uint64_t>((smem_byte_addr >> 4) & 0x3FFFu);
  desc |= static_cast<uint64_t>((lbo_bytes >> 4) & 0x3FFFu) << 16;
  desc |= static_cast<uint64_t>((sbo_bytes >> 4) & 0x3FFFu) << 32;
  desc |= static_cast<uint64_t>(kSwizzle == 128 ? 1 : 2) << 62;
  return desc;
}

// A descriptor `bytes` further into shared memory. The start address field is its low 14
// bits (address >> 4), and every shared address of a CTA is below 2^18 (228 KB), so the
// field never carries: one 32-bit add of a constant instead of a descriptor built anew
// (shift, mask, or and moves: 8-10 instructions before each wgmma).
__device__ __forceinline__ uint64_t desc_advance(uint64_t desc, uint32_t bytes) {
  const uint32_t lo = static_cast<uint32_t>(desc) + (bytes >> 4);
  return (desc & 0xFFFFFFFF00000000ull) | lo;
}

// The descriptor of a slice `offset` bytes into a tile: built whole (kByAdd = false) or as the
// tile's descriptor advanced by one add (kByAdd = true). Same value; which compiles to the
// faster loop depends on the tile (see the Hopper kernel's issue_qk).
template <int kSwizzle, bool kByAdd>
__device__ __forceinline__ uint64_t slice_desc(uint32_t tile, uint32_t offset, uint32_t lbo, uint32_t sbo) {
  if constexpr (kByAdd) return desc_advance(make_desc<kSwizzle>(tile, lbo, sbo), offset);
  return make_desc<kSwizzle>(tile + offset, lbo, sbo);
}

// Where a [rows][head_dim] tile's pieces lie: column block c (kSwizzle bytes of every row) of
// 8-row group g starts kBlockStride * c + kGroupStride * g bytes in, its 8 rows kSwizzle bytes
// apart. The layout above ("blocked") has kBlockStride = rows * kSwizzle, kGroupStride = 8 *
// kSwizzle: each column block's rows contiguous. The paged twin's K/V tiles are "grouped"
// (kBlockStride = 8 * kSwizzle, kGroupStride = column blocks * 8 * kSwizzle): each 8-row group
// holds all its column blocks, so that one TMA box of a page's rows fills whole groups
// (tma_maps.cu, the grouped paged map) where the blocked layout takes a box per column block.
template <int kRows, int kSwizzle>
struct BlockedTile {
  static constexpr int kBlockStride = kRows * kSwizzle, kGroupStride = 8 * kSwizzle;
};
template <int kCols, int kSwizzle>
struct GroupedTile {
  static constexpr int kBlockStride = 8 * kSwizzle, kGroupStride = kCols * 2 / kSwizzle * 8 * kSwizzle;
};
// Byte offset of row `row`, 16-byte chunk `chunk` of column block `block` in a tile of layout L,
// before the swizzle (which permutes whole chunks within a row: a row's chunks, all written,
// fill the row whatever the swizzle).
template <class L, int kSwizzle>
__host__ __device__ constexpr uint32_t unswizzled_offset(int block, int row, int chunk) {
  return static_cast<uint32_t>(block * L::kBlockStride + (row / 8) * L::kGroupStride + (row % 8) * kSwizzle +
                               chunk * 16);
}

// K-major operand, k16 slice kk (head_dim columns [16 kk, 16 kk + 16)) of a tile of layout L at
// shared byte address `tile` (1024-aligned): Q as A (64 rows) or K as B (keys) of S = Q K^T.
// Instruction: imm-trans = 0 for this operand. A column-block row holds kSwizzle / 32 slices of
// 32 bytes; SBO steps from one 8-row group to the next (LBO unused: a slice lies in one row).
template <class L, int kSwizzle, bool kByAdd = false>
__device__ __forceinline__ uint64_t desc_kmajor_of(uint32_t tile, int kk) {
  constexpr int kSlices = kSwizzle / 32;
  const uint32_t offset = (kk / kSlices) * L::kBlockStride + (kk % kSlices) * 32;
  return slice_desc<kSwizzle, kByAdd>(tile, offset, /*lbo (unused)=*/16, /*sbo=*/L::kGroupStride);
}
template <int kRows, int kSwizzle = kSwizzleRowBytes, bool kByAdd = false>
__device__ __forceinline__ uint64_t desc_kmajor(uint32_t tile, int kk) {
  static_assert(kRows % 8 == 0, "whole swizzle atoms");
  return desc_kmajor_of<BlockedTile<kRows, kSwizzle>, kSwizzle, kByAdd>(tile, kk);
}

// MN-major B operand, k16 slice kk (keys [16 kk, 16 kk + 16): two 8-row groups) of V stored as
// a [keys][head_dim] tile of layout L at shared byte address `tile` (1024-aligned), for
// O += P V with imm-trans-b = 1. LBO steps from one column block of head_dim to the next, SBO
// from a slice's first 8 keys to its next 8.
template <class L, int kSwizzle, bool kByAdd = false>
__device__ __forceinline__ uint64_t desc_mnmajor_of(uint32_t tile, int kk) {
  return slice_desc<kSwizzle, kByAdd>(tile, kk * 2 * L::kGroupStride, /*lbo=*/L::kBlockStride,
                                      /*sbo=*/L::kGroupStride);
}
template <int kRows, int kSwizzle = kSwizzleRowBytes, bool kByAdd = false>
__device__ __forceinline__ uint64_t desc_mnmajor(uint32_t tile, int kk) {
  static_assert(kRows % 16 == 0, "whole k16 slices of keys");
  return desc_mnmajor_of<BlockedTile<kRows, kSwizzle>, kSwizzle, kByAdd>(tile, kk);
}

// The same B with 8 more columns, all ones, for O += P V at head_dim 64 with N = 72: the
// accumulator's last n8 tile then holds each row's sum of P (the row sum of the softmax, summed
// by the tensor cores instead of the softmax's adds). V fills the first column block; the
// second, which LBO reaches from each slice's start, is `ones`: 16 rows of 128 bytes of ones
// (every k16 slice reads the same 2 KB, so LBO shrinks by a slice's bytes from slice to slice).
// One add per slice from the tile's descriptor, like desc_advance: the start address field
// grows by a slice and the LBO field, bits 16-29 of the same word, falls by one.
constexpr int kOnesBytes = 16 * kSwizzleRowBytes;  // the ones it reads: one k16 slice, 2 KB
__device__ __forceinline__ uint64_t desc_mnmajor_ones(uint32_t tile, uint32_t ones, int kk) {
  constexpr uint32_t kSlice = kOnesBytes >> 4;  // a k16 slice of keys, in 16-byte units
  const uint64_t desc = make_desc<kSwizzleRowBytes>(tile, ones - tile, kSwizzleAtomBytes);
  const uint32_t lo = static_cast<uint32_t>(desc) + kk * kSlice - ((kk * kSlice) << 16);
  return (desc & 0xFFFFFFFF00000000ull) | lo;
}

// The ones desc_mnmajor_ones reads: `bytes` of 16-bit 1.0 at `smem`, written by `threads` threads
// (thread `tid` of them). Generic-proxy writes: each writer runs fence_proxy_async_smem() and a
// barrier follows before any wgmma reads them.
template <typename T>
__device__ __forceinline__ void fill_ones(unsigned char* smem, int bytes, int tid, int threads) {
  const uint32_t one = std::is_same<T, half>::value ? 0x3C003C00u : 0x3F803F80u;  // two 16-bit 1.0s
  uint32_t* words = reinterpret_cast<uint32_t*>(smem);
  for (int i = tid; i < bytes / 4; i += threads) words[i] = one;
}

// ---------------------------------------------------------------------------------------
// Register layouts
// ---------------------------------------------------------------------------------------
// Row and column of accumulator register i of warpgroup thread t (0..127), m64nNk16 fp32.
__host__ __device__ constexpr int acc_row(int t, int i) { return (t / 32) * 16 + (t % 32) / 4 + 8 * ((i / 2) % 2); }
__host__ __device__ constexpr int acc_col(int t, int i) { return 8 * (i / 4) + 2 * (t % 4) + (i % 2); }

// S accumulator (kAcc = N / 2 floats) -> the 16-bit A registers of k16 slice kk of P V.
// kk must be a compile-time constant after unrolling (register arrays).
template <typename T, int kAcc>
__device__ __forceinline__ void acc_slice_to_a(const float (&s)[kAcc], int kk, uint32_t (&a)[4]) {
  static_assert(kAcc % 8 == 0, "whole k16 slices");
#pragma unroll
  for (int j = 0; j < 4; ++j) a[j] = pack2<T>(s[8 * kk + 2 * j], s[8 * kk + 2 * j + 1]);
}
// All slices at once: a[kk] is the A operand of slice kk.
template <typename T, int kAcc>
__device__ __forceinline__ void acc_to_a(const float (&s)[kAcc], uint32_t (&a)[kAcc / 8][4]) {
#pragma unroll
  for (int kk = 0; kk < kAcc / 8; ++kk) acc_slice_to_a<T>(s, kk, a[kk]);
}

// The same A operand through shared memory (P V with P as an SS operand, where a consumer has
// no registers to keep P): slice kk of a K-major [64][kCols] tile in the layout above (128B
// swizzle, or 64B), the warpgroup's 64 rows. One stmatrix.x4 per slice and warp: its four 8x8
// matrices are the four A registers (rows r / r + 8, columns 0-7 / 8-15 of the slice), and lane
// l gives the address of row l % 8 of matrix l / 8, whose 8 elements are one 16-byte chunk of
// the tile (tile_offset's chunk 2 kk + l / 16). The swizzle puts the eight rows of a matrix in
// distinct banks. `lane_row` is (t / 32) * 16 + l % 8 + 8 * ((l / 8) % 2) and `lane_half` l / 16,
// for warpgroup thread t, lane l.
template <int kCols, int kSwizzle>
__device__ __forceinline__ void store_a_slice(uint32_t tile, int lane_row, int lane_half, int kk,
                                              const uint32_t (&a)[4]) {
  static_assert(kCols % (kSwizzle / 2) == 0, "whole column blocks");
  const uint32_t addr = tile + tile_offset(64, lane_row, 2 * kk + lane_half, kSwizzle);
#ifdef FORGE_FLASH_SM90A_ENABLED
  asm volatile("stmatrix.sync.aligned.m8n8.x4.shared.b16 [%0], {%1, %2, %3, %4};\n" ::"r"(addr), "r"(a[0]), "r"(a[1]),
               "r"(a[2]), "r"(a[3])
               : "memory");
#else
  __trap();
#endif
}

// ---------------------------------------------------------------------------------------
// Fences and groups
// ---------------------------------------------------------------------------------------
// Makes generic-proxy shared writes (cp.async, st.shared) visible to the async proxy that
// wgmma reads through. Each writing thread, before the barrier that precedes the wgmma.
__device__ __forceinline__ void fence_proxy_async_smem() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}

// Orders prior register writes (accumulators, A registers) before the next wgmma.
__device__ __forceinline__ void wgmma_fence() {
#ifdef FORGE_FLASH_SM90A_ENABLED
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#else
  __trap();
#endif
}
// Closes the batch of wgmma issued since the last commit into one group.
__device__ __forceinline__ void wgmma_commit() {
#ifdef FORGE_FLASH_SM90A_ENABLED
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#else
  __trap();
#endif
}
// Waits until at most kPending committed groups are still in flight.
template <int kPending>
__device__ __forceinline__ void wgmma_wait() {
#ifdef FORGE_FLASH_SM90A_ENABLED
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(kPending) : "memory");
#else
  __trap();
#endif
}
// Compiler-only fence: pins every register of a fragment at this point of the program so
// that no read or write of it is scheduled across an in-flight wgmma.
template <int kN>
__device__ __forceinline__ void fence_operand(float (&r)[kN]) {
#pragma unroll
  for (int i = 0; i < kN; ++i) asm volatile("" : "+f"(r[i])::"memory");
}
template <int kN>
__device__ __forceinline__ void fence_operand(uint32_t (&r)[kN]) {
#pragma unroll
  for (int i = 0; i < kN; ++i) asm volatile("" : "+r"(r[i])::"memory");
}

// ---------------------------------------------------------------------------------------
// MMA instructions. T = half or __nv_bfloat16; fp32 accumulators; `accumulate` false
// computes d = A B (the old d is ignored, no zeroing needed), true d += A B.
//
// One m64nNk16 instruction takes its N / 2 accumulators as N / 2 separate asm operands, and
// the asm template must be a string literal, so the register list "%0, %1, ..." and the
// operand list are generated by the preprocessor from groups of 8 (GROUPS = N / 16) below;
// the operands after the accumulators are numbered from N / 2 on. Wgmma<N> exists for the
// N values the kernels use (dense 16-bit wgmma takes any multiple of 8 up to 256).
// ---------------------------------------------------------------------------------------
#define FF_SM90_R1 "%0, %1, %2, %3, %4, %5, %6, %7"
#define FF_SM90_R2 FF_SM90_R1 ", %8, %9, %10, %11, %12, %13, %14, %15"
#define FF_SM90_R3 FF_SM90_R2 ", %16, %17, %18, %19, %20, %21, %22, %23"
#define FF_SM90_R4 FF_SM90_R3 ", %24, %25, %26, %27, %28, %29, %30, %31"
#define FF_SM90_R4H FF_SM90_R4 ", %32, %33, %34, %35"
#define FF_SM90_R5 FF_SM90_R4 ", %32, %33, %34, %35, %36, %37, %38, %39"
#define FF_SM90_R6 FF_SM90_R5 ", %40, %41, %42, %43, %44, %45, %46, %47"
#define FF_SM90_R7 FF_SM90_R6 ", %48, %49, %50, %51, %52, %53, %54, %55"
#define FF_SM90_R8 FF_SM90_R7 ", %56, %57, %58, %59, %60, %61, %62, %63"
#define FF_SM90_R9 FF_SM90_R8 ", %64, %65, %66, %67, %68, %69, %70, %71"
#define FF_SM90_R10 FF_SM90_R9 ", %72, %73, %74, %75, %76, %77, %78, %79"
#define FF_SM90_R11 FF_SM90_R10 ", %80, %81, %82, %83, %84, %85, %86, %87"
#define FF_SM90_R12 FF_SM90_R11 ", %88, %89, %90, %91, %92, %93, %94, %95"
#define FF_SM90_R13 FF_SM90_R12 ", %96, %97, %98, %99, %100, %101, %102, %103"
#define FF_SM90_R14 FF_SM90_R13 ", %104, %105, %106, %107, %108, %109, %110, %111"
#define FF_SM90_R15 FF_SM90_R14 ", %112, %113, %114, %115, %116, %117, %118, %119"
#define FF_SM90_R16 FF_SM90_R15 ", %120, %121, %122, %123, %124, %125, %126, %127"
#define FF_SM90_O1(d) "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7])
#define FF_SM90_O2(d) \
  FF_SM90_O1(d), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
#define FF_SM90_O3(d) \
  FF_SM90_O2(d), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23])
#define FF_SM90_O4(d) \
  FF_SM90_O3(d), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
#define FF_SM90_O4H(d) FF_SM90_O4(d), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35])
#define FF_SM90_O5(d) \
  FF_SM90_O4(d), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39])
#define FF_SM90_O6(d) \
  FF_SM90_O5(d), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47])
#define FF_SM90_O7(d) \
  FF_SM90_O6(d), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55])
#define FF_SM90_O8(d) \
  FF_SM90_O7(d), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
#define FF_SM90_O9(d) \
  FF_SM90_O8(d), "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71])
#define FF_SM90_O10(d) \
  FF_SM90_O9(d), "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79])
#define FF_SM90_O11(d) \
  FF_SM90_O10(d), "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87])
#define FF_SM90_O12(d) \
  FF_SM90_O11(d), "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95])
#define FF_SM90_O13(d)                                                                                          \
  FF_SM90_O12(d), "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), \
      "+f"(d[103])
#define FF_SM90_O14(d)                                                                                              \
  FF_SM90_O13(d), "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), \
      "+f"(d[111])
#define FF_SM90_O15(d)                                                                                              \
  FF_SM90_O14(d), "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), \
      "+f"(d[119])
#define FF_SM90_O16(d)                                                                                              \
  FF_SM90_O15(d), "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), \
      "+f"(d[127])

// SS form: A (64x16, K-major) and B from shared memory descriptors, scale-a = scale-b = 1.
// Operand numbers after the accumulators: IA = desc_a, IB = desc_b, IS = accumulate flag;
// TAIL = "imm-trans-a, imm-trans-b": "0, 0" for a K-major B (Nx16: S = A B^T), "0, 1" for an
// MN-major B (16xN: O += P V with P from shared memory).
#define FF_SM90_WGMMA_SS(SHAPE, TYPE, REGS, OPERANDS, IA, IB, IS, TAIL)                                       \
  asm volatile(                                                                                               \
      "{\n"                                                                                                   \
      ".reg .pred p;\n"                                                                                       \
      "setp.ne.b32 p, " IS                                                                                    \
      ", 0;\n"                                                                                                \
      "wgmma.mma_async.sync.aligned." SHAPE ".f32." TYPE "." TYPE " " REGS ", " IA ", " IB ", p, 1, 1, " TAIL \
      ";\n"                                                                                                   \
      "}\n"                                                                                                   \
      : OPERANDS                                                                                              \
      : "l"(desc_a), "l"(desc_b), "r"(static_cast<int>(accumulate)))

// RS form: A (64x16) from four registers, B from a shared memory descriptor. IA0..IA3 = A
// registers, IB = desc_b, IS = accumulate flag, TAIL = "imm-scale-a, imm-scale-b,
// imm-trans-b": "1, 1, 1" for a transposed (MN-major) B (16xN).
#define FF_SM90_WGMMA_RS(SHAPE, TYPE, REGS, OPERANDS, IA0, IA1, IA2, IA3, IB, IS, TAIL) \
  asm volatile(                                                                         \
      "{\n"                                                                             \
      ".reg .pred p;\n"                                                                 \
      "setp.ne.b32 p, " IS                                                              \
      ", 0;\n"                                                                          \
      "wgmma.mma_async.sync.aligned." SHAPE ".f32." TYPE "." TYPE " " REGS              \
      ", "                                                                              \
      "{" IA0 ", " IA1 ", " IA2 ", " IA3 "}, " IB ", p, " TAIL                          \
      ";\n"                                                                             \
      "}\n"                                                                             \
      : OPERANDS                                                                        \
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(static_cast<int>(accumulate)))

template <typename T>
struct is_wgmma_16bit
    : std::integral_constant<bool, std::is_same<T, half>::value || std::is_same<T, __nv_bfloat16>::value> {};

// Wgmma<N>::ss<T>(d, desc_a, desc_b, acc):    d (64xN fp32, N/2 regs) (+)= A (64x16) * B (Nx16)^T,
//   both K-major from descriptors (desc_kmajor): S = Q K^T.
// Wgmma<N>::ss_tb<T>(d, desc_a, desc_b, acc): d (+)= A (64x16, K-major from a descriptor) * B (16xN),
//   B MN-major as in rs_tb: O += P V with P from shared memory (store_a_slice).
// Wgmma<N>::rs_tb<T>(d, a, desc_b, acc):      d (+)= A (64x16, four registers a) * B (16xN),
//   B MN-major from a descriptor (desc_mnmajor; columns past the first column block through
//   LBO): O += P V.
template <int kN>
struct Wgmma;  // defined below for each N a kernel uses

#ifdef FORGE_FLASH_SM90A_ENABLED
#define FF_SM90_MMA_BODY(BF16_STMT, F16_STMT)                       \
  static_assert(is_wgmma_16bit<T>::value, "half or __nv_bfloat16"); \
  if constexpr (std::is_same<T, __nv_bfloat16>::value) {            \
    BF16_STMT;                                                      \
  } else {                                                          \
    F16_STMT;                                                       \
  }
#else
#define FF_SM90_MMA_BODY(BF16_STMT, F16_STMT) __trap();
#endif

// N, GROUPS = N / 16 (4H: four and a half, the 36 registers of N = 72), then the operand
// numbers N/2 .. N/2 + 5 (decimal literals).
#define FF_SM90_DEFINE_WGMMA(N, GROUPS, I0, I1, I2, I3, I4, I5)                                                       \
  template <>                                                                                                         \
  struct Wgmma<N> {                                                                                                   \
    template <typename T>                                                                                             \
    static __device__ __forceinline__ void ss(float (&d)[N / 2], uint64_t desc_a, uint64_t desc_b, bool accumulate) { \
      FF_SM90_MMA_BODY(FF_SM90_WGMMA_SS("m64n" #N "k16", "bf16", "{" FF_SM90_R##GROUPS "}", FF_SM90_O##GROUPS(d),     \
                                        "%" #I0, "%" #I1, "%" #I2, "0, 0"),                                           \
                       FF_SM90_WGMMA_SS("m64n" #N "k16", "f16", "{" FF_SM90_R##GROUPS "}", FF_SM90_O##GROUPS(d),      \
                                        "%" #I0, "%" #I1, "%" #I2, "0, 0"))                                           \
    }                                                                                                                 \
    template <typename T>                                                                                             \
    static __device__ __forceinline__ void ss_tb(float (&d)[N / 2], uint64_t desc_a, uint64_t desc_b,                 \
                                                 bool accumulate) {                                                   \
      FF_SM90_MMA_BODY(FF_SM90_WGMMA_SS("m64n" #N "k16", "bf16", "{" FF_SM90_R##GROUPS "}", FF_SM90_O##GROUPS(d),     \
                                        "%" #I0, "%" #I1, "%" #I2, "0, 1"),                                           \
                       FF_SM90_WGMMA_SS("m64n" #N "k16", "f16", "{" FF_SM90_R##GROUPS "}", FF_SM90_O##GROUPS(d),      \
                                        "%" #I0, "%" #I1, "%" #I2, "0, 1"))                                           \
    }                                                                                                                 \
    template <typename T>                                                                                             \
    static __device__ __forceinline__ void rs_tb(float (&d)[N / 2], const uint32_t (&a)[4], uint64_t desc_b,          \
                                                 bool accumulate) {                                                   \
      FF_SM90_MMA_BODY(FF_SM90_WGMMA_RS("m64n" #N "k16", "bf16", "{" FF_SM90_R##GROUPS "}", FF_SM90_O##GROUPS(d),     \
                                        "%" #I0, "%" #I1, "%" #I2, "%" #I3, "%" #I4, "%" #I5, "1, 1, 1"),             \
                       FF_SM90_WGMMA_RS("m64n" #N "k16", "f16", "{" FF_SM90_R##GROUPS "}", FF_SM90_O##GROUPS(d),      \
                                        "%" #I0, "%" #I1, "%" #I2, "%" #I3, "%" #I4, "%" #I5, "1, 1, 1"))             \
    }                                                                                                                 \
  };

FF_SM90_DEFINE_WGMMA(64, 4, 32, 33, 34, 35, 36, 37)
FF_SM90_DEFINE_WGMMA(72, 4H, 36, 37, 38, 39, 40, 41)
FF_SM90_DEFINE_WGMMA(80, 5, 40, 41, 42, 43, 44, 45)
FF_SM90_DEFINE_WGMMA(96, 6, 48, 49, 50, 51, 52, 53)
FF_SM90_DEFINE_WGMMA(112, 7, 56, 57, 58, 59, 60, 61)
FF_SM90_DEFINE_WGMMA(128, 8, 64, 65, 66, 67, 68, 69)
FF_SM90_DEFINE_WGMMA(176, 11, 88, 89, 90, 91, 92, 93)
FF_SM90_DEFINE_WGMMA(192, 12, 96, 97, 98, 99, 100, 101)
FF_SM90_DEFINE_WGMMA(256, 16, 128, 129, 130, 131, 132, 133)

// Shape-generic spellings, picked by the accumulator size (kAcc = N / 2).
// S = Q K^T slice: wgmma_qk<T>(acc_s, desc_kmajor<64>(sQ, kk), desc_kmajor<N>(sK, kk), kk > 0)
template <typename T, int kAcc>
__device__ __forceinline__ void wgmma_qk(float (&d)[kAcc], uint64_t desc_a, uint64_t desc_b, bool accumulate) {
  Wgmma<2 * kAcc>::template ss<T>(d, desc_a, desc_b, accumulate);
}
// O += P V slice: wgmma_pv<T>(acc_o, a[kk], desc_mnmajor<N>(sV, kk), true)
template <typename T, int kAcc>
__device__ __forceinline__ void wgmma_pv(float (&d)[kAcc], const uint32_t (&a)[4], uint64_t desc_b, bool accumulate) {
  Wgmma<2 * kAcc>::template rs_tb<T>(d, a, desc_b, accumulate);
}
// O += P V slice, P from shared memory: wgmma_pv_ss<T>(acc_o, desc_kmajor<64>(sP, kk), desc_mnmajor<N>(sV, kk))
template <typename T, int kAcc>
__device__ __forceinline__ void wgmma_pv_ss(float (&d)[kAcc], uint64_t desc_a, uint64_t desc_b) {
  Wgmma<2 * kAcc>::template ss_tb<T>(d, desc_a, desc_b, true);
}

#undef FF_SM90_DEFINE_WGMMA
#undef FF_SM90_MMA_BODY
#undef FF_SM90_WGMMA_SS
#undef FF_SM90_WGMMA_RS
#undef FF_SM90_R1
#undef FF_SM90_O1
#undef FF_SM90_R2
#undef FF_SM90_O2
#undef FF_SM90_R3
#undef FF_SM90_O3
#undef FF_SM90_R4
#undef FF_SM90_O4
#undef FF_SM90_R4H
#undef FF_SM90_O4H
#undef FF_SM90_R5
#undef FF_SM90_O5
#undef FF_SM90_R6
#undef FF_SM90_O6
#undef FF_SM90_R7
#undef FF_SM90_O7
#undef FF_SM90_R8
#undef FF_SM90_O8
#undef FF_SM90_R9
#undef FF_SM90_O9
#undef FF_SM90_R10
#undef FF_SM90_O10
#undef FF_SM90_R11
#undef FF_SM90_O11
#undef FF_SM90_R12
#undef FF_SM90_O12
#undef FF_SM90_R13
#undef FF_SM90_O13
#undef FF_SM90_R14
#undef FF_SM90_O14
#undef FF_SM90_R15
#undef FF_SM90_O15
#undef FF_SM90_R16
#undef FF_SM90_O16

}  // namespace sm90
}  // namespace forge_flash
