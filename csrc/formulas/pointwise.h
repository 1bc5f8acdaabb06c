// The pointwise losses: value and derivatives, written once for the C++ CPU kernel and the
// CUDA kernel (the Triton kernels carry the same formulas in kernels/pointwise_loss.py).
// Every formula works in the accumulation type T (float, or double for double inputs), takes
// the loss's scalar parameter (beta, delta) and a per-element auxiliary value (BCE's
// pos_weight) or `Absent`, and returns the loss and its derivatives by input and target.
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

// The auxiliary operand when the call has none (torch's pos_weight=None): a type rather than
// the value 1, because torch's formulas without it are not the general ones at 1 (they differ
// at infinite operands) and are cheaper.
struct Absent {};

// l = (x - t)^2,  dl/dx = 2 (x - t),  dl/dt = -dl/dx.
struct SquaredError {
  template <typename T, typename Aux>
  FASTLOSS_HD static void eval(T x, T t, T, Aux, T& loss, T& d_input, T& d_target) {
    const T diff = x - t;
    loss = diff * diff;
    d_input = T(2) * diff;
    d_target = -d_input;
  }
};

// l = |x - t|,  dl/dx = sign(x - t).
struct AbsoluteError {
  template <typename T, typename Aux>
  FASTLOSS_HD static void eval(T x, T t, T, Aux, T& loss, T& d_input, T& d_target) {
    const T diff = x - t;
    loss = fmath::abs(diff);
    d_input = fmath::sign(diff);
    d_target = -d_input;
  }
};

// beta > 0: l = 0.5 d^2 / beta if |d| < beta, else |d| - 0.5 beta. (beta == 0 is L1, chosen
// by the caller as torch does.) The derivative follows torch's branch order, so NaN gives NaN.
struct SmoothL1 {
  template <typename T, typename Aux>
  FASTLOSS_HD static void eval(T x, T t, T beta, Aux, T& loss, T& d_input, T& d_target) {
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
  template <typename T, typename Aux>
  FASTLOSS_HD static void eval(T x, T t, T delta, Aux, T& loss, T& d_input, T& d_target) {
    const T diff = x - t;
    const T abs_diff = fmath::abs(diff);
    loss = select(abs_diff < delta, T(0.5) * diff * diff, delta * (abs_diff - T(0.5) * delta));
    // = torch's (d < -delta ? -delta : d > delta ? delta : d), NaN included
    d_input = select(abs_diff > delta, fmath::copysign(delta, diff), diff);
    d_target = -d_input;
  }
};

// Binary cross-entropy on logits x, as torch computes it. With softplus(v) = log(1 + e^v):
//   l = (1 - t) x + softplus(-x),            dl/dx = sigmoid(x) - t,  dl/dt = -x
// and with pos_weight p, c = 1 + (p - 1) t:
//   l = (1 - t) x + c softplus(-x),          dl/dx = c sigmoid(x) - p t,
//   dl/dt = p softplus(-x) - softplus(x)     (torch's form: finite where theirs is, at x = -inf)
// One exp of -|x| serves both softplus and the sigmoid, so any logit magnitude stays finite.
struct BceWithLogits {
  template <typename T>
  struct Parts {
    T log1p_e;             // log(1 + e^-|x|)
    T neg_part, pos_part;  // max(-x, 0), max(x, 0)
    T sigmoid;             // sigmoid(x)
  };
  template <typename T>
  FASTLOSS_HD static Parts<T> parts(T x) {
    const T e = fmath::exp_neg(fmath::abs(x));  // in [0, 1]
    T log1p_e, r;                               // log(1 + e), 1 / (1 + e)
    fmath::log1p_and_reciprocal(e, log1p_e, r);
    const bool negative = x < T(0);
    return {log1p_e, select(negative, -x, T(0)), select(negative, T(0), x), r * select(negative, e, T(1))};
  }

  template <typename T>
  FASTLOSS_HD static void eval(T x, T t, T, Absent, T& loss, T& d_input, T& d_target) {
    const Parts<T> p = parts(x);
    loss = (T(1) - t) * x + (p.log1p_e + p.neg_part);
    d_input = p.sigmoid - t;
    d_target = -x;
  }

  template <typename T>
  FASTLOSS_HD static void eval(T x, T t, T, T pos_weight, T& loss, T& d_input, T& d_target) {
    const Parts<T> p = parts(x);
    const T softplus_neg = p.log1p_e + p.neg_part;
    loss = (T(1) - t) * x + (T(1) + (pos_weight - T(1)) * t) * softplus_neg;
    // c again, summed in torch's order for the gradient (NaN, as theirs, for an infinite t)
    const T pt = pos_weight * t;
    d_input = (pt + T(1) - t) * p.sigmoid - pt;
    d_target = pos_weight * softplus_neg - (p.log1p_e + p.pos_part);
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
