// Encoding the TMA tensor maps of one forward call. The driver's encoder is reached through
// the runtime (cudaGetDriverEntryPoint), so the plugin still links no libcuda: the driver
// that runs the kernels provides it.
#include <cuda.h>
#include <cudaTypedefs.h>

#include <cstdint>

#include "tma_maps.h"

namespace forge_flash {
namespace {

PFN_cuTensorMapEncodeTiled_v12000 encoder() {
  static const PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* entry = nullptr;
    cudaDriverEntryPointQueryResult found{};
#if CUDART_VERSION >= 12050
    const cudaError_t err =
        cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &entry, 12000, cudaEnableDefault, &found);
#else
    const cudaError_t err = cudaGetDriverEntryPoint("cuTensorMapEncodeTiled", &entry, cudaEnableDefault, &found);
#endif
    if (err != cudaSuccess || found != cudaDriverEntryPointSuccess) {
      cudaGetLastError();  // no encoder: the copies serve every call
      entry = nullptr;
    }
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(entry);
  }();
  return fn;
}

// One (head_dim, heads, rows, batch) tensor with element strides in `strides` (head, row,
// batch). TMA wants 16-byte multiples; a dimension of extent 1 never steps, so its stride is
// replaced by a packed one (a broadcast or odd stride there would otherwise refuse the map).
bool encode(TmaDescriptor* map, const void* data, bool bf16, int head_dim, int heads, int rows, int batch,
            const int64_t (&strides)[3], int swizzle, int box_rows) {
  const uint64_t dims[4] = {static_cast<uint64_t>(head_dim), static_cast<uint64_t>(heads), static_cast<uint64_t>(rows),
                            static_cast<uint64_t>(batch)};
  uint64_t bytes[3];
  uint64_t packed = static_cast<uint64_t>(head_dim) * 2;
  for (int i = 0; i < 3; ++i) {
    packed = (packed + 15) / 16 * 16;
    bytes[i] = dims[i + 1] == 1 ? packed : static_cast<uint64_t>(strides[i]) * 2;
    if (strides[i] < 0 || bytes[i] == 0 || bytes[i] % 16 != 0 || bytes[i] >= (uint64_t{1} << 40)) return false;
    packed = bytes[i] * dims[i + 1];
  }
  if (reinterpret_cast<uintptr_t>(data) % 16 != 0) return false;
  const cuuint32_t box[4] = {static_cast<cuuint32_t>(swizzle / 2), 1, static_cast<cuuint32_t>(box_rows), 1};
  const cuuint32_t unit[4] = {1, 1, 1, 1};
  const CUresult r = encoder()(reinterpret_cast<CUtensorMap*>(map),
                               bf16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16, 4,
                               const_cast<void*>(data), dims, bytes, box, unit, CU_TENSOR_MAP_INTERLEAVE_NONE,
                               swizzle == 128 ? CU_TENSOR_MAP_SWIZZLE_128B : CU_TENSOR_MAP_SWIZZLE_64B,
                               CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  return r == CUDA_SUCCESS;
}

}  // namespace

void set_tma_maps(FwdParams& p, bool bf16, int swizzle, int block_m, int block_n) {
  p.tma = false;
  if (swizzle != 64 && swizzle != 128) return;
  if (p.cu_seqlens_q != nullptr || p.cu_seqlens_k != nullptr || p.seqused_k != nullptr || p.block_table != nullptr ||
      p.k_start != nullptr || p.pack_gqa || p.seqlen_new > 0 || encoder() == nullptr)
    return;
  const int64_t q_strides[3] = {p.q_head_stride, p.q_row_stride, p.q_batch_stride};
  const int64_t k_strides[3] = {p.k_head_stride, p.k_row_stride, p.k_batch_stride};
  const int64_t v_strides[3] = {p.v_head_stride, p.v_row_stride, p.v_batch_stride};
  // K/V batch rows: a call with kv_batch_idx reads rows of a cache with kv_batch_rows of them.
  const int kv_batch = p.kv_batch_idx != nullptr ? p.kv_batch_rows : p.batch;
  p.tma = encode(&p.tma_q, p.q, bf16, p.head_dim, p.num_heads, p.seqlen_q, p.batch, q_strides, swizzle, block_m) &&
          encode(&p.tma_k, p.k, bf16, p.head_dim, p.num_heads_k, p.seqlen_k, kv_batch, k_strides, swizzle, block_n) &&
          encode(&p.tma_v, p.v, bf16, p.head_dim, p.num_heads_k, p.seqlen_k, kv_batch, v_strides, swizzle, block_n);
}

}  // namespace forge_flash
