// ALiBi by the tensor cores (the AlibiSlice policies of the Hopper kernel, policies.h).
//
// ALiBi adds -slope * |pos - key| to a score, where pos is the row's diagonal key. On a K/V
// tile whose kept keys all lie on one side of every row's diagonal (every tile of a causal call,
// whose mask drops the keys after it; all but the few that cross it without causal) that is
//
//   step * (key - n0)  -  step * (pos - n0),      step = +slope (keys before pos) or -slope,
//
// with n0 the tile's first key: a product of a per-row factor and a per-key factor, plus a
// per-row constant. The product is a rank-one matrix, so it is one more k16 slice of
// S = Q K^T: A holds each row's slope in its first columns, B each key's offset key - n0 in
// the same columns, and the tensor cores add slope * (key - n0) to every score while they
// compute it. The per-row constant goes to the softmax's running maximum and offset once per
// row (softmax_step<true>), as in the variant kernels. So a one-sided tile costs its scores no
// instruction at all, where the variant kernels spend a multiply-add per score (and their
// score program keeps them on narrower tiles). Tiles across the diagonal of a non-causal call
// keep |pos - key| per score (fwd_common.cuh, alibi_row_across).
//
//   A (64 x 16, registers): row r: slope_r / 256 as three 16-bit terms hi, mid, lo (their sum
//     is slope_r / 256 to ~2^-24 relative, so the bias keeps fp32 precision; fp16 terms below
//     its normal range round to 2^-24 steps: at most 2^-25 * 256 * key off), then zeros.
//   B (kBlockN x 16, shared memory, written once per CTA): key j: j * 256 in the same three
//     columns (exact in bf16 and fp16 for j < 256), then zeros.
//   The tile's side: A as is before the diagonal, its sign bits flipped after it, zero across
//     it (alibi_slice_for), so one instruction serves every tile.
//
// Measured (H200, bf16, 8k tokens, 2048 hidden, ALiBi against plain attention, non-causal and
// causal; docs/benchmarks.md, 2026-12-02): head_dim 64 0.64-0.69x -> 0.75-0.82x (this instance
// also keeps the plain kernel's third consumer), 96 0.73-0.81x -> 0.83-0.96x, 128 0.75-0.82x ->
// 0.84-0.88x, 192 0.80-0.87x -> 0.82-0.89x, beside the per-tile divisions hoisted out of the
// tile tests (CtaWork::diag_first) in the same build; the slice alone, with those divisions
// in place, measured level at head_dim 128 and 192.
//
// The 256 keeps fp16's terms in range: slope / scale up to 1.6e7 before hi overflows.
// B uses the 32-byte swizzle layout (one k16 slice per 32-byte row: sm90/wgmma.cuh), so it
// takes kBlockN * 32 bytes (5.5 KB at 176 keys) beside the K/V ring.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#include <type_traits>

#include "../ptx.cuh"
#include "wgmma.cuh"

namespace forge_flash {
namespace sm90 {

constexpr int kAlibiSliceSwizzle = 32;  // bytes per row of the key tile: one k16 slice
constexpr float kAlibiKeyScale = 256.f;

template <int kBlockN>
constexpr int alibi_keys_bytes() {
  return kBlockN * kAlibiSliceSwizzle;
}

template <typename T>
__device__ __forceinline__ float round_to(float x) {
  if constexpr (std::is_same<T, __nv_bfloat16>::value)
    return __bfloat162float(__float2bfloat16_rn(x));
  else
    return __half2float(__float2half_rn(x));
}

// The key tile B, written by `threads` threads (thread t of them: every threads-th row from t),
// 1024-aligned at `tile`. The writers then fence the async proxy (fence_proxy_async_smem)
// before the barrier that precedes the first wgmma reading it.
template <typename T, int kBlockN>
__device__ __forceinline__ void write_alibi_keys(unsigned char* tile, int t, int threads) {
  for (int j = t; j < kBlockN; j += threads) {
    const float key = static_cast<float>(j) * kAlibiKeyScale;
    const uint32_t k01 = pack2<T>(key, key), k2 = pack2<T>(key, 0.f);
    // Chunk 0 holds columns 0-7, chunk 1 columns 8-15 (zeros), swizzled as tile_offset says.
    const uint4 data{k01, k2, 0u, 0u}, zeros{0u, 0u, 0u, 0u};
    *reinterpret_cast<uint4*>(tile + tile_offset(kBlockN, j, 0, kAlibiSliceSwizzle)) = data;
    *reinterpret_cast<uint4*>(tile + tile_offset(kBlockN, j, 1, kAlibiSliceSwizzle)) = zeros;
  }
}

// This thread's A registers (the RS operand layout of wgmma.cuh: a[0] row r, a[1] row r + 8,
// columns 2 (lane % 4), +1; a[2], a[3] columns 8.. = 0) for its rows' slopes (ScoreRows::slope:
// slope / scale for raw scores).
template <typename T>
__device__ __forceinline__ void alibi_slice_a(const float (&slope)[2], int lane, uint32_t (&a)[4]) {
#pragma unroll
  for (int hi = 0; hi < 2; ++hi) {
    const float x = slope[hi] / kAlibiKeyScale;
    const float h = round_to<T>(x), m = round_to<T>(x - h), l = x - h - m;
    a[hi] = lane % 4 == 0 ? pack2<T>(h, m) : lane % 4 == 1 ? pack2<T>(l, 0.f) : 0u;
  }
  a[2] = a[3] = 0u;
}

// The slice of one K/V tile: A as it is before every row's diagonal (side -1), negated after it
// (+1: sign bits flipped; its zero columns turn -0), zero across it (0: those tiles keep the
// per-score distance, fwd_common.cuh alibi_row_across). One instruction, whatever the side:
// as two instructions under a branch (imm-scale-b -1 for the other side) ptxas closed the
// commit group with an extra empty wgmma.
__device__ __forceinline__ void alibi_slice_for(const uint32_t (&a)[4], int side, uint32_t (&out)[4]) {
  const uint32_t keep = side != 0 ? 0xFFFFFFFFu : 0u, flip = side > 0 ? 0x80008000u : 0u;
  out[0] = (a[0] & keep) ^ flip;
  out[1] = (a[1] & keep) ^ flip;
  out[2] = out[3] = 0u;
}

}  // namespace sm90
}  // namespace forge_flash
