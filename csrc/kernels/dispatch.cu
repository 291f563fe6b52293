#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <mutex>
#include <utility>

#include "combine_kernel.cuh"
#include "dispatch.h"

namespace forge_flash {
namespace {

constexpr int kHeadDims[] = {32, 64, 96, 128, 160, 192, 224, 256};

FwdKernels kernels_for(DType dtype, int routed) {
#define FORGE_FLASH_CASE(D) \
  case D:                   \
    return dtype == DType::kFloat16 ? fwd_kernels<half, D>() : fwd_kernels<__nv_bfloat16, D>();
  switch (routed) { FORGE_FLASH_FOR_EACH_HEAD_DIM(FORGE_FLASH_CASE) }
#undef FORGE_FLASH_CASE
  return {};
}

struct DeviceFacts {
  int sm_count;
  int cc_major;     // compute capability
  int ctas_per_sm;  // occupancy of this kernel on this device
};

// Per (kernel, device): raise the dynamic shared-memory limit once (needed above 48 KB)
// and remember the occupancy the split heuristic needs. Host-only calls, no sync.
cudaError_t device_facts(const KernelInfo& k, DeviceFacts* out) {
  static std::mutex mutex;
  static std::map<std::pair<const void*, int>, DeviceFacts> cache;
  int device = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err != cudaSuccess) return err;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find({k.kernel, device});
  if (it != cache.end()) {
    *out = it->second;
    return cudaSuccess;
  }
  DeviceFacts facts{};
  if ((err = cudaDeviceGetAttribute(&facts.sm_count, cudaDevAttrMultiProcessorCount, device))) return err;
  if ((err = cudaDeviceGetAttribute(&facts.cc_major, cudaDevAttrComputeCapabilityMajor, device))) return err;
  if ((err = cudaFuncSetAttribute(k.kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, k.smem_bytes))) return err;
  if ((err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&facts.ctas_per_sm, k.kernel, k.threads, k.smem_bytes)))
    return err;
  facts.ctas_per_sm = std::max(facts.ctas_per_sm, 1);
  cache.emplace(std::make_pair(k.kernel, device), facts);
  *out = facts;
  return cudaSuccess;
}

// Split-KV only when the grid cannot fill the GPU: among split counts that change the
// tiles per split, take the smallest whose wave efficiency is within 85% of the best.
int choose_num_splits(int64_t ctas, int n_blocks, const DeviceFacts& d) {
  const int64_t capacity = static_cast<int64_t>(d.sm_count) * d.ctas_per_sm;
  if (n_blocks <= 1 || ctas * 5 >= capacity * 4) return 1;
  const int max_splits = std::min<int>(kMaxSplits, n_blocks);
  auto efficiency = [&](int s) {
    const double waves = static_cast<double>(ctas * s) / capacity;
    return waves / std::ceil(waves);
  };
  auto distinct = [&](int s) {  // s splits that give a different tile count per split
    return s == 1 || (n_blocks + s - 1) / s != (n_blocks + s - 2) / (s - 1);
  };
  double best = 0;
  for (int s = 1; s <= max_splits; ++s)
    if (distinct(s)) best = std::max(best, efficiency(s));
  for (int s = 1; s <= max_splits; ++s)
    if (distinct(s) && efficiency(s) >= 0.85 * best) return s;
  return 1;
}

size_t align_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

// FORGE_FLASH_DISABLE_SM90=1 keeps Hopper GPUs on the SM80 kernels (an escape hatch, and
// the way to compare the two data paths on one machine). Read once.
bool sm90_enabled() {
  static const bool enabled = [] {
    const char* v = std::getenv("FORGE_FLASH_DISABLE_SM90");
    return v == nullptr || v[0] == '\0' || v[0] == '0';
  }();
  return enabled;
}

}  // namespace

int routed_head_dim(int head_dim) {
  for (int d : kHeadDims)
    if (head_dim <= d) return d;
  return 0;
}

const char* plan_fwd(FwdParams& p, DType dtype, FwdPlan* plan, cudaError_t* cuda_error) {
  *cuda_error = cudaSuccess;
  const FwdKernels kernels = kernels_for(dtype, routed_head_dim(p.head_dim));
  if (kernels.prefill.kernel == nullptr) return "no kernel for this head_dim";
  p.group = p.num_heads / p.num_heads_k;

  // Decode-shaped calls fold a GQA group's query heads into the rows of one tile, so K/V
  // are read once per group and the tensor cores see group * seqlen_q rows instead of 1.
  const int64_t packed_rows = static_cast<int64_t>(p.seqlen_q) * p.group;
  p.pack_gqa = p.group > 1 && packed_rows <= kernels.prefill.block_m;
  const int64_t rows = p.pack_gqa ? packed_rows : p.seqlen_q;
  plan->kernel = rows <= kernels.decode.block_m ? kernels.decode : kernels.prefill;

  DeviceFacts facts{};
  if ((*cuda_error = device_facts(plan->kernel, &facts)) != cudaSuccess) return "device query failed";

  const int64_t m_blocks = std::max<int64_t>(1, (rows + plan->kernel.block_m - 1) / plan->kernel.block_m);
  const int64_t heads = p.pack_gqa ? p.num_heads_k : p.num_heads;
  const int64_t ctas = m_blocks * p.batch * heads;
  if (ctas > INT_MAX) return "batch * heads * query blocks exceeds the launch grid (2^31 - 1)";
  plan->num_m_blocks = static_cast<int>(m_blocks);

  const int n_blocks = (p.seqlen_k + plan->kernel.block_n - 1) / plan->kernel.block_n;
  p.num_splits = choose_num_splits(ctas, n_blocks, facts);
  // Hopper: single-pass prefill at head_dim 64/128 runs on the wgmma kernel.
  const KernelInfo& hopper = kernels.sm90;
  if (p.num_splits == 1 && plan->kernel.kernel == kernels.prefill.kernel && hopper.kernel != nullptr &&
      p.head_dim == routed_head_dim(p.head_dim) && facts.cc_major == 9 && sm90_enabled()) {
    DeviceFacts hopper_facts{};
    if ((*cuda_error = device_facts(hopper, &hopper_facts)) != cudaSuccess) return "device query failed";
    const int64_t hopper_m_blocks = (rows + hopper.block_m - 1) / hopper.block_m;
    if (hopper_m_blocks * p.batch * heads <= INT_MAX) {
      plan->kernel = hopper;
      plan->num_m_blocks = static_cast<int>(hopper_m_blocks);
    }
  }
  p.num_rows = p.cu_seqlens_q != nullptr ? static_cast<int64_t>(p.num_heads) * p.total_q
                                         : static_cast<int64_t>(p.batch) * p.num_heads * p.seqlen_q;
  plan->grid = dim3(static_cast<unsigned>(static_cast<int64_t>(plan->num_m_blocks) * p.batch * heads),
                    static_cast<unsigned>(p.num_splits), 1);
  plan->workspace_bytes = 0;
  if (p.num_splits > 1) {
    const size_t partials = static_cast<size_t>(p.num_splits) * p.num_rows;
    plan->workspace_bytes = align_up(partials * p.head_dim * sizeof(float), 256) + partials * sizeof(float);
    if (p.num_rows > INT_MAX) return "too many output rows for the combine grid";
  }
  return nullptr;
}

cudaError_t launch_fwd(FwdParams& p, DType dtype, const FwdPlan& plan, void* workspace, cudaStream_t stream) {
  if (p.num_splits > 1) {
    const size_t partials = static_cast<size_t>(p.num_splits) * p.num_rows;
    p.partial_o = static_cast<float*>(workspace);
    p.partial_lse =
        reinterpret_cast<float*>(static_cast<char*>(workspace) + align_up(partials * p.head_dim * sizeof(float), 256));
  }
  int num_m_blocks = plan.num_m_blocks;
  void* args[] = {&p, &num_m_blocks};
  cudaError_t err =
      cudaLaunchKernel(plan.kernel.kernel, plan.grid, dim3(plan.kernel.threads), args, plan.kernel.smem_bytes, stream);
  if (err != cudaSuccess || p.num_splits == 1) return err;
  const dim3 grid(static_cast<unsigned>(p.num_rows));
  if (dtype == DType::kFloat16)
    combine_kernel<half><<<grid, kCombineThreads, 0, stream>>>(p);
  else
    combine_kernel<__nv_bfloat16><<<grid, kCombineThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace forge_flash
