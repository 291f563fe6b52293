// Hopper (sm_90a) building blocks for a wgmma FlashAttention forward kernel: the shared-
// memory tile layout a cp.async loader writes, the 64-bit matrix descriptors that let
// wgmma.mma_async read that layout, the wgmma instructions of S = Q K^T and O += P V, and
// the register layouts of their accumulators and register A operand.
//
// Every formula here is checked on the GPU by tools/lab/wgmma_selftest.cu (bf16 and fp16,
// head_dim 64 and 128, 64 and 128 keys; tests/gpu/test_tools.py builds and runs it); change
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
// address it computes).
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
//    and then the CTA barrier, before any wgmma reads the tile.
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
constexpr int kSwizzleRowBytes = 128;    // one row of a column block
constexpr int kSwizzleAtomBytes = 1024;  // 8 rows: one swizzle atom; tiles align to this

// Byte offset of 16-byte chunk `chunk` (= column / 8) of row `row` in a tile of `rows`
// rows (see the layout at the top). A cp.async loader copies global row `row`, columns
// [8 chunk, 8 chunk + 8), to tile_base + tile_offset(rows, row, chunk).
__host__ __device__ constexpr uint32_t tile_offset(int rows, int row, int chunk) {
  return static_cast<uint32_t>((chunk / 8) * rows * kSwizzleRowBytes + row * kSwizzleRowBytes +
                               (((chunk % 8) ^ (row % 8)) * 16));
}
// Bytes of a [rows][head_dim] 16-bit tile (a multiple of 1024 when rows % 8 == 0).
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
__device__ __forceinline__ uint64_t make_desc_sw128(uint32_t smem_byte_addr, uint32_t lbo_bytes, uint32_t sbo_bytes) {
  uint64_t desc = 0;
  desc |= static_cast<uint64_t>((smem_byte_addr >> 4) & 0x3FFFu);
  desc |= static_cast<uint64_t>((lbo_bytes >> 4) & 0x3FFFu) << 16;
  desc |= static_cast<uint64_t>((sbo_bytes >> 4) & 0x3FFFu) << 32;
  desc |= static_cast<uint64_t>(1) << 62;  // 128-byte swizzle
  return desc;
}

// K-major operand, k16 slice kk (head_dim columns [16 kk, 16 kk + 16)) of a [kRows][head_dim]
// tile at shared byte address `tile` (1024-aligned): Q as A (kRows = 64) or K as B
// (kRows = keys) of S = Q K^T. Instruction: imm-trans = 0 for this operand.
template <int kRows>
__device__ __forceinline__ uint64_t desc_kmajor(uint32_t tile, int kk) {
  static_assert(kRows % 8 == 0, "whole swizzle atoms");
  const uint32_t start = tile + (kk / 4) * kRows * kSwizzleRowBytes + (kk % 4) * 32;
  return make_desc_sw128(start, /*lbo (unused)=*/16, /*sbo=*/kSwizzleAtomBytes);
}

// MN-major B operand, k16 slice kk (keys [16 kk, 16 kk + 16)) of V stored as a
// [kRows = keys][head_dim] tile at shared byte address `tile` (1024-aligned), for
// O += P V with imm-trans-b = 1. LBO steps from head_dim block 0 to block 1.
template <int kRows>
__device__ __forceinline__ uint64_t desc_mnmajor(uint32_t tile, int kk) {
  static_assert(kRows % 16 == 0, "whole k16 slices of keys");
  const uint32_t start = tile + kk * 16 * kSwizzleRowBytes;
  return make_desc_sw128(start, /*lbo=*/kRows * kSwizzleRowBytes, /*sbo=*/kSwizzleAtomBytes);
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
// ---------------------------------------------------------------------------------------
#define FF_SM90_ACC32_OPERANDS(d)                                                                             \
  "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), \
      "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]),  \
      "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), \
      "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
#define FF_SM90_ACC32_REGS                                                         \
  "{"                                                                              \
  "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "         \
  "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31" \
  "}"
#define FF_SM90_ACC64_OPERANDS(d)                                                                             \
  "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), \
      "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]),  \
      "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), \
      "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), \
      "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), \
      "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), \
      "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), \
      "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
#define FF_SM90_ACC64_REGS                                                           \
  "{"                                                                                \
  "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "           \
  "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, " \
  "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, " \
  "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"   \
  "}"

// S = A B^T form: A (64x16) and B (Nx16) both K-major from shared memory descriptors
// (imm-trans-a = imm-trans-b = 0), scale-a = scale-b = 1. Operand numbers after the
// accumulators: IA = desc_a, IB = desc_b, IS = accumulate flag.
#define FF_SM90_WGMMA_SS(SHAPE, TYPE, REGS, OPERANDS, IA, IB, IS)                          \
  asm volatile(                                                                            \
      "{\n"                                                                                \
      ".reg .pred p;\n"                                                                    \
      "setp.ne.b32 p, " IS                                                                 \
      ", 0;\n"                                                                             \
      "wgmma.mma_async.sync.aligned." SHAPE ".f32." TYPE "." TYPE " " REGS ", " IA ", " IB \
      ", p, 1, 1, 0, 0;\n"                                                                 \
      "}\n"                                                                                \
      : OPERANDS                                                                           \
      : "l"(desc_a), "l"(desc_b), "r"(static_cast<int>(accumulate)))

// RS form with a transposed (MN-major) B: A (64x16) from four registers, B (16xN) from a
// shared memory descriptor with imm-trans-b = 1. IA0..IA3 = A registers, IB = desc_b,
// IS = accumulate flag.
#define FF_SM90_WGMMA_RS_TB(SHAPE, TYPE, REGS, OPERANDS, IA0, IA1, IA2, IA3, IB, IS) \
  asm volatile(                                                                      \
      "{\n"                                                                          \
      ".reg .pred p;\n"                                                              \
      "setp.ne.b32 p, " IS                                                           \
      ", 0;\n"                                                                       \
      "wgmma.mma_async.sync.aligned." SHAPE ".f32." TYPE "." TYPE " " REGS           \
      ", "                                                                           \
      "{" IA0 ", " IA1 ", " IA2 ", " IA3 "}, " IB                                    \
      ", p, 1, 1, 1;\n"                                                              \
      "}\n"                                                                          \
      : OPERANDS                                                                     \
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(static_cast<int>(accumulate)))

template <typename T>
struct is_wgmma_16bit
    : std::integral_constant<bool, std::is_same<T, half>::value || std::is_same<T, __nv_bfloat16>::value> {};

// S (64x64 fp32, 32 regs) (+)= Q slice (64x16, desc_a) * K slice (64 keys x 16, desc_b)^T.
template <typename T>
__device__ __forceinline__ void wgmma_m64n64k16_ss(float (&d)[32], uint64_t desc_a, uint64_t desc_b, bool accumulate) {
  static_assert(is_wgmma_16bit<T>::value, "half or __nv_bfloat16");
#ifdef FORGE_FLASH_SM90A_ENABLED
  if constexpr (std::is_same<T, __nv_bfloat16>::value) {
    FF_SM90_WGMMA_SS("m64n64k16", "bf16", FF_SM90_ACC32_REGS, FF_SM90_ACC32_OPERANDS(d), "%32", "%33", "%34");
  } else {
    FF_SM90_WGMMA_SS("m64n64k16", "f16", FF_SM90_ACC32_REGS, FF_SM90_ACC32_OPERANDS(d), "%32", "%33", "%34");
  }
#else
  __trap();
#endif
}

// S (64x128 fp32, 64 regs) (+)= Q slice (64x16, desc_a) * K slice (128 keys x 16, desc_b)^T.
template <typename T>
__device__ __forceinline__ void wgmma_m64n128k16_ss(float (&d)[64], uint64_t desc_a, uint64_t desc_b, bool accumulate) {
  static_assert(is_wgmma_16bit<T>::value, "half or __nv_bfloat16");
#ifdef FORGE_FLASH_SM90A_ENABLED
  if constexpr (std::is_same<T, __nv_bfloat16>::value) {
    FF_SM90_WGMMA_SS("m64n128k16", "bf16", FF_SM90_ACC64_REGS, FF_SM90_ACC64_OPERANDS(d), "%64", "%65", "%66");
  } else {
    FF_SM90_WGMMA_SS("m64n128k16", "f16", FF_SM90_ACC64_REGS, FF_SM90_ACC64_OPERANDS(d), "%64", "%65", "%66");
  }
#else
  __trap();
#endif
}

// O (64x64 fp32, 32 regs) (+)= P slice (64x16, registers a) * V slice (16 keys x 64, desc_b
// from desc_mnmajor, transposed).
template <typename T>
__device__ __forceinline__ void wgmma_m64n64k16_rs_tb(float (&d)[32], const uint32_t (&a)[4], uint64_t desc_b,
                                                      bool accumulate) {
  static_assert(is_wgmma_16bit<T>::value, "half or __nv_bfloat16");
#ifdef FORGE_FLASH_SM90A_ENABLED
  if constexpr (std::is_same<T, __nv_bfloat16>::value) {
    FF_SM90_WGMMA_RS_TB("m64n64k16", "bf16", FF_SM90_ACC32_REGS, FF_SM90_ACC32_OPERANDS(d), "%32", "%33", "%34", "%35",
                        "%36", "%37");
  } else {
    FF_SM90_WGMMA_RS_TB("m64n64k16", "f16", FF_SM90_ACC32_REGS, FF_SM90_ACC32_OPERANDS(d), "%32", "%33", "%34", "%35",
                        "%36", "%37");
  }
#else
  __trap();
#endif
}

// O (64x128 fp32, 64 regs) (+)= P slice (64x16, registers a) * V slice (16 keys x 128,
// desc_b from desc_mnmajor, transposed; the second 64 columns come through LBO).
template <typename T>
__device__ __forceinline__ void wgmma_m64n128k16_rs_tb(float (&d)[64], const uint32_t (&a)[4], uint64_t desc_b,
                                                       bool accumulate) {
  static_assert(is_wgmma_16bit<T>::value, "half or __nv_bfloat16");
#ifdef FORGE_FLASH_SM90A_ENABLED
  if constexpr (std::is_same<T, __nv_bfloat16>::value) {
    FF_SM90_WGMMA_RS_TB("m64n128k16", "bf16", FF_SM90_ACC64_REGS, FF_SM90_ACC64_OPERANDS(d), "%64", "%65", "%66", "%67",
                        "%68", "%69");
  } else {
    FF_SM90_WGMMA_RS_TB("m64n128k16", "f16", FF_SM90_ACC64_REGS, FF_SM90_ACC64_OPERANDS(d), "%64", "%65", "%66", "%67",
                        "%68", "%69");
  }
#else
  __trap();
#endif
}

// Shape-generic spellings, picked by the accumulator size (kAcc = N / 2).
// S = Q K^T slice: wgmma_qk<T>(acc_s, desc_kmajor<64>(sQ, kk), desc_kmajor<N>(sK, kk), kk > 0)
template <typename T, int kAcc>
__device__ __forceinline__ void wgmma_qk(float (&d)[kAcc], uint64_t desc_a, uint64_t desc_b, bool accumulate) {
  static_assert(kAcc == 32 || kAcc == 64, "N = 64 or 128");
  if constexpr (kAcc == 32) {
    wgmma_m64n64k16_ss<T>(d, desc_a, desc_b, accumulate);
  } else {
    wgmma_m64n128k16_ss<T>(d, desc_a, desc_b, accumulate);
  }
}
// O += P V slice: wgmma_pv<T>(acc_o, a[kk], desc_mnmajor<N>(sV, kk), true)
template <typename T, int kAcc>
__device__ __forceinline__ void wgmma_pv(float (&d)[kAcc], const uint32_t (&a)[4], uint64_t desc_b, bool accumulate) {
  static_assert(kAcc == 32 || kAcc == 64, "head_dim = 64 or 128");
  if constexpr (kAcc == 32) {
    wgmma_m64n64k16_rs_tb<T>(d, a, desc_b, accumulate);
  } else {
    wgmma_m64n128k16_rs_tb<T>(d, a, desc_b, accumulate);
  }
}

#undef FF_SM90_WGMMA_SS
#undef FF_SM90_WGMMA_RS_TB
#undef FF_SM90_ACC32_OPERANDS
#undef FF_SM90_ACC32_REGS
#undef FF_SM90_ACC64_OPERANDS
#undef FF_SM90_ACC64_REGS

}  // namespace sm90
}  // namespace forge_flash
