// Functions that the kernels call and the host-side g++ tests (tests/c_api/) check: marked for
// both sides under nvcc, plain C++ under g++. FF_HOST_DEVICE_INLINE also asks nvcc to inline.
#pragma once

#if defined(__CUDACC__)
#define FF_HOST_DEVICE __host__ __device__
#define FF_HOST_DEVICE_INLINE __host__ __device__ __forceinline__
#else
#define FF_HOST_DEVICE
#define FF_HOST_DEVICE_INLINE inline
#endif
