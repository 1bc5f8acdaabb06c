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
// e^-a for float a >= 0 (BCE's e^-|x|): within 1.1 ulp (a sweep of [0, 104]), subnormal
// results included, 0 from a = 104 on, NaN for NaN. Branch-free, so that it vectorizes; every
// step a correctly rounded add, multiply or fused multiply-add, so every build gives the same
// bits (hardware FMA where the target has it).
FASTLOSS_HD float exp_neg_cpu(float a) {
  // e^-104 rounds to 0 in float, so larger a (and infinity) may take 104. The comparison is
  // false for NaN, which passes through.
  const float m = select(a > 104.0f, 104.0f, a);
  // a = k ln2 + r: k = round(a / ln2) by the 1.5 * 2^23 trick, which leaves k in the low bits
  // of kb; r by two fused steps with ln2 split in two (the first exact).
  const float kb = std::fma(m, 1.44269504088896341f, 12582912.0f);
  const float k = kb - 12582912.0f;
  float r = std::fma(k, -0.693147182464599609375f, m);
  r = std::fma(k, 1.90465429995776804e-9f, r);
  // e^-r for |r| <= ln2/2 (and a little more): minimax 1 + r q(r), relative error 2.3e-9.
  float q = 1.38417527e-3f;
  q = std::fma(q, r, -8.37578904e-3f);
  q = std::fma(q, r, 4.16681133e-2f);
  q = std::fma(q, r, -1.66664124e-1f);
  q = std::fma(q, r, 4.99999940e-1f);
  q = std::fma(q, r, -1.0f);
  const float p = std::fma(q, r, 1.0f);
  // 2^-k = 2^(64 - k) 2^-64: for k in [0, 150] the first factor is a normal float (its
  // exponent field 191 - k comes from kb's bits), so p times it is exact, and the one rounding
  // (into the subnormals, where e^-a is that small) comes with the second product.
  const float scale = bits_to_float((0x4B4000BFu - float_to_bits(kb)) << 23);
  return (p * scale) * 5.42101086242752217e-20f;  // 2^-64
}

// log(1 + e) and 1 / (1 + e) for float e in [0, 1] (the softplus and sigmoid of BCE):
// log(1 + e) = 2 atanh(s), s = e / (2 + e) in [0, 1/3], by a minimax 2s + s^3 q(s^2) (relative
// error 4e-9; within 2 ulp in all, exact for tiny e). Two divisions: on Zen 4 they cost less
// than the three products that would share one, and each rounds once.
FASTLOSS_HD void log1p_and_reciprocal_cpu(float e, float& log1p_e, float& reciprocal) {
  const float s = e / (2.0f + e);
  reciprocal = 1.0f / (1.0f + e);
  const float w = s * s;
  float q = 2.81783342e-1f;
  q = std::fma(q, w, 2.79606014e-1f);
  q = std::fma(q, w, 4.00249094e-1f);
  q = std::fma(q, w, 6.66663170e-1f);
  log1p_e = std::fma(s * w, q, s + s);  // 2s + s^3 (...): the leading term exact
}
#endif

// |x| and copysign without promotion to double (the C functions ::fabs, ::copysign take
// double; a float argument would silently widen and take the slow path).
FASTLOSS_HD float abs(float x) { return ::fabsf(x); }
FASTLOSS_HD double abs(double x) { return ::fabs(x); }
FASTLOSS_HD float copysign(float magnitude, float sign) { return ::copysignf(magnitude, sign); }
FASTLOSS_HD double copysign(double magnitude, double sign) { return ::copysign(magnitude, sign); }
// The correctly rounded square root, as std::sqrt; a formula calls fmath::sqrt so that a lane
// type can bring its own (cpu/lanes.h).
FASTLOSS_HD float sqrt(float x) { return ::sqrtf(x); }
FASTLOSS_HD double sqrt(double x) { return ::sqrt(x); }

// sign(v) as torch.sign: -1, 0 or 1, and 0 for NaN (so torch's L1 gradient at NaN is 0).
// One select of a computed value (not a choice among constants, which compilers may turn
// into branches), so that it vectorizes.
template <typename T>
FASTLOSS_HD T sign(T v) { return select(abs(v) > T(0), copysign(T(1), v), T(0)); }

// e^-a for a >= 0.
FASTLOSS_HD float exp_neg(float a) {
#if defined(__CUDA_ARCH__)
  return ::expf(-a);
#else
  return exp_neg_cpu(a);
#endif
}
FASTLOSS_HD double exp_neg(double a) { return ::exp(-a); }

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
