// Launch of the K/V append kernel (append_kv.cu); the C API (csrc/api/append_api.cpp) checks
// every argument first.
#pragma once

#include <cuda_runtime_api.h>
#include <stdint.h>

#include "forge_flash/flash_api.h"

namespace forge_flash {

constexpr int kAppendThreads = 256;
constexpr int kAppendUnit = 8;  // features per thread: one 16-byte vector of 16-bit elements

// a * b, or INT64_MAX when that overflows (sizes are >= 0).
inline int64_t saturating_mul(int64_t a, int64_t b) { return a != 0 && b > INT64_MAX / a ? INT64_MAX : a * b; }

// Whether the call rotates q into q_out (the q rows of the grid).
inline bool append_rotates_q(const ff_append_kv_args& a) {
  return a.q.data != nullptr && a.q_out.data != nullptr && a.rotary_cos.data != nullptr;
}

// Threads of the append's grid: one per unit of 8 features of each k/v row (its k and its v)
// and of each rotated q row (`rotates_q`: append_rotates_q of the launched arguments), and at
// least one per sequence when seqlens_out is written. The C API refuses calls above INT32_MAX
// (the kernel indexes threads in 32 bits).
inline int64_t append_kv_threads(const ff_append_kv_args& a, bool rotates_q) {
  const int64_t units = (static_cast<int64_t>(a.head_dim) + kAppendUnit - 1) / kAppendUnit;
  const int64_t kv_rows = saturating_mul(saturating_mul(a.batch_size, a.seqlen_new), a.num_heads_k);
  const int64_t q_rows = rotates_q ? saturating_mul(saturating_mul(a.batch_size, a.seqlen_q), a.num_heads) : 0;
  const int64_t rows = kv_rows > INT64_MAX - q_rows ? INT64_MAX : kv_rows + q_rows;
  const int64_t threads = saturating_mul(rows, units);
  return a.seqlens_out != nullptr && threads < a.batch_size ? a.batch_size : threads;
}
inline int64_t append_kv_threads(const ff_append_kv_args& a) { return append_kv_threads(a, append_rotates_q(a)); }

// CTAs of the append's grid (kAppendThreads threads each).
inline int64_t append_kv_ctas(const ff_append_kv_args& a, bool rotates_q) {
  return (append_kv_threads(a, rotates_q) + kAppendThreads - 1) / kAppendThreads;
}

inline bool aligned_for_vectors(const ff_tensor& t) {
  return reinterpret_cast<uintptr_t>(t.data) % 16 == 0 && t.batch_stride % kAppendUnit == 0 &&
         t.row_stride % kAppendUnit == 0 && t.head_stride % kAppendUnit == 0;
}

// 16-byte accesses: whole units of aligned rows, and (GPT-NeoX rotary) partners a whole unit
// away.
inline bool append_vectorisable(const ff_append_kv_args& a) {
  if (a.head_dim % kAppendUnit != 0) return false;
  if (a.rotary_cos.data != nullptr && !a.rotary_interleaved && (a.rotary_dim / 2) % kAppendUnit != 0) return false;
  if (!aligned_for_vectors(a.k) || !aligned_for_vectors(a.v) || !aligned_for_vectors(a.k_cache) ||
      !aligned_for_vectors(a.v_cache))
    return false;
  return !append_rotates_q(a) || (aligned_for_vectors(a.q) && aligned_for_vectors(a.q_out));
}

cudaError_t launch_append_kv(const ff_append_kv_args& args, cudaStream_t stream);

}  // namespace forge_flash
