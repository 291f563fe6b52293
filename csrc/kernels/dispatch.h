// Choosing a kernel, a tile shape and a split count for one call, and launching it.
#pragma once

#include <cuda_runtime_api.h>
#include <stddef.h>

#include "kernel_registry.h"
#include "params.h"

namespace forge_flash {

enum class DType { kFloat16, kBFloat16 };

struct FwdPlan {
  KernelInfo kernel;
  int num_m_blocks;
  dim3 grid;
  size_t workspace_bytes;  // split-KV partials; 0 without splits
  // Programmatic dependent launch (grid_dependency.cuh): plan_fwd sets `programmatic_capable`
  // where the kernel runs as sm_90+ code on a 9.0+ GPU (so it waits for its predecessor before
  // touching memory); launch_fwd launches programmatically when the caller also set
  // `programmatic` (ff_attn_options::programmatic_launch).
  bool programmatic_capable;
  bool programmatic;
  bool decode;  // the decode kernel (the only one that takes a fused K/V append)
  // Decode plans: the CTAs of the planned kernel the GPU holds at once (its CTAs per SM x SMs).
  int64_t resident_ctas;
};

// The head dimension whose kernels serve `head_dim` (a multiple of 8 <= 256).
int routed_head_dim(int head_dim);

// Whether the decode instance that serves p behind the K/V append kernel
// (FwdParams::new_keys_in_cache) loads its first tiles of cached keys before it waits for that
// kernel (decode_kernel.cuh, early_kv): the plain instance (dense K/V, plain scores) and the
// whole-page one (PagedKV, policies.h: plain scores, power-of-two pages of at least a copying
// lane's rows, no left padding). ff_attn_fwd_append makes such steps two launches.
bool decode_loads_cached_keys_early(const FwdParams& p, DType dtype);

// Whether the decode plan of a step behind the K/V append kernel (FwdParams::new_keys_in_cache,
// as ff_attn_fwd_append's two launches run it) has a grid that runs in one wave on the current
// GPU, but not in one wave beside the append kernel's `append_ctas` CTAs (append_pushes_wave).
// There the step costs less as one launch, the append inside the decode kernel (the fused
// instance).
bool append_pushes_decode_wave(const FwdPlan& plan, int64_t append_ctas);

// The arithmetic of append_pushes_decode_wave: a grid of `ctas` CTAs that fits the
// `resident` CTAs the GPU holds at once, whose free slots are fewer than the append's CTAs
// (each holds at least one decode CTA's slot while it runs), so that some decode CTAs start
// only as append CTAs retire: a second, short wave.
inline bool append_pushes_wave(int64_t ctas, int64_t resident, int64_t append_ctas) {
  return ctas <= resident && resident - ctas < append_ctas;
}

// Completes `p` (pack_gqa, num_splits, num_rows) and fills `plan` for the current device.
// Returns nullptr on success, else a message (sizes the launch grid cannot express).
// CUDA errors from querying the device go to *cuda_error.
const char* plan_fwd(FwdParams& p, DType dtype, FwdPlan* plan, cudaError_t* cuda_error);

// Points `p` at the workspace (which must hold plan.workspace_bytes) and enqueues the
// forward kernel, plus the combine kernel when splitting, on `stream`.
cudaError_t launch_fwd(FwdParams& p, DType dtype, const FwdPlan& plan, void* workspace, cudaStream_t stream);

}  // namespace forge_flash
