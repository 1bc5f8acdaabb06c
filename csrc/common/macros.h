// Portable qualifiers so one formula compiles for the host (C++) and the device (CUDA).
#pragma once

#if defined(__CUDACC__)
#define FASTLOSS_HD __host__ __device__ __forceinline__
#else
#define FASTLOSS_HD inline __attribute__((always_inline))
#endif
