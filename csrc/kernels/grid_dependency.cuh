// Programmatic dependent launch (compute capability 9.0+): a kernel launched with
// cudaLaunchAttributeProgrammaticStreamSerialization may start while the previous kernel in the
// stream is still running. Such a kernel must not touch global memory (read its inputs, or
// write memory the previous kernel may still read) before wait_for_previous_grid(), which
// returns once the previous grid has completed and its writes are visible. Both instructions are
// no-ops when the launch was not programmatic, and are compiled out below sm_90, where the
// dispatcher never asks for such a launch.
#pragma once

#include <cuda_runtime_api.h>

namespace forge_flash {

// The launch attribute that makes a launch programmatic (host side: dispatch.cu, append_kv.cu).
inline cudaLaunchAttribute programmatic_launch_attribute() {
  cudaLaunchAttribute attribute{};
  attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute.val.programmaticStreamSerializationAllowed = 1;
  return attribute;
}

// Launches `kernel` with `args`, programmatically when asked (the caller has checked the GPU
// and the kernel's code allow it): the one launch configuration the forward, combine and
// append kernels share.
inline cudaError_t launch_kernel(const void* kernel, dim3 grid, dim3 block, size_t smem_bytes, cudaStream_t stream,
                                 void** args, bool programmatic) {
  cudaLaunchConfig_t config{};
  config.gridDim = grid, config.blockDim = block, config.dynamicSmemBytes = smem_bytes, config.stream = stream;
  cudaLaunchAttribute attribute = programmatic_launch_attribute();
  if (programmatic) config.attrs = &attribute, config.numAttrs = 1;
  return cudaLaunchKernelExC(&config, kernel, args);
}

__device__ __forceinline__ void wait_for_previous_grid() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

// Lets the next kernel in the stream (if launched programmatically) start once every CTA of
// this grid has called this or exited; it still waits for this grid's completion before it
// touches memory, so calling this early costs nothing in correctness.
__device__ __forceinline__ void allow_next_grid_launch() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

}  // namespace forge_flash
