// The K/V append of flash_attn_with_kvcache (ff_append_kv): new keys/values into a contiguous
// or paged cache, the keys (and the queries, into q_out) rotated on the way, in one launch.
//
// A thread owns 8 features (a 16-byte vector of 16-bit elements, when every base and stride is
// aligned for it) of one row: of a new token's k row and its v row (the same destination), or
// of a q row. Its loads of k/v and of the cached length are independent, so a thread waits for
// two memory round trips: those, then the rotary tables and the block id, which need the
// position. A CTA of 256 threads covers 16 rows of head_dim 128 (a decode step of batch 64, 8
// KV heads and 32 query heads is 192 CTAs).
//
// Rotary matches forge_flash.kvcache_append.apply_rotary bit for bit: float32 products and
// sums, each rounded (__fmul_rn/__fadd_rn: no fused multiply-add, as torch's separate
// elementwise kernels), then one round-to-nearest-even to the dtype. Features that do not
// rotate, and v, move as raw bits.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <atomic>
#include <cstdint>

#include "append_kv.h"
#include "grid_dependency.cuh"

namespace forge_flash {
namespace {

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

bool aligned_for_vectors(const ff_tensor& t) {
  return reinterpret_cast<uintptr_t>(t.data) % 16 == 0 && t.batch_stride % kAppendUnit == 0 &&
         t.row_stride % kAppendUnit == 0 && t.head_stride % kAppendUnit == 0;
}

// 16-byte accesses: whole units of aligned rows, and (GPT-NeoX rotary) partners a whole unit
// away.
bool vectorisable(const ff_append_kv_args& a) {
  if (a.head_dim % kAppendUnit != 0) return false;
  if (a.rotary_cos.data != nullptr && !a.rotary_interleaved && (a.rotary_dim / 2) % kAppendUnit != 0) return false;
  if (!aligned_for_vectors(a.k) || !aligned_for_vectors(a.v) || !aligned_for_vectors(a.k_cache) ||
      !aligned_for_vectors(a.v_cache))
    return false;
  return !append_rotates_q(a) || (aligned_for_vectors(a.q) && aligned_for_vectors(a.q_out));
}

// Whether launches on the current device may be programmatic: compute capability 9.0+ and the
// kernel built as sm_90+ code (so that it waits for its predecessor). Asked once per device.
bool programmatic_capable(const void* kernel) {
  constexpr int kMaxDevices = 64;
  static std::atomic<int> known[kMaxDevices];  // 0 not asked yet, 1 no, 2 yes
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess || device < 0 || device >= kMaxDevices) return false;
  int answer = known[device].load(std::memory_order_relaxed);
  if (answer == 0) {
    int major = 0;
    cudaFuncAttributes attributes{};
    const bool yes = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) == cudaSuccess &&
                     cudaFuncGetAttributes(&attributes, kernel) == cudaSuccess && major >= 9 &&
                     attributes.ptxVersion >= 90;
    answer = yes ? 2 : 1;
    known[device].store(answer, std::memory_order_relaxed);
  }
  return answer == 2;
}

template <typename T, bool kVec>
cudaError_t launch(const AppendParams& p, unsigned ctas, bool programmatic, cudaStream_t stream) {
  const void* kernel = reinterpret_cast<const void*>(&append_kv_kernel<T, kVec>);
  cudaLaunchConfig_t config{};
  config.gridDim = dim3(ctas), config.blockDim = dim3(kAppendThreads), config.stream = stream;
  cudaLaunchAttribute attribute[1]{};
  attribute[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute[0].val.programmaticStreamSerializationAllowed = 1;
  if (programmatic && programmatic_capable(kernel)) config.attrs = attribute, config.numAttrs = 1;
  return cudaLaunchKernelEx(&config, append_kv_kernel<T, kVec>, p);
}

}  // namespace

cudaError_t launch_append_kv(const ff_append_kv_args& args, cudaStream_t stream) {
  const int64_t threads = append_kv_threads(args);
  if (threads == 0) return cudaSuccess;
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
  const unsigned ctas = static_cast<unsigned>((threads + kAppendThreads - 1) / kAppendThreads);
  const bool programmatic = args.programmatic_launch != 0;
  const bool vec = vectorisable(p.a);
  if (args.dtype == FF_DTYPE_FLOAT16)
    return vec ? launch<half, true>(p, ctas, programmatic, stream) : launch<half, false>(p, ctas, programmatic, stream);
  return vec ? launch<__nv_bfloat16, true>(p, ctas, programmatic, stream)
             : launch<__nv_bfloat16, false>(p, ctas, programmatic, stream);
}

}  // namespace forge_flash
