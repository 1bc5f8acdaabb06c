// The pointwise losses: value and derivatives, written once for the C++ CPU kernel and the
// CUDA kernel (the Triton kernels carry the same formulas in kernels/pointwise_loss.py).
// Every formula works in the accumulation type T (float, or double for double inputs).
#pragma once
#include <cstdint>
#include <stdexcept>

#include "../common/macros.h"

namespace fastloss {

// Numbers shared with the Python side (fastloss/ops/pointwise.py) and the op schemas.
enum class PointwiseLoss : int64_t { kSquaredError = 0 };
// Same numbering as torch's at::Reduction.
enum class Reduction : int64_t { kNone = 0, kMean = 1, kSum = 2 };

// l = (x - t)^2,  dl/dx = 2 (x - t),  dl/dt = -2 (x - t).
struct SquaredError {
  template <typename T>
  FASTLOSS_HD static void eval(T x, T t, T /*param*/, T& loss, T& d_input, T& d_target) {
    const T diff = x - t;
    loss = diff * diff;
    d_input = T(2) * diff;
    d_target = -d_input;
  }
};

}  // namespace fastloss

// Runs BODY with `Formula` bound to the formula struct of LOSS (a PointwiseLoss value).
#define FASTLOSS_DISPATCH_POINTWISE_LOSS(LOSS, ...)                         \
  [&] {                                                                     \
    switch (static_cast<::fastloss::PointwiseLoss>(LOSS)) {                 \
      case ::fastloss::PointwiseLoss::kSquaredError: {                      \
        using Formula = ::fastloss::SquaredError;                           \
        return __VA_ARGS__();                                               \
      }                                                                     \
    }                                                                       \
    throw std::invalid_argument("fastloss: unknown pointwise loss id");     \
  }()
