// The K/V append kernel (see append_kv.cu) and the host-side preparation of its parameters.
// A header so that a host-only test (tests/c_api/append_kernel_host.cpp) runs this very code,
// thread by thread, without a GPU.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "append_kv.h"
#include "grid_dependency.cuh"

namespace forge_flash {
namespace append {  // the kernel's own helpers, apart from the forward kernels' names

struct AppendParams {
  ff_append_kv_args a;
  uint32_t units;       // units of kAppendUnit features per row
  uint32_t kv_threads;  // threads of the k/v rows (the q rows' threads follow)
  uint32_t threads;     // threads with a row unit
  int half;             // rotary_dim / 2; 0 without rotary
  int64_t capacity;     // keys a sequence can hold: cache_seqlen, or max_blocks * page_size
};

union Unit {
  uint4 vector;
  uint16_t e[kAppendUnit];
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

__device__ __forceinline__ const uint16_t* row_of(const ff_tensor& t, int64_t b, int64_t s, int64_t h) {
  return static_cast<const uint16_t*>(t.data) + b * t.batch_stride + s * t.row_stride + h * t.head_stride;
}

template <bool kVec>
__device__ __forceinline__ void load_unit(const uint16_t* row, int e0, int head_dim, Unit& x) {
  if constexpr (kVec) {
    x.vector = *reinterpret_cast<const uint4*>(row + e0);
  } else {
#pragma unroll
    for (int j = 0; j < kAppendUnit; ++j) x.e[j] = e0 + j < head_dim ? row[e0 + j] : 0;
  }
}

template <bool kVec>
__device__ __forceinline__ void store_unit(const ff_tensor& t, int64_t b, int64_t s, int64_t h, int e0, int head_dim,
                                           const Unit& x) {
  uint16_t* row = const_cast<uint16_t*>(row_of(t, b, s, h));
  if constexpr (kVec) {
    *reinterpret_cast<uint4*>(row + e0) = x.vector;
  } else {
#pragma unroll
    for (int j = 0; j < kAppendUnit; ++j)
      if (e0 + j < head_dim) row[e0 + j] = x.e[j];
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

// Rotates the unit x of features [e0, e0 + 8) of `row` at `position` (rotary rows clamped).
template <typename T, bool kVec>
__device__ __forceinline__ void rotate_unit(const AppendParams& p, const uint16_t* row, int e0, int64_t position,
                                            Unit& x) {
  const ff_append_kv_args& a = p.a;
  if (p.half == 0 || e0 >= a.rotary_dim) return;
  const int64_t r = clamp64(position, 0, a.seqlen_ro - 1);
  if (a.rotary_interleaved) {
#pragma unroll
    for (int j = 0; j < kAppendUnit; j += 2) {
      const int e = e0 + j;  // even; rotary_dim is even, so e + 1 rotates with it
      if (e < a.rotary_dim) {
        const float c = table_value(a.rotary_cos, a.rotary_dtype, r, e / 2);
        const float s = table_value(a.rotary_sin, a.rotary_dtype, r, e / 2);
        const float x0 = to_float<T>(x.e[j]), x1 = to_float<T>(x.e[j + 1]);
        x.e[j] = to_raw<T>(rotated_first(x0, x1, c, s));
        x.e[j + 1] = to_raw<T>(rotated_second(x0, x1, c, s));
      }
    }
    return;
  }
  // GPT-NeoX halves: feature e pairs with e + half (first half) or e - half (second half).
  const int half = p.half;
  Unit partner;
  if constexpr (kVec) {  // half is a multiple of 8 here: the unit lies in one half
    load_unit<true>(row, e0 < half ? e0 + half : e0 - half, a.head_dim, partner);
  } else {
#pragma unroll
    for (int j = 0; j < kAppendUnit; ++j) {
      const int e = e0 + j;
      partner.e[j] = e < a.rotary_dim ? row[e < half ? e + half : e - half] : 0;
    }
  }
#pragma unroll
  for (int j = 0; j < kAppendUnit; ++j) {
    const int e = e0 + j;
    if (e < a.rotary_dim) {
      const bool first = e < half;
      const int col = first ? e : e - half;
      const float c = table_value(a.rotary_cos, a.rotary_dtype, r, col);
      const float s = table_value(a.rotary_sin, a.rotary_dtype, r, col);
      const float own = to_float<T>(x.e[j]), other = to_float<T>(partner.e[j]);
      x.e[j] = to_raw<T>(first ? rotated_first(own, other, c, s) : rotated_second(other, own, c, s));
    }
  }
}

template <typename T, bool kVec>
__global__ void __launch_bounds__(kAppendThreads) append_kv_kernel(const __grid_constant__ AppendParams p) {
  wait_for_previous_grid();  // k, v, q and the lengths may come from the previous kernel
  allow_next_grid_launch();  // the attention may start now: it waits for this grid's completion
  const ff_append_kv_args& a = p.a;
  const uint32_t t = blockIdx.x * kAppendThreads + threadIdx.x;
  if (a.seqlens_out != nullptr && t < static_cast<uint32_t>(a.batch_size))  // int32 arithmetic, as torch's
    a.seqlens_out[t] = static_cast<int32_t>(static_cast<uint32_t>(a.cache_seqlens[t]) + a.seqlen_new);
  if (t >= p.threads) return;

  const bool kv = t < p.kv_threads;
  const uint32_t local = kv ? t : t - p.kv_threads;
  const uint32_t row = local / p.units;
  const int e0 = static_cast<int>(local - row * p.units) * kAppendUnit;
  const uint32_t heads = kv ? a.num_heads_k : a.num_heads;
  const uint32_t seqlen = kv ? a.seqlen_new : a.seqlen_q;
  const uint32_t h = row % heads, token = row / heads;
  const uint32_t i = token % seqlen, b = token / seqlen;
  const int64_t cached = a.cache_seqlens[b];

  if (!kv) {  // a q row, rotated into q_out
    const uint16_t* q_row = row_of(a.q, b, i, h);
    Unit x;
    load_unit<kVec>(q_row, e0, a.head_dim, x);
    rotate_unit<T, kVec>(p, q_row, e0, cached + (a.query_per_token ? i : 0), x);
    store_unit<kVec>(a.q_out, b, i, h, e0, a.head_dim, x);
    return;
  }
  const uint16_t* k_row = row_of(a.k, b, i, h);
  Unit k, v;
  load_unit<kVec>(k_row, e0, a.head_dim, k);
  load_unit<kVec>(row_of(a.v, b, i, h), e0, a.head_dim, v);
  const int64_t position = cached + i;
  rotate_unit<T, kVec>(p, k_row, e0, position, k);
  int64_t dst_batch, dst_row;
  if (a.block_table != nullptr) {
    const int64_t slot = clamp64(position, 0, p.capacity - 1);
    const int64_t column = slot / a.cache_seqlen;
    dst_row = slot - column * a.cache_seqlen;
    dst_batch = clamp64(a.block_table[b * a.block_table_stride + column], 0, a.cache_batch - 1);
  } else {
    dst_batch = a.cache_batch_idx != nullptr ? clamp64(a.cache_batch_idx[b], 0, a.cache_batch - 1) : b;
    dst_row = clamp64(position, 0, a.cache_seqlen - 1);
  }
  store_unit<kVec>(a.k_cache, dst_batch, dst_row, h, e0, a.head_dim, k);
  store_unit<kVec>(a.v_cache, dst_batch, dst_row, h, e0, a.head_dim, v);
}

inline bool aligned_for_vectors(const ff_tensor& t) {
  return reinterpret_cast<uintptr_t>(t.data) % 16 == 0 && t.batch_stride % kAppendUnit == 0 &&
         t.row_stride % kAppendUnit == 0 && t.head_stride % kAppendUnit == 0;
}

// 16-byte accesses: whole units of aligned rows, and (GPT-NeoX rotary) partners a whole unit
// away.
inline bool vectorisable(const ff_append_kv_args& a) {
  if (a.head_dim % kAppendUnit != 0) return false;
  if (a.rotary_cos.data != nullptr && !a.rotary_interleaved && (a.rotary_dim / 2) % kAppendUnit != 0) return false;
  if (!aligned_for_vectors(a.k) || !aligned_for_vectors(a.v) || !aligned_for_vectors(a.k_cache) ||
      !aligned_for_vectors(a.v_cache))
    return false;
  return !append_rotates_q(a) || (aligned_for_vectors(a.q) && aligned_for_vectors(a.q_out));
}

// The kernel's parameters for a call the C API has checked (append_kv_threads(args) > 0).
inline AppendParams make_append_params(const ff_append_kv_args& args) {
  AppendParams p{};
  p.a = args;
  if (!append_rotates_q(args)) p.a.q.data = p.a.q_out.data = nullptr;
  p.units = static_cast<uint32_t>((args.head_dim + kAppendUnit - 1) / kAppendUnit);
  p.kv_threads =
      static_cast<uint32_t>(static_cast<int64_t>(args.batch_size) * args.seqlen_new * args.num_heads_k) * p.units;
  const int64_t q_rows =
      append_rotates_q(args) ? static_cast<int64_t>(args.batch_size) * args.seqlen_q * args.num_heads : 0;
  p.threads = p.kv_threads + static_cast<uint32_t>(q_rows) * p.units;
  p.half = args.rotary_cos.data != nullptr ? args.rotary_dim / 2 : 0;
  p.capacity =
      args.block_table != nullptr ? static_cast<int64_t>(args.max_blocks) * args.cache_seqlen : args.cache_seqlen;
  return p;
}

}  // namespace append
}  // namespace forge_flash
