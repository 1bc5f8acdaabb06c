// Raw-pointer pointwise-loss kernels, included by one translation unit per instruction set
// with FASTLOSS_ISA naming the namespace (and the target set by that unit). Work goes in
// blocks of kLanes elements accumulated lane by lane, so the summation order is set by the
// indices alone: the same bits for any thread count and any vector width.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "../formulas/pointwise.h"
#include "pointwise_kernel_api.h"

namespace fastloss::cpu::FASTLOSS_ISA {
namespace {

constexpr int kLanes = 16;

struct Half { uint16_t bits; };
struct BFloat16 { uint16_t bits; };

template <typename T> struct AccOf { using type = float; };
template <> struct AccOf<double> { using type = double; };

FASTLOSS_HD float bits_to_float(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }
FASTLOSS_HD uint32_t float_to_bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }

FASTLOSS_HD float to_float(BFloat16 v) { return bits_to_float(uint32_t(v.bits) << 16); }
FASTLOSS_HD BFloat16 from_float_bf16(float f) {
  const uint32_t u = float_to_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return BFloat16{0x7fc0};  // NaN stays NaN
  return BFloat16{uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16)};  // round to nearest even
}

FASTLOSS_HD float to_float(Half v) {
  const uint32_t h = v.bits;
  const uint32_t sign = (h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  const uint32_t mantissa = h & 0x3ffu;
  if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24
    const float magnitude = float(mantissa) * 5.9604644775390625e-8f;
    return sign ? -magnitude : magnitude;
  }
  if (exponent == 31) return bits_to_float(sign | 0x7f800000u | (mantissa << 13));
  return bits_to_float(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}
FASTLOSS_HD Half from_float_half(float f) {
  uint32_t u = float_to_bits(f);
  const uint32_t sign = (u >> 16) & 0x8000u;
  u &= 0x7fffffffu;
  uint32_t h;
  if (u >= 0x47800000u) {  // |f| >= 65536: infinity, or NaN
    h = u > 0x7f800000u ? 0x7e00u : 0x7c00u;
  } else if (u < 0x38800000u) {  // below the smallest normal half: let the FPU round
    // Adding 0.5 puts the half-subnormal unit (2^-24) at the last mantissa bit of the sum.
    h = float_to_bits(bits_to_float(u) + 0.5f) - 0x3f000000u;
  } else {  // normal: rebias the exponent, round to nearest even on the 13 dropped bits
    const uint32_t odd = (u >> 13) & 1u;
    h = (u + 0xc8000fffu + odd) >> 13;  // 0xc8000000 = (15 - 127) << 23
  }
  return Half{uint16_t(h | sign)};
}

template <typename Acc> FASTLOSS_HD Acc load(float v) { return Acc(v); }
template <typename Acc> FASTLOSS_HD Acc load(double v) { return Acc(v); }
template <typename Acc> FASTLOSS_HD Acc load(Half v) { return Acc(to_float(v)); }
template <typename Acc> FASTLOSS_HD Acc load(BFloat16 v) { return Acc(to_float(v)); }

template <typename T> struct Store;
template <> struct Store<float> { template <typename A> static FASTLOSS_HD float of(A v) { return float(v); } };
template <> struct Store<double> { template <typename A> static FASTLOSS_HD double of(A v) { return double(v); } };
template <> struct Store<Half> { template <typename A> static FASTLOSS_HD Half of(A v) { return from_float_half(float(v)); } };
template <> struct Store<BFloat16> { template <typename A> static FASTLOSS_HD BFloat16 of(A v) { return from_float_bf16(float(v)); } };

// Loads n <= kLanes elements into registers of the accumulation type.
template <typename T, typename Acc>
FASTLOSS_HD void load_block(const T* __restrict src, int n, Acc* __restrict dst) {
#if defined(FASTLOSS_HAVE_F16C)
  if constexpr (std::is_same_v<T, Half>) {
    if (n == kLanes) {
      for (int j = 0; j < kLanes; j += 8) {
        const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + j));
        _mm256_storeu_ps(dst + j, _mm256_cvtph_ps(h));
      }
      return;
    }
  }
#endif
  for (int j = 0; j < n; ++j) dst[j] = load<Acc>(src[j]);
}

template <typename T, typename Acc>
FASTLOSS_HD void store_block(const Acc* __restrict src, int n, T* __restrict dst) {
#if defined(FASTLOSS_HAVE_F16C)
  if constexpr (std::is_same_v<T, Half>) {
    if (n == kLanes) {
      for (int j = 0; j < kLanes; j += 8) {
        const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(src + j), _MM_FROUND_TO_NEAREST_INT);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + j), h);
      }
      return;
    }
  }
#endif
  for (int j = 0; j < n; ++j) dst[j] = Store<T>::of(src[j]);
}

// Loads n <= kLanes elements of a block of `period` elements repeated end to end, starting
// at element i of the repetition.
template <typename T, typename Acc>
FASTLOSS_HD void load_periodic(const T* __restrict src, int64_t period, int64_t i, int n,
                               Acc* __restrict dst) {
  const int64_t base = i % period;
  if (base + n <= period) {  // no wrap inside this block: a plain load
    load_block(src + base, n, dst);
    return;
  }
  for (int j = 0; j < n; ++j) dst[j] = load<Acc>(src[(base + j) % period]);
}

template <typename T, typename Acc>
FASTLOSS_HD void load_operand(const void* src, int64_t period, int64_t i, int n, Acc* __restrict dst) {
  const T* p = static_cast<const T*>(src);
  if (p == nullptr) {
    for (int j = 0; j < kLanes; ++j) dst[j] = Acc(1);
  } else if (period == 0) {  // full size
    load_block(p + i, n, dst);
  } else {
    load_periodic(p, period, i, n, dst);
  }
}

template <typename T, typename Formula>
FASTLOSS_HD void pointwise_block(const PointwiseArgs& a, int64_t i, int n,
                                 typename AccOf<T>::type* __restrict lanes) {
  using Acc = typename AccOf<T>::type;
  Acc x[kLanes], t[kLanes], w[kLanes], aux[kLanes], loss[kLanes], dx[kLanes], dt[kLanes];
  load_block(static_cast<const T*>(a.input) + i, n, x);
  load_block(static_cast<const T*>(a.target) + i, n, t);
  load_operand<T>(a.weight, a.weight_period, i, n, w);
  load_operand<T>(a.aux, a.aux_period, i, n, aux);
  const Acc param = Acc(a.param), scale = Acc(a.grad_scale);
  for (int j = 0; j < n; ++j) {
    Acc l, gx, gt;
    Formula::eval(x[j], t[j], param, aux[j], l, gx, gt);
    loss[j] = l * w[j];
    dx[j] = gx * w[j] * scale;
    dt[j] = gt * w[j] * scale;
  }
  if (a.loss_out) {
    store_block(loss, n, static_cast<T*>(a.loss_out) + i);
  } else {
    for (int j = 0; j < n; ++j) lanes[j] += loss[j];
  }
  if (a.grad_input) store_block(dx, n, static_cast<T*>(a.grad_input) + i);
  if (a.grad_target) store_block(dt, n, static_cast<T*>(a.grad_target) + i);
}

template <typename Acc>
FASTLOSS_HD double sum_lanes(const Acc* lanes) {
  // Pairwise over the lanes, a fixed tree.
  Acc s[kLanes];
  for (int j = 0; j < kLanes; ++j) s[j] = lanes[j];
  for (int width = kLanes / 2; width > 0; width /= 2)
    for (int j = 0; j < width; ++j) s[j] += s[j + width];
  return double(s[0]);
}

template <typename T, typename Formula>
double pointwise_range(const PointwiseArgs& a, int64_t begin, int64_t end) {
  using Acc = typename AccOf<T>::type;
  Acc lanes[kLanes] = {};
  int64_t i = begin;
  for (; i + kLanes <= end; i += kLanes) pointwise_block<T, Formula>(a, i, kLanes, lanes);
  if (i < end) pointwise_block<T, Formula>(a, i, int(end - i), lanes);
  return sum_lanes(lanes);
}

template <typename T>
double sum_range(const void* data, int64_t begin, int64_t end) {
  using Acc = typename AccOf<T>::type;
  const T* p = static_cast<const T*>(data);
  Acc lanes[kLanes] = {};
  Acc v[kLanes];
  int64_t i = begin;
  for (; i + kLanes <= end; i += kLanes) {
    load_block(p + i, kLanes, v);
    for (int j = 0; j < kLanes; ++j) lanes[j] += v[j];
  }
  const int n = int(end - i);
  load_block(p + i, n, v);
  for (int j = 0; j < n; ++j) lanes[j] += v[j];
  return sum_lanes(lanes);
}

template <typename T>
PointwiseRangeFn pointwise_for_loss(int64_t loss) {
  return FASTLOSS_DISPATCH_POINTWISE_LOSS(loss, [&]() -> PointwiseRangeFn {
    return &pointwise_range<T, Formula>;
  });
}

PointwiseRangeFn pointwise_for(ScalarKind kind, int64_t loss) {
  switch (kind) {
    case ScalarKind::kFloat: return pointwise_for_loss<float>(loss);
    case ScalarKind::kDouble: return pointwise_for_loss<double>(loss);
    case ScalarKind::kHalf: return pointwise_for_loss<Half>(loss);
    case ScalarKind::kBFloat16: return pointwise_for_loss<BFloat16>(loss);
  }
  return nullptr;
}

SumRangeFn sum_for(ScalarKind kind) {
  switch (kind) {
    case ScalarKind::kFloat: return &sum_range<float>;
    case ScalarKind::kDouble: return &sum_range<double>;
    case ScalarKind::kHalf: return &sum_range<Half>;
    case ScalarKind::kBFloat16: return &sum_range<BFloat16>;
  }
  return nullptr;
}

}  // namespace

const KernelTable& table() {
  static const KernelTable t{FASTLOSS_ISA_NAME, &pointwise_for, &sum_for};
  return t;
}

}  // namespace fastloss::cpu::FASTLOSS_ISA
