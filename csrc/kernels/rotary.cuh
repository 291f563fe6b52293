// Rotary position embedding of 16-bit rows, 8 features (one 16-byte vector) at a time: shared
// by the K/V append kernel (append_kv_kernel.cuh) and the decode kernel's fused append
// (decode_kernel.cuh), so both round exactly as forge_flash.kvcache_append.apply_rotary does.
// Host-compilable: tests/c_api/append_kernel_host.cpp runs it on the CPU.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <cstring>

#include "forge_flash/flash_api.h"
#include "params.h"

namespace forge_flash {
namespace rotary {

constexpr int kUnitElems = 8;  // features per unit: one 16-byte vector of 16-bit elements

union Unit {
  uint4 vector;
  uint16_t e[kUnitElems];
};

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

// The cosines and sines of a unit's 8 features (feature j's pair angle in c[j], s[j]), read
// before any rotation uses them: the rotations of a decode step's q and new keys wait for one
// table round trip, issued with their own loads, instead of one after those landed. (H200, one
// token's fused step over pages of 16 keys, batch 1 / 8 / 64: 3.1 / 3.5 / 5.7 us added with
// the round trips in series, 2.3 / 1.6 / 2.8 us without; docs/bench-history/2026-12-01.md.)
struct Angles {
  float c[kUnitElems], s[kUnitElems];
};

// Table column of feature e: interleaved pairs (2i, 2i + 1) share column i; GPT-NeoX halves
// pair e with e + half.
__device__ __forceinline__ int table_column(const RotaryTables& t, int e) {
  return t.interleaved ? e / 2 : e < t.half ? e : e - t.half;
}

// kCols consecutive table entries from a 16-byte aligned row (kCols * sizeof(S) a multiple of 8):
// 16-bit entries in one 16- or 8-byte load, float32 ones in 16-byte loads.
template <typename S, int kCols>
__device__ __forceinline__ void load_columns(const S* src, float (&v)[kCols]) {
  if constexpr (sizeof(S) == 4) {
#pragma unroll
    for (int i = 0; i < kCols; i += 4) {
      const float4 f = *reinterpret_cast<const float4*>(src + i);
      v[i] = f.x, v[i + 1] = f.y, v[i + 2] = f.z, v[i + 3] = f.w;
    }
  } else {
    static_assert(kCols == 8 || kCols == 4, "one 16- or 8-byte load");
    union {
      uint4 wide;
      uint2 narrow;
      uint16_t e[8];
    } raw;
    if constexpr (kCols == 8)
      raw.wide = *reinterpret_cast<const uint4*>(src);
    else
      raw.narrow = *reinterpret_cast<const uint2*>(src);
#pragma unroll
    for (int i = 0; i < kCols; ++i) v[i] = to_float<S>(raw.e[i]);
  }
}

// The unit's columns as consecutive vectors (RotaryTables::vectors): 8 (GPT-NeoX) or 4 pairs'
// (interleaved) of each table's row.
template <typename S>
__device__ __forceinline__ void load_angle_vectors(const RotaryTables& t, int e0, int64_t r, Angles& a) {
  const S* cos = static_cast<const S*>(t.cos.data) + r * t.cos.row_stride;
  const S* sin = static_cast<const S*>(t.sin.data) + r * t.sin.row_stride;
  const int col0 = table_column(t, e0);
  if (t.interleaved) {
    float c[4], s[4];
    load_columns<S, 4>(cos + col0, c);
    load_columns<S, 4>(sin + col0, s);
#pragma unroll
    for (int j = 0; j < kUnitElems; ++j) a.c[j] = c[j / 2], a.s[j] = s[j / 2];
  } else {
    load_columns<S, 8>(cos + col0, a.c);
    load_columns<S, 8>(sin + col0, a.s);
  }
}

__device__ __forceinline__ float bits_to_float(uint32_t bits) {
  float f;
  memcpy(&f, &bits, sizeof f);  // a register move on the GPU; also compiles for the host test
  return f;
}
// One table entry of any dtype, in float32 (exactly: float32 as it is, 16-bit entries widened),
// by one code path for the three: its low 16 bits, and for float32 its high ones.
__device__ __forceinline__ float any_table_entry(ff_merge_dtype dtype, const unsigned char* at) {
  const uint32_t lo = *reinterpret_cast<const uint16_t*>(at);
  const uint32_t hi = dtype == FF_MERGE_FLOAT32 ? *reinterpret_cast<const uint16_t*>(at + 2) : 0u;
  const float wide = bits_to_float(lo | hi << 16), bf16 = bits_to_float(lo << 16);
  const float fp16 = __half2float(__ushort_as_half(static_cast<unsigned short>(lo)));
  return dtype == FF_MERGE_FLOAT32 ? wide : dtype == FF_MERGE_BFLOAT16 ? bf16 : fp16;
}

// The cosines and sines of features [e0, e0 + 8) at `position` (rotary rows clamped into the
// tables); zeros where nothing rotates. Vector loads where RotaryTables::vectors allows, else
// one scalar path for every dtype.
//
// Why this shape: the decode kernel's fused append (fused_append.cuh) inlines these loads at
// three places, and a decode step of one sequence executes its code once per warp, cold: on
// the H200 (2026-12-02) the fused step's warps spent 38% of their stall samples waiting for
// instructions (the plain decode kernel's: 9%). With a scalar path per dtype (three copies of
// 16 entry loads each) and no vectors there, a paged step with rotary added 2.0-2.9 us to the
// attention at batch 1-64; with vectors and one scalar path 1.7-2.2 us over two calls (and the
// kernel's SASS 10.7k instructions instead of 14.2k; docs/bench-history/2026-12-02.md).
__device__ __forceinline__ Angles load_angles(const RotaryTables& t, int e0, int64_t position) {
  Angles a{};
  if (t.half == 0 || e0 >= t.dim) return a;
  const int64_t r = clamp64(position, 0, t.seqlen_ro - 1);
  if (t.vectors) {
    switch (t.dtype) {  // uniform across the grid
      case FF_MERGE_FLOAT32:
        load_angle_vectors<float>(t, e0, r, a);
        break;
      case FF_MERGE_FLOAT16:
        load_angle_vectors<__half>(t, e0, r, a);
        break;
      default:
        load_angle_vectors<__nv_bfloat16>(t, e0, r, a);
    }
    return a;
  }
  const int64_t bytes = t.dtype == FF_MERGE_FLOAT32 ? 4 : 2;
  const unsigned char* cos = static_cast<const unsigned char*>(t.cos.data) + r * t.cos.row_stride * bytes;
  const unsigned char* sin = static_cast<const unsigned char*>(t.sin.data) + r * t.sin.row_stride * bytes;
#pragma unroll
  for (int j = 0; j < kUnitElems; ++j) {
    const int e = e0 + j, col = table_column(t, e);
    a.c[j] = e < t.dim ? any_table_entry(t.dtype, cos + col * t.cos.col_stride * bytes) : 0.f;
    a.s[j] = e < t.dim ? any_table_entry(t.dtype, sin + col * t.sin.col_stride * bytes) : 0.f;
  }
  return a;
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

// Rotates the unit x of features [e0, e0 + 8) by its angles, its GPT-NeoX partner unit given
// (unused for interleaved pairs).
template <typename T>
__device__ __forceinline__ void rotate_unit_by(const RotaryTables& t, int e0, const Angles& a, const Unit& partner,
                                               Unit& x) {
  if (t.half == 0 || e0 >= t.dim) return;
  if (!t.interleaved) {
#pragma unroll
    for (int j = 0; j < kUnitElems; ++j) {
      const int e = e0 + j;
      if (e < t.dim) {
        const float own = to_float<T>(x.e[j]), other = to_float<T>(partner.e[j]);
        x.e[j] = to_raw<T>(e < t.half ? rotated_first(own, other, a.c[j], a.s[j])
                                      : rotated_second(other, own, a.c[j], a.s[j]));
      }
    }
    return;
  }
#pragma unroll
  for (int j = 0; j < kUnitElems; j += 2) {
    if (e0 + j < t.dim) {  // e0 + j is even and rotary_dim is even, so e0 + j + 1 rotates with it
      const float x0 = to_float<T>(x.e[j]), x1 = to_float<T>(x.e[j + 1]);
      x.e[j] = to_raw<T>(rotated_first(x0, x1, a.c[j], a.s[j]));
      x.e[j + 1] = to_raw<T>(rotated_second(x0, x1, a.c[j], a.s[j]));
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
  rotate_unit_by<T>(t, e0, load_angles(t, e0, position), rotary_partner<kVec>(t, row, e0, head_dim), x);
}

}  // namespace rotary
}  // namespace forge_flash
