// Portable qualifiers so one formula compiles for the host (C++) and the device (CUDA).
#pragma once

#if defined(__CUDACC__)
#define FASTLOSS_HD __host__ __device__ __forceinline__
#else
#define FASTLOSS_HD inline __attribute__((always_inline))
#endif

#include <cstdint>
#include <cstring>
#include <type_traits>

namespace fastloss {

// The bits of a float and back (memcpy: defined behaviour, compiled to a plain move).
FASTLOSS_HD float bits_to_float(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }
FASTLOSS_HD uint32_t float_to_bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }

// c ? a : b for the loss formulas. On the host it is a bitwise blend: GCC keeps some
// conditional expressions as branches inside the kernels' lane loops (then they neither
// vectorize nor predict well); a blend has no control flow to keep. On the device: a select.
template <typename T>
FASTLOSS_HD T select(bool c, T a, T b) {
#if defined(__CUDA_ARCH__)
  return c ? a : b;
#else
  using Bits = std::conditional_t<sizeof(T) == 8, uint64_t, uint32_t>;
  Bits ab, bb;
  std::memcpy(&ab, &a, sizeof(T));
  std::memcpy(&bb, &b, sizeof(T));
  const Bits mask = Bits(0) - Bits(c);
  const Bits r = (ab & mask) | (bb & ~mask);
  T out;
  std::memcpy(&out, &r, sizeof(T));
  return out;
#endif
}

}  // namespace fastloss
