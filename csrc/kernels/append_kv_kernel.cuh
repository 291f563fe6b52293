// The K/V append kernel (see append_kv.cu) and the host-side preparation of its parameters.
// A header so that a host-only test (tests/c_api/append_kernel_host.cpp) runs this very code,
// thread by thread, without a GPU.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "append_kv.h"
#include "grid_dependency.cuh"
#include "rotary.cuh"

namespace forge_flash {
namespace append {  // the kernel's own helpers, apart from the forward kernels' names

using namespace rotary;
static_assert(kAppendUnit == kUnitElems, "a thread's features are one rotary unit");

struct AppendParams {
  ff_append_kv_args a;
  uint32_t units;       // units of kAppendUnit features per row
  uint32_t kv_threads;  // threads of the k/v rows (the q rows' threads follow)
  uint32_t threads;     // threads with a row unit
  RotaryTables rotary;  // half = 0 without rotary
  int64_t capacity;     // keys a sequence can hold: cache_seqlen, or max_blocks * page_size
};

__device__ __forceinline__ const uint16_t* row_of(const ff_tensor& t, int64_t b, int64_t s, int64_t h) {
  return static_cast<const uint16_t*>(t.data) + b * t.batch_stride + s * t.row_stride + h * t.head_stride;
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
    rotate_unit<T, kVec>(p.rotary, q_row, e0, a.head_dim, cached + (a.query_per_token ? i : 0), x);
    store_unit<kVec>(a.q_out, b, i, h, e0, a.head_dim, x);
    return;
  }
  const uint16_t* k_row = row_of(a.k, b, i, h);
  Unit k, v;
  load_unit<kVec>(k_row, e0, a.head_dim, k);
  load_unit<kVec>(row_of(a.v, b, i, h), e0, a.head_dim, v);
  const int64_t position = cached + i;
  rotate_unit<T, kVec>(p.rotary, k_row, e0, a.head_dim, position, k);
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
  p.rotary = rotary_tables(args);
  p.capacity =
      args.block_table != nullptr ? static_cast<int64_t>(args.max_blocks) * args.cache_seqlen : args.cache_seqlen;
  return p;
}

}  // namespace append
}  // namespace forge_flash
