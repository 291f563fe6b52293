// The K/V append kernel (csrc/kernels/append_kv_kernel.cuh) compiled by the host compiler and
// run thread by thread on the CPU, behind the real C API (csrc/api/append_api.cpp) and, in the
// module the test builds, the real binding (csrc/binding/module.cpp): the whole path from the
// Python adapter to the kernel's indexing, clamping and rotary arithmetic runs without a GPU.
// The CUDA runtime is not linked: the few calls the C API and binding make are stubbed below
// (device 0, no errors), and the forward attention and the merge are not part of this build.
//
// Compile with -ffp-contract=off: the device intrinsics below then round every product and sum
// separately, as __fmul_rn/__fadd_rn/__fsub_rn do on the GPU. The 16-bit conversions are the
// CUDA headers' own host implementations (round to nearest even).
// Run by tests/c_api/test_append_kernel_host.py.
#include <vector_types.h>

#undef __grid_constant__
#define __grid_constant__
#define __launch_bounds__(...)

inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }

uint3 blockIdx, threadIdx;  // the emulated thread

#include "../../csrc/kernels/append_kv_kernel.cuh"
#include "../../csrc/kernels/dispatch.h"

namespace forge_flash {

// append_kv.cu's launch, with the grid walked one thread at a time.
cudaError_t launch_append_kv(const ff_append_kv_args& args, cudaStream_t) {
  const int64_t threads = append_kv_threads(args);
  if (threads == 0) return cudaSuccess;
  const append::AppendParams p = append::make_append_params(args);
  const bool vec = append_vectorisable(p.a);
  const unsigned ctas = static_cast<unsigned>((threads + kAppendThreads - 1) / kAppendThreads);
  for (unsigned cta = 0; cta < ctas; ++cta) {
    for (unsigned lane = 0; lane < kAppendThreads; ++lane) {
      blockIdx = {cta, 0, 0}, threadIdx = {lane, 0, 0};
      if (args.dtype == FF_DTYPE_FLOAT16)
        vec ? append::append_kv_kernel<half, true>(p) : append::append_kv_kernel<half, false>(p);
      else
        vec ? append::append_kv_kernel<__nv_bfloat16, true>(p) : append::append_kv_kernel<__nv_bfloat16, false>(p);
    }
  }
  return cudaSuccess;
}

// The forward attention is not in this build.
int routed_head_dim(int head_dim) { return head_dim; }
bool decode_loads_cached_keys_early(const FwdParams&, DType) { return false; }
bool append_pushes_decode_wave(const FwdPlan&, int64_t) { return false; }
const char* plan_fwd(FwdParams&, DType, FwdPlan*, cudaError_t*) { return "no attention in this test build"; }
cudaError_t launch_fwd(FwdParams&, DType, const FwdPlan&, void*, cudaStream_t) { return cudaErrorNotSupported; }

}  // namespace forge_flash

// Nor is the merge of partial states (the binding exposes it).
extern "C" ff_status ff_merge_states(const ff_merge_args*, cudaStream_t) { return FF_ERROR_UNSUPPORTED; }

// The CUDA runtime, as far as the C API and the binding ask it: one device, no errors.
extern "C" {
cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int) { return cudaSuccess; }
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr, int) {
  *value = 0;
  return cudaSuccess;
}
const char* cudaGetErrorString(cudaError_t) { return "emulated CUDA runtime"; }
cudaError_t cudaRuntimeGetVersion(int* version) {
  *version = 0;
  return cudaSuccess;
}
cudaError_t cudaDriverGetVersion(int* version) {
  *version = 0;
  return cudaSuccess;
}
}
