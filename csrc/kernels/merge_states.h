// Launch of the public merge kernel (merge_states.cu); the C API (csrc/api/merge_api.cpp)
// checks every argument first.
#pragma once

#include <cuda_runtime_api.h>

#include "forge_flash/flash_api.h"

namespace forge_flash {

constexpr int kMergeRowsPerCta = 4;  // one warp per output row

cudaError_t launch_merge_states(const ff_merge_args& args, cudaStream_t stream);

}  // namespace forge_flash
