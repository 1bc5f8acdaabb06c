// The pointwise losses: value and derivatives, written once for the C++ CPU kernel and the
// CUDA kernel (the Triton kernels carry the same formulas in kernels/pointwise_loss.py).
// Every formula works in the accumulation type T (float, or double for double inputs), takes
// the loss's scalar parameter (beta, delta) and a per-element auxiliary value (BCE's
// pos_weight; 1 for the others), and returns the loss and its derivatives by input and target.
#pragma once
#include <cstdint>
#include <stdexcept>

#include "../common/fast_math.h"
#include "../common/macros.h"

namespace fastloss {

// Numbers shared with the Python side (fastloss/ops/pointwise.py) and the op schemas.
enum class PointwiseLoss : int64_t {
  kSquaredError = 0,
  kAbsoluteError = 1,
  kSmoothL1 = 2,
  kHuber = 3,
  kBceWithLogits = 4,
};
constexpr int64_t kNumPointwiseLosses = 5;
// Same numbering as torch's at::Reduction.
enum class Reduction : int64_t { kNone = 0, kMean = 1, kSum = 2 };

// l = (x - t)^2,  dl/dx = 2 (x - t),  dl/dt = -dl/dx.
struct SquaredError {
  template <typename T>
  FASTLOSS_HD static void eval(T x, T t, T, T, T& loss, T& d_input, T& d_target) {
    const T diff = x - t;
    loss = diff * diff;
    d_input = T(2) * diff;
    d_target = -d_input;
  }
};

// l = |x - t|,  dl/dx = sign(x - t).
struct AbsoluteError {
  template <typename T>
  FASTLOSS_HD static void eval(T x, T t, T, T, T& loss, T& d_input, T& d_target) {
    const T diff = x - t;
    loss = fmath::abs(diff);
    d_input = fmath::sign(diff);
    d_target = -d_input;
  }
};

// beta > 0: l = 0.5 d^2 / beta if |d| < beta, else |d| - 0.5 beta. (beta == 0 is L1, chosen
// by the caller as torch does.) The derivative follows torch's branch order, so NaN gives NaN.
struct SmoothL1 {
  template <typename T>
  FASTLOSS_HD static void eval(T x, T t, T beta, T, T& loss, T& d_input, T& d_target) {
    const T diff = x - t;
    const T abs_diff = fmath::abs(diff);
    loss = select(abs_diff < beta, T(0.5) * diff * diff / beta, abs_diff - T(0.5) * beta);
    // = torch's (d < -beta ? -1 : d > beta ? 1 : d / beta), NaN included
    d_input = select(abs_diff > beta, fmath::copysign(T(1), diff), diff / beta);
    d_target = -d_input;
  }
};

// delta > 0: l = 0.5 d^2 if |d| < delta, else delta (|d| - 0.5 delta).
struct Huber {
  template <typename T>
  FASTLOSS_HD static void eval(T x, T t, T delta, T, T& loss, T& d_input, T& d_target) {
    const T diff = x - t;
    const T abs_diff = fmath::abs(diff);
    loss = select(abs_diff < delta, T(0.5) * diff * diff, delta * (abs_diff - T(0.5) * delta));
    // = torch's (d < -delta ? -delta : d > delta ? delta : d), NaN included
    d_input = select(abs_diff > delta, fmath::copysign(delta, diff), diff);
    d_target = -d_input;
  }
};

// Binary cross-entropy on logits x, with p = pos_weight and c = 1 + (p - 1) t:
//   l = (1 - t) x + c softplus(-x),   softplus(-x) = log1p(e^-|x|) + max(-x, 0)
//   dl/dx = c sigmoid(x) - p t,       dl/dt = (p - 1) softplus(-x) - x
// One exp of -|x|, so any logit magnitude stays finite.
struct BceWithLogits {
  template <typename T>
  FASTLOSS_HD static void eval(T x, T t, T, T pos_weight, T& loss, T& d_input, T& d_target) {
    const T e = fmath::exp_nonpositive(-fmath::abs(x));  // in [0, 1]
    T log1p_e, r;                             // log(1 + e), 1 / (1 + e)
    fmath::log1p_and_reciprocal(e, log1p_e, r);
    const T softplus_neg = log1p_e + select(x < T(0), -x, T(0));
    const T sigmoid = select(x < T(0), e * r, r);
    const T c = T(1) + (pos_weight - T(1)) * t;
    loss = (T(1) - t) * x + c * softplus_neg;
    d_input = c * sigmoid - pos_weight * t;
    d_target = (pos_weight - T(1)) * softplus_neg - x;
  }
};

}  // namespace fastloss

// Runs BODY with `Formula` bound to the formula struct of LOSS (a PointwiseLoss value).
#define FASTLOSS_POINTWISE_CASE(KIND, TYPE, ...)   \
  case ::fastloss::PointwiseLoss::KIND: {          \
    using Formula = ::fastloss::TYPE;              \
    return __VA_ARGS__();                          \
  }
#define FASTLOSS_DISPATCH_POINTWISE_LOSS(LOSS, ...)                               \
  [&] {                                                                           \
    switch (static_cast<::fastloss::PointwiseLoss>(LOSS)) {                       \
      FASTLOSS_POINTWISE_CASE(kSquaredError, SquaredError, __VA_ARGS__)           \
      FASTLOSS_POINTWISE_CASE(kAbsoluteError, AbsoluteError, __VA_ARGS__)         \
      FASTLOSS_POINTWISE_CASE(kSmoothL1, SmoothL1, __VA_ARGS__)                   \
      FASTLOSS_POINTWISE_CASE(kHuber, Huber, __VA_ARGS__)                         \
      FASTLOSS_POINTWISE_CASE(kBceWithLogits, BceWithLogits, __VA_ARGS__)         \
    }                                                                             \
    throw std::invalid_argument("fastloss: unknown pointwise loss id");           \
  }()
