// exp, log1p and friends for the loss formulas. On the GPU: the CUDA math library. On the CPU, for
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

// e^x for float x <= 0 (BCE's e^-|x|): within 2 ulp, subnormal results included, 0 below -104,
// NaN for NaN. Written with selects of computed values only (no choice among constants, which
// compilers may turn into branches), so that it vectorizes.
FASTLOSS_HD float exp_nonpositive_cpu(float x) {
  const float clamped = select(x < -104.0f, -104.0f, x);
  // x = k ln2 + r, |r| <= ln2/2, with ln2 split in two for an exact product; k rounded to
  // nearest by the 1.5 * 2^23 trick (vectorizes on any SSE2 target).
  const float k = (clamped * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  float r = clamped - k * 0.693359375f;
  r = r - k * -2.12194440e-4f;
  // e^r on [-ln2/2, ln2/2]: Taylor polynomial of degree 6 (truncation < 1.2e-7, 1 ulp).
  // Horner steps as fused multiply-adds: correctly rounded, so every build gives the same
  // bits (hardware FMA where the target has it).
  float p = 1.0f / 720.0f;
  p = std::fma(p, r, 1.0f / 120.0f);
  p = std::fma(p, r, 1.0f / 24.0f);
  p = std::fma(p, r, 1.0f / 6.0f);
  p = std::fma(p, r, 0.5f);
  p = std::fma(p, r, 1.0f);
  p = std::fma(p, r, 1.0f);
  // 2^k = 2^(k + 64) 2^-64: for k in [-150, 0] the first factor is a normal float, so p times it
  // is exact, and the one rounding (into the subnormals, where e^x is that small) comes with
  // the second product: gradual underflow.
  const float scale = detail::from_bits(uint32_t(int32_t(k) + 64 + 127) << 23);
  const float result = (p * scale) * 5.42101086242752217e-20f;  // 2^-64
  return select(x < -104.0f, 0.0f, result);
}

// log(1 + e) and 1 / (1 + e) for float e in [0, 1] (the softplus and sigmoid of BCE), with
// one division: log(1 + e) = 2 atanh(s), s = e / (2 + e) in [0, 1/3], by its series to s^11
// (relative truncation < 2e-7 at e = 1, far less below); exact for tiny e.
FASTLOSS_HD void log1p_and_reciprocal_cpu(float e, float& log1p_e, float& reciprocal) {
  const float a = 2.0f + e, b = 1.0f + e;
  const float inv = 1.0f / (a * b);
  const float s = e * b * inv;  // e / (2 + e)
  reciprocal = a * inv;         // 1 / (1 + e)
  const float s2 = s * s;
  float q = 1.0f / 11.0f;
  q = std::fma(q, s2, 1.0f / 9.0f);
  q = std::fma(q, s2, 1.0f / 7.0f);
  q = std::fma(q, s2, 1.0f / 5.0f);
  q = std::fma(q, s2, 1.0f / 3.0f);
  q = std::fma(q, s2, 1.0f);
  log1p_e = 2.0f * s * q;
}
#endif

// |x| and copysign without promotion to double (the C functions ::fabs, ::copysign take
// double; a float argument would silently widen and take the slow path).
FASTLOSS_HD float abs(float x) { return ::fabsf(x); }
FASTLOSS_HD double abs(double x) { return ::fabs(x); }
FASTLOSS_HD float copysign(float magnitude, float sign) { return ::copysignf(magnitude, sign); }
FASTLOSS_HD double copysign(double magnitude, double sign) { return ::copysign(magnitude, sign); }

// sign(v) as torch.sign: -1, 0 or 1, and 0 for NaN (so torch's L1 gradient at NaN is 0).
// One select of a computed value (not a choice among constants, which compilers may turn
// into branches), so that it vectorizes.
template <typename T>
FASTLOSS_HD T sign(T v) { return select(abs(v) > T(0), copysign(T(1), v), T(0)); }

// e^x for x <= 0.
FASTLOSS_HD float exp_nonpositive(float x) {
#if defined(__CUDA_ARCH__)
  return ::expf(x);
#else
  return exp_nonpositive_cpu(x);
#endif
}
FASTLOSS_HD double exp_nonpositive(double x) { return ::exp(x); }

// log(1 + e) and 1 / (1 + e) for e in [0, 1].
FASTLOSS_HD void log1p_and_reciprocal(float e, float& log1p_e, float& reciprocal) {
#if defined(__CUDA_ARCH__)
  log1p_e = ::log1pf(e);
  reciprocal = 1.0f / (1.0f + e);
#else
  log1p_and_reciprocal_cpu(e, log1p_e, reciprocal);
#endif
}
FASTLOSS_HD void log1p_and_reciprocal(double e, double& log1p_e, double& reciprocal) {
  log1p_e = ::log1p(e);
  reciprocal = 1.0 / (1.0 + e);
}

}  // namespace fastloss::fmath
