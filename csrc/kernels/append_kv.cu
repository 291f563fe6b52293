// The K/V append of flash_attn_with_kvcache (ff_append_kv): new keys/values into a contiguous
// or paged cache, the keys (and the queries, into q_out) rotated on the way, in one launch.
//
// A thread owns 8 features (a 16-byte vector of 16-bit elements, when every base and stride is
// aligned for it) of one row: of a new token's k row and its v row (the same destination), or
// of a q row. Its loads of k/v and of the cached length are independent, so a thread waits for
// two memory round trips: those, then the rotary tables and the block id, which need the
// position. A CTA of 256 threads covers 16 rows of head_dim 128 (a decode step of batch 64, 8
// KV heads and 32 query heads is 160 CTAs).
//
// Rotary matches forge_flash.kvcache_append.apply_rotary bit for bit: float32 products and
// sums, each rounded (__fmul_rn/__fadd_rn: no fused multiply-add, as torch's separate
// elementwise kernels), then one round-to-nearest-even to the dtype. Features that do not
// rotate, and v, move as raw bits.
#include <atomic>
#include <cstdint>

#include "append_kv_kernel.cuh"

namespace forge_flash {
namespace {

using append::append_kv_kernel;
using append::AppendParams;

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
  void* args[] = {const_cast<AppendParams*>(&p)};
  return launch_kernel(kernel, dim3(ctas), dim3(kAppendThreads), 0, stream, args,
                       programmatic && programmatic_capable(kernel));
}

}  // namespace

cudaError_t launch_append_kv(const ff_append_kv_args& args, cudaStream_t stream) {
  const unsigned ctas = static_cast<unsigned>(append_kv_ctas(args, append_rotates_q(args)));
  if (ctas == 0) return cudaSuccess;
  const AppendParams p = append::make_append_params(args);
  const bool programmatic = args.programmatic_launch != 0;
  const bool vec = append_vectorisable(p.a);
  if (args.dtype == FF_DTYPE_FLOAT16)
    return vec ? launch<half, true>(p, ctas, programmatic, stream) : launch<half, false>(p, ctas, programmatic, stream);
  return vec ? launch<__nv_bfloat16, true>(p, ctas, programmatic, stream)
             : launch<__nv_bfloat16, false>(p, ctas, programmatic, stream);
}

}  // namespace forge_flash
