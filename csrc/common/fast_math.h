// exp and log1p for the loss formulas. On the GPU: the CUDA math library. On the CPU, for
// float: branch-free polynomial versions that the compiler vectorizes (the C library's calls
// would keep BCE-with-logits compute-bound); for double: the C library.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#include "macros.h"

namespace fastloss::fmath {

#if !defined(__CUDA_ARCH__)
namespace detail {
FASTLOSS_HD float from_bits(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }
FASTLOSS_HD uint32_t to_bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }
}  // namespace detail

// e^x for float, within 2 ulp on [-87, 88]; 0 below (no subnormal results), inf above.
FASTLOSS_HD float exp_cpu(float x) {
  const float clamped = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  // x = k ln2 + r, |r| <= ln2/2, with ln2 split in two for an exact product.
  // Round to nearest by the 1.5 * 2^23 trick: vectorizes on any SSE2 target.
  const float k = (clamped * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  float r = clamped - k * 0.693359375f;
  r = r - k * -2.12194440e-4f;
  // e^r on [-ln2/2, ln2/2]: Taylor polynomial of degree 7 (truncation < 4e-9).
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const float scale = detail::from_bits(uint32_t(int32_t(k) + 127) << 23);
  const float result = p * scale;
  return x < -87.0f ? 0.0f : (x > 88.0f ? INFINITY : (x != x ? x : result));
}

// log(1 + y) for float y >= 0 (what the losses need), accurate for tiny y.
FASTLOSS_HD float log1p_nonneg_cpu(float y) {
  const float u = 1.0f + y;
  // u = m 2^e with m in [sqrt(1/2), sqrt(2)); log m = 2 atanh(s), s = (m - 1) / (m + 1).
  const uint32_t bits = detail::to_bits(u);
  int32_t e = int32_t((bits >> 23) & 0xff) - 127;
  float m = detail::from_bits((bits & 0x007fffffu) | 0x3f800000u);
  const bool big = m > 1.41421356f;
  m = big ? m * 0.5f : m;
  e = big ? e + 1 : e;
  const float s = (m - 1.0f) / (m + 1.0f);
  const float s2 = s * s;
  float q = 1.0f / 9.0f;
  q = q * s2 + 1.0f / 7.0f;
  q = q * s2 + 1.0f / 5.0f;
  q = q * s2 + 1.0f / 3.0f;
  q = q * s2 + 1.0f;
  const float log_u = 2.0f * s * q + float(e) * 0.693147180559945309f;
  // Correct for the rounding of 1 + y: log1p(y) = log(u) * y / (u - 1).
  const float d = u - 1.0f;
  const float result = d == 0.0f ? y : log_u * (y / d);
  return y != y ? y : (y == INFINITY ? y : result);
}
#endif

FASTLOSS_HD float exp(float x) {
#if defined(__CUDA_ARCH__)
  return ::expf(x);
#else
  return exp_cpu(x);
#endif
}
FASTLOSS_HD double exp(double x) { return ::exp(x); }

FASTLOSS_HD float log1p_nonneg(float y) {
#if defined(__CUDA_ARCH__)
  return ::log1pf(y);
#else
  return log1p_nonneg_cpu(y);
#endif
}
FASTLOSS_HD double log1p_nonneg(double y) { return ::log1p(y); }

}  // namespace fastloss::fmath
