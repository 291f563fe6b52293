// Rotary position embedding of 16-bit rows, 8 features (one 16-byte vector) at a time: shared
// by the K/V append kernel (append_kv_kernel.cuh) and the decode kernel's fused append
// (decode_kernel.cuh), so both round exactly as forge_flash.kvcache_append.apply_rotary does.
// Host-compilable: tests/c_api/append_kernel_host.cpp runs it on the CPU.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "forge_flash/flash_api.h"
#include "params.h"

namespace forge_flash {
namespace rotary {

constexpr int kUnitElems = 8;  // features per unit: one 16-byte vector of 16-bit elements

union Unit {
  uint4 vector;
  uint16_t e[kUnitElems];
};

inline RotaryTables rotary_tables(const ff_append_kv_args& a) {
  const bool on = a.rotary_cos.data != nullptr;
  return {a.rotary_cos, a.rotary_sin,        a.rotary_dtype, on ? a.rotary_dim : 0, on ? a.rotary_dim / 2 : 0,
          a.seqlen_ro,  a.rotary_interleaved};
}

template <typename T>
__device__ __forceinline__ float to_float(uint16_t raw);
template <>
__device__ __forceinline__ float to_float<half>(uint16_t raw) {
  return __half2float(__ushort_as_half(raw));
}
template <>
__device__ __forceinline__ float to_float<__nv_bfloat16>(uint16_t raw) {
  return __bfloat162float(__ushort_as_bfloat16(raw));
}

template <typename T>
__device__ __forceinline__ uint16_t to_raw(float x);
template <>
__device__ __forceinline__ uint16_t to_raw<half>(float x) {
  return __half_as_ushort(__float2half_rn(x));
}
template <>
__device__ __forceinline__ uint16_t to_raw<__nv_bfloat16>(float x) {
  return __bfloat16_as_ushort(__float2bfloat16_rn(x));
}

__device__ __forceinline__ int64_t clamp64(int64_t x, int64_t lo, int64_t hi) { return x < lo ? lo : x > hi ? hi : x; }

template <bool kVec>
__device__ __forceinline__ void load_unit(const uint16_t* row, int e0, int head_dim, Unit& x) {
  if constexpr (kVec) {
    x.vector = *reinterpret_cast<const uint4*>(row + e0);
  } else {
#pragma unroll
    for (int j = 0; j < kUnitElems; ++j) x.e[j] = e0 + j < head_dim ? row[e0 + j] : 0;
  }
}

// Entry (row, col) of a rotary table, in float32 (the dtype is uniform across the grid).
__device__ __forceinline__ float table_value(const ff_rotary_table& t, ff_merge_dtype dtype, int64_t row, int col) {
  const int64_t i = row * t.row_stride + col * t.col_stride;
  switch (dtype) {
    case FF_MERGE_FLOAT32:
      return static_cast<const float*>(t.data)[i];
    case FF_MERGE_FLOAT16:
      return __half2float(static_cast<const __half*>(t.data)[i]);
    default:
      return __bfloat162float(static_cast<const __nv_bfloat16*>(t.data)[i]);
  }
}

// (x0, x1) rotated by the angle whose cosine and sine are c, s: apply_rotary's arithmetic.
__device__ __forceinline__ float rotated_first(float x0, float x1, float c, float s) {
  return __fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, s));
}
__device__ __forceinline__ float rotated_second(float x0, float x1, float c, float s) {
  return __fadd_rn(__fmul_rn(x0, s), __fmul_rn(x1, c));
}

// GPT-NeoX halves: feature e pairs with e + half (first half) or e - half (second half). The
// partner unit of [e0, e0 + 8) in `row` (for a vectorised row, half is a multiple of 8: the unit
// lies in one half).
template <bool kVec>
__device__ __forceinline__ Unit neox_partner(const RotaryTables& t, const uint16_t* row, int e0, int head_dim) {
  const int half = t.half;
  Unit partner;
  if constexpr (kVec) {
    load_unit<true>(row, e0 < half ? e0 + half : e0 - half, head_dim, partner);
  } else {
#pragma unroll
    for (int j = 0; j < kUnitElems; ++j) {
      const int e = e0 + j;
      partner.e[j] = e < t.dim ? row[e < half ? e + half : e - half] : 0;
    }
  }
  return partner;
}

// Rotates x (features [e0, e0 + 8)) with its GPT-NeoX partner at table row r.
template <typename T>
__device__ __forceinline__ void rotate_neox_unit(const RotaryTables& t, int e0, int64_t r, const Unit& partner,
                                                 Unit& x) {
  const int half = t.half;
#pragma unroll
  for (int j = 0; j < kUnitElems; ++j) {
    const int e = e0 + j;
    if (e < t.dim) {
      const bool first = e < half;
      const int col = first ? e : e - half;
      const float c = table_value(t.cos, t.dtype, r, col);
      const float s = table_value(t.sin, t.dtype, r, col);
      const float own = to_float<T>(x.e[j]), other = to_float<T>(partner.e[j]);
      x.e[j] = to_raw<T>(first ? rotated_first(own, other, c, s) : rotated_second(other, own, c, s));
    }
  }
}

// Rotates the unit x of features [e0, e0 + 8) at `position` (rotary rows clamped), its GPT-NeoX
// partner unit given (unused for interleaved pairs).
template <typename T>
__device__ __forceinline__ void rotate_loaded_unit(const RotaryTables& t, int e0, int64_t position, const Unit& partner,
                                                   Unit& x) {
  if (t.half == 0 || e0 >= t.dim) return;
  const int64_t r = clamp64(position, 0, t.seqlen_ro - 1);
  if (!t.interleaved) return rotate_neox_unit<T>(t, e0, r, partner, x);
#pragma unroll
  for (int j = 0; j < kUnitElems; j += 2) {
    const int e = e0 + j;  // even; rotary_dim is even, so e + 1 rotates with it
    if (e < t.dim) {
      const float c = table_value(t.cos, t.dtype, r, e / 2);
      const float s = table_value(t.sin, t.dtype, r, e / 2);
      const float x0 = to_float<T>(x.e[j]), x1 = to_float<T>(x.e[j + 1]);
      x.e[j] = to_raw<T>(rotated_first(x0, x1, c, s));
      x.e[j + 1] = to_raw<T>(rotated_second(x0, x1, c, s));
    }
  }
}

// The partner x's rotation needs: read from `row`, x's row in global memory, for GPT-NeoX pairs.
template <bool kVec>
__device__ __forceinline__ Unit rotary_partner(const RotaryTables& t, const uint16_t* row, int e0, int head_dim) {
  if (t.half == 0 || e0 >= t.dim || t.interleaved) return Unit{};
  return neox_partner<kVec>(t, row, e0, head_dim);
}

// Rotates the unit x of features [e0, e0 + 8) of `row` at `position`. `row` is the unit's row
// in global memory (the GPT-NeoX partner is read from it); head_dim bounds the partner reads of
// rows that are not vectorised.
template <typename T, bool kVec>
__device__ __forceinline__ void rotate_unit(const RotaryTables& t, const uint16_t* row, int e0, int head_dim,
                                            int64_t position, Unit& x) {
  rotate_loaded_unit<T>(t, e0, position, rotary_partner<kVec>(t, row, e0, head_dim), x);
}

}  // namespace rotary
}  // namespace forge_flash
