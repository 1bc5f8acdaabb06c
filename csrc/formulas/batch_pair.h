// The in-batch losses (every query row against every reference row), written once for the C++
// CPU and CUDA kernels (kernels/batch_pair_loss.py carries the same steps for Triton). A kernel
// walks tiles of the query x reference matrix; per tile it has the inner products q_i . r_j
// from a matrix product and the squared norms of the rows, and this header turns them into:
//   distance(|q|^2, |r|^2, q.r)       d_ij, torch.cdist's matrix form
//   contrastive_pos / contrastive_neg the pair's cost and the coefficient a = cost'(d) / d
//   hard-mining comparisons            for the batch-hard triplet loss
// The gradient of sum_j c(d_ij) by q_i is then sum_j a_ij (q_i - r_j) = q_i rowsum(a) - (A R)_i:
// a second matrix product per tile. Everything in T (float, or double for double inputs).
#pragma once
#include <cmath>
#include <cstdint>
#include <limits>

#include "../common/macros.h"

namespace fastloss::batch {

// Numbers shared with fastloss/ops/batch.py and kernels/batch_pair_loss.py.
enum class BatchLoss : int64_t { kContrastive = 0, kHardTriplet = 1, kHardSoftTriplet = 2 };
constexpr int64_t kNumBatchLosses = 3;
// Reductions: torch's mean (1) and sum (2), and pytorch-metric-learning's AvgNonZero.
enum class BatchReduction : int64_t { kMean = 1, kSum = 2, kAvgNonZero = 3 };

// The matrix form of the Euclidean distance, sqrt(|q|^2 + |r|^2 - 2 q.r), resolves d^2 only to
// about eps (|q|^2 + |r|^2): below 8 eps (|q|^2 + |r|^2) it is rounding, and d is 0, so that a
// duplicate embedding has distance 0 and passes no gradient, as torch.cdist's direct form gives.
template <typename T>
FASTLOSS_HD T squared_distance(T q_sq, T r_sq, T dot) {
  const T norms = q_sq + r_sq;
  const T d2 = norms - T(2) * dot;
  const T resolution = T(8) * std::numeric_limits<T>::epsilon() * norms;
  return select(d2 > resolution, d2, select(d2 != d2, d2, T(0)));  // NaN stays NaN
}

// cost'(d) / d, 0 at d = 0 (the subgradient torch's cdist takes there).
template <typename T>
FASTLOSS_HD T over_distance(T dcost, T d) { return select(d > T(0), dcost / select(d > T(0), d, T(1)), T(0)); }

// A positive pair (same label) costs max(0, d - pos_margin); a negative one max(0, neg_margin - d)
// (pytorch-metric-learning's ContrastiveLoss with its Euclidean distance). Returns the cost and
// sets a = cost'(d) / d: relu passes its gradient only where its argument is > 0.
template <typename T>
FASTLOSS_HD T contrastive_pos(T d, T pos_margin, T& a) {
  const T gap = d - pos_margin;
  a = over_distance(select(gap > T(0), T(1), T(0)), d);
  return select(gap > T(0), gap, select(gap != gap, gap, T(0)));
}
template <typename T>
FASTLOSS_HD T contrastive_neg(T d, T neg_margin, T& a) {
  const T gap = neg_margin - d;
  a = over_distance(select(gap > T(0), T(-1), T(0)), d);
  return select(gap > T(0), gap, select(gap != gap, gap, T(0)));
}

// The batch-hard triplet cost of one anchor from its hardest positive and negative distances:
// max(0, d_ap - d_an + margin), or softplus(d_ap - d_an) (Hermans et al. 2017, soft margin).
// Returns the cost and sets its derivative by the hinge argument.
template <typename T>
FASTLOSS_HD T hard_triplet(T d_ap, T d_an, T margin, bool soft, T& dcost) {
  if (soft) {
    const T v = d_ap - d_an;
    // softplus(v) = max(v, 0) + log1p(exp(-|v|)), sigmoid(v) its derivative
    const T e = std::exp(-std::fabs(v));
    dcost = select(v >= T(0), T(1), e) / (T(1) + e);
    return select(v > T(0), v, T(0)) + std::log1p(e);
  }
  const T v = d_ap - d_an + margin;
  dcost = select(v > T(0), T(1), T(0));
  return select(v > T(0), v, select(v != v, v, T(0)));
}

}  // namespace fastloss::batch
