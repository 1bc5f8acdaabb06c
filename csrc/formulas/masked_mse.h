// The masked autoencoder's patch loss, per patch row of P values (shared by the C++ CPU and
// CUDA kernels; kernels/masked_mse.py carries the same steps for Triton):
//   optional target normalisation  tn = (t - mean(t)) / sqrt(var(t) + eps), var unbiased
//   patch loss                     pl = sum_p (x - tn)^2 / P
//   loss                           sum_rows(mask * pl) / sum_rows(mask)
//   d loss / d x                   mask * 2 (x - tn) / (P * sum(mask))
#pragma once
#include <cmath>

#include "../common/macros.h"

namespace fastloss::masked_mse {

// 1 / sqrt(var + eps) from the sum of squared deviations of P values (unbiased variance:
// P = 1 gives 0/0 = NaN, as torch.var does).
template <typename T>
FASTLOSS_HD T inverse_std(T centered_square_sum, int64_t p, T eps) {
  const T var = centered_square_sum / T(p - 1);
  return T(1) / std::sqrt(var + eps);
}

// The normalised target value, or t itself when not normalising.
template <typename T>
FASTLOSS_HD T target_value(T t, bool normalise, T mean, T inv_std) {
  return normalise ? (t - mean) * inv_std : t;
}

// Squared error of one value and its derivative by x.
template <typename T>
FASTLOSS_HD void error(T x, T tn, T& square, T& d_input) {
  const T diff = x - tn;
  square = diff * diff;
  d_input = T(2) * diff;
}

}  // namespace fastloss::masked_mse
