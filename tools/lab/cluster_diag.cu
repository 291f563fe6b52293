// How many thread-block clusters a GPU co-schedules, by cluster size and CTA shared memory, and
// where 8 clusters land under each scheduling policy (SMs used, most CTAs on one SM, time against
// one CTA's spin: two waves take twice as long). The decode kernel's tile size rests on its
// answer (csrc/kernels/tile_config.h).
//
//   nvcc -O2 -arch=sm_90a -o cluster_diag tools/lab/cluster_diag.cu && ./cluster_diag
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <vector>

namespace {

__global__ void spin_kernel(int* smid_out, long long spin) {
  unsigned id;
  asm volatile("mov.u32 %0, %%smid;" : "=r"(id));
  if (threadIdx.x == 0) smid_out[blockIdx.y * gridDim.x + blockIdx.x] = static_cast<int>(id);
  const long long t0 = clock64();
  while (clock64() - t0 < spin) {
  }
}

// A launch of `clusters` clusters of `size` CTAs (grid.y = cluster.y = size) of 128 threads.
struct ClusterLaunch {
  cudaLaunchConfig_t config{};
  cudaLaunchAttribute attrs[2]{};

  ClusterLaunch(int clusters, int size, int smem_kb, cudaClusterSchedulingPolicy policy) {
    config.gridDim = dim3(clusters, size);
    config.blockDim = dim3(128);
    config.dynamicSmemBytes = smem_kb * 1024;
    attrs[0].id = cudaLaunchAttributeClusterDimension;
    attrs[0].val.clusterDim.x = 1, attrs[0].val.clusterDim.y = size, attrs[0].val.clusterDim.z = 1;
    attrs[1].id = cudaLaunchAttributeClusterSchedulingPolicyPreference;
    attrs[1].val.clusterSchedulingPolicyPreference = policy;
    config.attrs = attrs, config.numAttrs = 2;
  }
};

// Runs 8 clusters of `size` twice (the second timed) and prints where they landed.
void place_eight(int size, int smem_kb, cudaClusterSchedulingPolicy policy, int* smids) {
  ClusterLaunch launch(8, size, smem_kb, policy);
  long long spin = 2000000;  // about 1 ms
  void* args[] = {&smids, &spin};
  cudaEvent_t begin, end;
  cudaEventCreate(&begin), cudaEventCreate(&end);
  cudaLaunchKernelExC(&launch.config, reinterpret_cast<const void*>(spin_kernel), args);
  cudaEventRecord(begin);
  cudaLaunchKernelExC(&launch.config, reinterpret_cast<const void*>(spin_kernel), args);
  cudaEventRecord(end);
  const cudaError_t err = cudaEventSynchronize(end);
  float ms = 0;
  cudaEventElapsedTime(&ms, begin, end);
  std::vector<int> host(8 * size);
  cudaMemcpy(host.data(), smids, host.size() * sizeof(int), cudaMemcpyDeviceToHost);
  std::map<int, int> per_sm;
  for (int sm : host) per_sm[sm]++;
  int most = 0;
  for (const auto& [sm, ctas] : per_sm) most = std::max(most, ctas);
  std::printf(" | 8x%d: %s %.2f ms, %zu SMs, max %d CTAs/SM", size, cudaGetErrorString(err), ms, per_sm.size(), most);
}

}  // namespace

int main() {
  int sms = 0;
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
  std::printf("SMs %d\n", sms);
  cudaFuncSetAttribute(spin_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 227 * 1024);
  cudaFuncSetAttribute(spin_kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1);
  int* smids = nullptr;
  cudaMalloc(&smids, 4096 * sizeof(int));
  for (int kb : {34, 68, 100, 116, 132, 200}) {
    std::printf("smem %3d KB: max active clusters by size:", kb);
    for (int size : {1, 4, 8, 12, 14, 15, 16}) {
      ClusterLaunch launch(1, size, kb, cudaClusterSchedulingPolicyDefault);
      int n = -1;
      const cudaError_t err =
          cudaOccupancyMaxActiveClusters(&n, reinterpret_cast<const void*>(spin_kernel), &launch.config);
      std::printf(" %d:%d", size, err == cudaSuccess ? n : -1);
    }
    std::printf("\n");
    const struct {
      const char* name;
      cudaClusterSchedulingPolicy policy;
    } policies[] = {{"spread", cudaClusterSchedulingPolicySpread},
                    {"load-balancing", cudaClusterSchedulingPolicyLoadBalancing}};
    for (const auto& p : policies) {
      std::printf("  %-14s", p.name);
      for (int size : {16, 15, 12}) place_eight(size, kb, p.policy, smids);
      std::printf("\n");
    }
  }
  return 0;
}
