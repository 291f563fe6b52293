// How many thread-block clusters a GPU co-schedules, by cluster size and CTA shared memory, and
// where 8 clusters land (SMs used, CTAs per SM, time against one CTA's spin: two waves take
// twice as long). The decode kernel's tile size rests on its answer (tile_config.h).
//
//   nvcc -O2 -arch=sm_90a -o cluster_diag tools/cluster_diag.cu && ./cluster_diag
#include <cuda_runtime.h>

#include <cstdio>
#include <map>
#include <set>
#include <vector>
__global__ void dummy(int* smid_out, long long spin) {
  unsigned id;
  asm volatile("mov.u32 %0, %%smid;" : "=r"(id));
  if (threadIdx.x == 0) smid_out[blockIdx.y * gridDim.x + blockIdx.x] = id;
  long long t0 = clock64();
  while (clock64() - t0 < spin) {
  }
}
int main() {
  int dev = 0, sms = 0;
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
  cudaFuncSetAttribute(dummy, cudaFuncAttributeMaxDynamicSharedMemorySize, 227 * 1024);
  cudaFuncSetAttribute(dummy, cudaFuncAttributeNonPortableClusterSizeAllowed, 1);
  int* d;
  cudaMalloc(&d, 4096 * sizeof(int));
  for (int kb : {34, 68, 100, 116, 132, 200}) {
    printf("smem %3d KB: max active clusters by size:", kb);
    for (int size : {1, 4, 8, 12, 14, 15, 16}) {
      cudaLaunchConfig_t c{};
      c.gridDim = dim3(1, size);
      c.blockDim = dim3(128);
      c.dynamicSmemBytes = kb * 1024;
      cudaLaunchAttribute a{};
      a.id = cudaLaunchAttributeClusterDimension;
      a.val.clusterDim.x = 1;
      a.val.clusterDim.y = size;
      a.val.clusterDim.z = 1;
      c.attrs = &a;
      c.numAttrs = 1;
      int n = -1;
      cudaError_t e = cudaOccupancyMaxActiveClusters(&n, dummy, &c);
      printf(" %d:%d", size, e == cudaSuccess ? n : -1);
    }
    // 8 clusters of 16 (a 4k decode over 8 KV heads): SMs used, CTAs per SM, time vs one spin.
    for (int size : {16, 15, 12}) {
      cudaLaunchConfig_t c{};
      c.gridDim = dim3(8, size);
      c.blockDim = dim3(128);
      c.dynamicSmemBytes = kb * 1024;
      cudaLaunchAttribute a{};
      a.id = cudaLaunchAttributeClusterDimension;
      a.val.clusterDim.x = 1;
      a.val.clusterDim.y = size;
      a.val.clusterDim.z = 1;
      c.attrs = &a;
      c.numAttrs = 1;
      long long spin = 2000000;  // ~1 ms
      cudaEvent_t b, e;
      cudaEventCreate(&b);
      cudaEventCreate(&e);
      void* args[] = {&d, &spin};
      cudaLaunchKernelExC(&c, (const void*)dummy, args);
      cudaEventRecord(b);
      cudaLaunchKernelExC(&c, (const void*)dummy, args);
      cudaEventRecord(e);
      cudaError_t err = cudaEventSynchronize(e);
      float ms = 0;
      cudaEventElapsedTime(&ms, b, e);
      std::vector<int> h(8 * size);
      cudaMemcpy(h.data(), d, h.size() * 4, cudaMemcpyDeviceToHost);
      std::map<int, int> per;
      for (int x : h) per[x]++;
      int mx = 0;
      for (auto& p : per) mx = std::max(mx, p.second);
      printf(" | 8x%d: %s %.2f ms, %zu SMs, max %d CTAs/SM", size, cudaGetErrorString(err), ms, per.size(), mx);
    }
    printf("\n");
  }
  printf("SMs %d\n", sms);
}
