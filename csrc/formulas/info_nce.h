// The softmax cross-entropy losses over all pairs (InfoNCE, CLIP's symmetric loss, SimCLR's
// NT-Xent), written once for the C++ CPU and CUDA kernels (kernels/info_nce.py carries the same
// steps for Triton). A kernel walks tiles of the a x b matrix of logits l_ij = (a_i . b_j) * scale
// (scale = 1 / temperature), never holding the matrix, and keeps per row (and per column) the
// online log-sum-exp state (m, s): m the largest logit seen, s = sum exp(l - m), lse = m + log s.
// The backward sweep recomputes each tile and turns its logits into the coefficients of
// d loss / d l_ij (coefficient below); the gradient of a is then scale * C b, a second matrix
// product per tile. Everything in T (float, or double for double inputs).
#pragma once
#include <cmath>
#include <limits>

#include "../common/fast_math.h"
#include "../common/macros.h"

namespace fastloss::info_nce {

// The shift that makes exp(l - shift) safe: m itself, or 0 while no logit has been seen (m = -inf;
// exp(l - m) would be NaN). NaN logits are never the max (comparisons are false) but reach s.
template <typename T>
FASTLOSS_HD T shift_of(T m) { return select(m > -std::numeric_limits<T>::infinity(), m, T(0)); }

// e^(x - shift) for x <= shift (up to rounding): the exp of the loss formulas.
template <typename T>
FASTLOSS_HD T exp_below(T x, T shift) { return fmath::exp_neg(shift - x); }

// s (a sum of exp(l - m)) rescaled to the shift of a larger max: s e^(m - shift). While m is
// -inf, s holds nothing but zeros or a NaN (a NaN logit is never the max) and is kept as it is:
// e^(m - shift) would be 0 then, and for a shift far below 0 not even finite.
template <typename T>
FASTLOSS_HD T rescaled(T s, T m, T shift) {
  return select(m > -std::numeric_limits<T>::infinity(), s * exp_below(m, shift), s);
}

// Merges the state (m2, s2) into (m, s): s e^(m - M) + s2 e^(m2 - M) with M = max(m, m2).
template <typename T>
FASTLOSS_HD void merge(T& m, T& s, T m2, T s2) {
  const T top = select(m2 > m, m2, m);
  const T shift = shift_of(top);
  s = rescaled(s, m, shift) + rescaled(s2, m2, shift);
  m = top;
}

// log-sum-exp of a state: -inf for no logits, NaN when a NaN logit reached s.
template <typename T>
FASTLOSS_HD T lse_of(T m, T s) { return shift_of(m) + std::log(s); }

// d loss / d l_ij, where the loss is sum_i row_w_i (lse_j l_ij - l_i,p(i)) plus, when the column
// term is used, sum_j col_w_j (lse_i l_ij - l_p(j),j): the softmax minus the one-hot target of the
// row, and of the column. positive: (i, j) is a positive pair (the target of row i and of column
// j: the pairing must be symmetric when both terms are used). A term not used contributes nothing
// (not 0 * exp, which would be NaN for a logit beyond exp's range).
template <typename T, bool kRow, bool kCol>
FASTLOSS_HD T coefficient(T logit, bool positive, T row_lse, T row_w, T col_lse, T col_w) {
  const T hit = select(positive, T(1), T(0));
  T c = T(0);
  if constexpr (kRow) c += row_w * (exp_below(logit, row_lse) - hit);
  if constexpr (kCol) c += col_w * (exp_below(logit, col_lse) - hit);
  return c;
}

}  // namespace fastloss::info_nce
