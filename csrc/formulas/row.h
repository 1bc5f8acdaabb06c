// The row losses on pairs and triplets of embeddings (contrastive, triplet margin, cosine
// embedding), written once for the C++ CPU and CUDA row kernels (kernels/row_loss.py carries
// the same steps for Triton). A row kernel reads rows a, b (and c) of D values and, per loss:
//   accumulate(a_j, b_j, c_j)  -> up to three sums over the row (pass 1): the first kSums
//                                 (a kernel may keep only those)
//   finish(sums, label)        -> the row's loss and up to six gradient coefficients
//   gradient(a_j, b_j, c_j, k) -> d loss / d a_j, b_j, c_j (pass 2, from cache)
// Sums and coefficients are in T (float, or double for double inputs).
#pragma once
#include <cmath>
#include <cstdint>
#include <stdexcept>

#include "../common/fast_math.h"
#include "../common/macros.h"

namespace fastloss::row {

// Numbers shared with fastloss/ops/row.py and kernels/row_loss.py.
enum class RowLoss : int64_t {
  kContrastiveEuclidean = 0,
  kContrastiveManhattan = 1,
  kContrastiveCosine = 2,
  kTripletL2 = 3,
  kTripletL1 = 4,
  kTripletLp = 5,
  kCosineEmbedding = 6,
};
constexpr int64_t kNumRowLosses = 7;

template <typename T>
struct Params {
  T margin;
  T eps;    // added to differences (pairwise_distance), or cosine_similarity's eps
  T p;      // norm order of kTripletLp
  bool swap;
};

// torch.clamp_min(x, 0) (and relu): 0 below 0, NaN kept as NaN.
template <typename T>
FASTLOSS_HD T clamp_min0(T x) { return select(x < T(0), T(0), x); }

// torch.minimum: the smaller, NaN when either is NaN.
template <typename T>
FASTLOSS_HD T minimum(T a, T b) { return select(b < a || b != b, b, a); }

// A norm's gradient coefficient g / d as torch's norm backward gives it: 0 where the norm is 0
// (the subgradient), NaN where it is NaN (even for g = 0, as torch's division), 0 at infinity.
template <typename T>
FASTLOSS_HD T over_norm(T g, T d) { return select(d == T(0), T(0), g / d); }

// 0.5 (y d^2 + (1 - y) max(0, m - d)^2) and its derivative by d (Hadsell et al. 2006, with
// y = 1 for a similar pair), as torch evaluates 0.5 * (y * d * d + (1 - y) * clamp_min(m - d, 0)
// ** 2): the clamp passes no gradient where m - d <= 0 or is NaN.
template <typename T>
FASTLOSS_HD T contrastive(T d, T y, T margin, T& dloss_dd) {
  const T gap = margin - d;
  const T hinge = clamp_min0(gap);
  dloss_dd = y * d - select(gap > T(0), (T(1) - y) * hinge, T(0));
  return T(0.5) * (y * d * d + (T(1) - y) * (hinge * hinge));
}

// d = || a - b + eps ||_2 (torch.pairwise_distance, p = 2).
struct ContrastiveEuclidean {
  static constexpr int kSums = 1;
  template <typename T>
  FASTLOSS_HD static void accumulate(T a, T b, T, const Params<T>& q, T* s) {
    const T v = a - b + q.eps;
    s[0] += v * v;
  }
  template <typename T>
  FASTLOSS_HD static T finish(const T* s, T y, const Params<T>& q, T* k) {
    const T d = fmath::sqrt(s[0]);
    T dloss_dd;
    const T loss = contrastive(d, y, q.margin, dloss_dd);
    k[0] = over_norm(dloss_dd, d);
    return loss;
  }
  template <typename T>
  FASTLOSS_HD static void gradient(T a, T b, T, const T* k, const Params<T>& q, T& ga, T& gb, T& gc) {
    ga = k[0] * (a - b + q.eps);
    gb = -ga;
    gc = T(0);
  }
};

// d = || a - b + eps ||_1.
struct ContrastiveManhattan {
  static constexpr int kSums = 1;
  template <typename T>
  FASTLOSS_HD static void accumulate(T a, T b, T, const Params<T>& q, T* s) {
    s[0] += fmath::abs(a - b + q.eps);
  }
  template <typename T>
  FASTLOSS_HD static T finish(const T* s, T y, const Params<T>& q, T* k) {
    T dloss_dd;
    const T loss = contrastive(s[0], y, q.margin, dloss_dd);
    k[0] = dloss_dd;
    return loss;
  }
  template <typename T>
  FASTLOSS_HD static void gradient(T a, T b, T, const T* k, const Params<T>& q, T& ga, T& gb, T& gc) {
    ga = k[0] * fmath::sign(a - b + q.eps);
    gb = -ga;
    gc = T(0);
  }
};

// cos = (a / max(|a|, eps)) . (b / max(|b|, eps)) as torch.cosine_similarity computes it, with
// its gradient: the clamped norms divide, the norm's own derivative uses the true norm (and is
// 0 for a zero vector).
template <typename T>
FASTLOSS_HD T clamped_cosine(const T* s, T eps, T& inv_norms, T& self_a, T& self_b) {
  const T na = fmath::sqrt(s[1]), nb = fmath::sqrt(s[2]);
  const T ca = select(na > eps, na, eps), cb = select(nb > eps, nb, eps);
  inv_norms = T(1) / (ca * cb);
  const T cos = s[0] * inv_norms;
  self_a = select(na > T(0), cos / (ca * na), T(0));
  self_b = select(nb > T(0), cos / (cb * nb), T(0));
  return cos;
}

// The sums and the gradient shape of the cosine-based losses: s = (a.b, |a|^2, |b|^2), and
// d/da = k0 b + k1 a, d/db = k0 a + k2 b.
struct DotAndNorms {
  static constexpr int kSums = 3;
  template <typename T>
  FASTLOSS_HD static void accumulate(T a, T b, T, const Params<T>&, T* s) {
    s[0] += a * b;
    s[1] += a * a;
    s[2] += b * b;
  }
  template <typename T>
  FASTLOSS_HD static void gradient(T a, T b, T, const T* k, const Params<T>&, T& ga, T& gb, T& gc) {
    ga = k[0] * b + k[1] * a;
    gb = k[0] * a + k[2] * b;
    gc = T(0);
  }
};

// d = 1 - cosine_similarity(a, b, eps=1e-8).
struct ContrastiveCosine : DotAndNorms {
  template <typename T>
  FASTLOSS_HD static T finish(const T* s, T y, const Params<T>& q, T* k) {
    T inv_norms, self_a, self_b;
    const T cos = clamped_cosine(s, T(1e-8), inv_norms, self_a, self_b);
    T dloss_dd;
    const T loss = contrastive(T(1) - cos, y, q.margin, dloss_dd);
    const T dloss_dcos = -dloss_dd;
    k[0] = dloss_dcos * inv_norms;   // times the other vector
    k[1] = -dloss_dcos * self_a;     // times a, into ga
    k[2] = -dloss_dcos * self_b;     // times b, into gb
    return loss;
  }
};

// Norms of order 2, 1 or p for the triplet loss, with torch's norm backward: |v|^p summed,
// the root, and the gradient of the norm d by v as scale(g, d) * direction(v) for an incoming
// gradient g, in torch's branches (p < 1, 1 < p < 2, p > 2), so NaN and infinities give what
// torch gives.
struct NormL2 {
  template <typename T> FASTLOSS_HD static T power(T v, T) { return v * v; }
  template <typename T> FASTLOSS_HD static T root(T s, T) { return fmath::sqrt(s); }
  template <typename T> FASTLOSS_HD static T scale(T g, T d, T) { return over_norm(g, d); }
  template <typename T> FASTLOSS_HD static T direction(T v, T) { return v; }
};
struct NormL1 {
  template <typename T> FASTLOSS_HD static T power(T v, T) { return fmath::abs(v); }
  template <typename T> FASTLOSS_HD static T root(T s, T) { return s; }
  template <typename T> FASTLOSS_HD static T scale(T g, T, T) { return g; }
  template <typename T> FASTLOSS_HD static T direction(T v, T) { return fmath::sign(v); }
};
struct NormLp {
  template <typename T> FASTLOSS_HD static T power(T v, T p) { return std::pow(fmath::abs(v), p); }
  template <typename T> FASTLOSS_HD static T root(T s, T p) { return std::pow(s, T(1) / p); }
  template <typename T> FASTLOSS_HD static T scale(T g, T d, T p) {
    return p < T(1) ? g * std::pow(d, T(1) - p) : select(d == T(0), T(0), g / std::pow(d, p - T(1)));
  }
  template <typename T> FASTLOSS_HD static T direction(T v, T p) {
    const T a = fmath::abs(v);
    if (p < T(1)) return fmath::sign(v) * select(v == T(0), T(0), std::pow(a, p - T(1)));
    if (p < T(2)) return fmath::sign(v) * std::pow(a, p - T(1));
    return v * std::pow(a, p - T(2));
  }
};

// torch's triplet_margin_loss: clamp_min(margin + d(a, p) - d(a, n), 0), d = pairwise_distance
// with eps; with swap, d(a, n) is minimum(d(a, n), d(p, n)), whose gradient goes to the
// smaller, half to each on a tie, all to both when one is NaN. The clamp passes the gradient
// only where its argument is > 0: torch 2.14's clamp_min gives none at the boundary (earlier
// torch gave 1 there) and none for NaN.
template <typename Norm>
struct Triplet {
  static constexpr int kSums = 3;  // the third only with swap
  template <typename T>
  FASTLOSS_HD static void accumulate(T a, T p, T n, const Params<T>& q, T* s) {
    s[0] += Norm::power(a - p + q.eps, q.p);
    s[1] += Norm::power(a - n + q.eps, q.p);
    if (q.swap) s[2] += Norm::power(p - n + q.eps, q.p);
  }
  template <typename T>
  FASTLOSS_HD static T finish(const T* s, T, const Params<T>& q, T* k) {
    const T d_ap = Norm::root(s[0], q.p), d_an = Norm::root(s[1], q.p);
    T d_neg = d_an, w_an = T(1), w_pn = T(0), d_pn = T(0);
    if (q.swap) {
      d_pn = Norm::root(s[2], q.p);
      d_neg = minimum(d_an, d_pn);
      const T share = select(d_an == d_pn, T(0.5), T(1));
      w_an = select(d_an > d_pn, T(0), share);
      w_pn = select(d_an < d_pn, T(0), share);
    }
    const T hinge = q.margin + d_ap - d_neg;
    const T g = select(hinge > T(0), T(1), T(0));
    k[0] = Norm::scale(g, d_ap, q.p);
    k[1] = Norm::scale(-g * w_an, d_an, q.p);
    k[2] = q.swap ? Norm::scale(-g * w_pn, d_pn, q.p) : T(0);
    return clamp_min0(hinge);
  }
  template <typename T>
  FASTLOSS_HD static void gradient(T a, T p, T n, const T* k, const Params<T>& q, T& ga, T& gp, T& gn) {
    // the gradients by (a - p + eps), (a - n + eps) and (p - n + eps)
    const T g_ap = k[0] * Norm::direction(a - p + q.eps, q.p);
    const T g_an = k[1] * Norm::direction(a - n + q.eps, q.p);
    const T g_pn = q.swap ? k[2] * Norm::direction(p - n + q.eps, q.p) : T(0);
    ga = g_ap + g_an;
    gp = g_pn - g_ap;
    gn = -g_an - g_pn;
  }
};

// torch.cosine_embedding_loss: cos = a.b / sqrt((|a|^2 + 1e-12f)(|b|^2 + 1e-12f)); 1 - cos for
// target 1, max(0, cos - margin) for target -1, 0 for any other target.
struct CosineEmbedding : DotAndNorms {
  template <typename T>
  FASTLOSS_HD static T finish(const T* s, T y, const Params<T>& q, T* k) {
    const T tiny = T(1e-12f);  // torch's EPSILON, a float constant
    const T m1 = s[1] + tiny, m2 = s[2] + tiny;
    const T denom = fmath::sqrt(m1 * m2);
    const T cos = s[0] / denom;
    const auto pos = y == T(1), neg = y == T(-1);  // bool, or a mask of lanes
    const T above = cos - q.margin;
    const T loss = select(pos, T(1) - cos, select(neg, clamp_min0(above), T(0)));
    // torch's in-place clamp passes no gradient at cos - margin == 0
    const T dloss_dcos = select(pos, T(-1), select(neg && above > T(0), T(1), T(0)));
    k[0] = dloss_dcos / denom;
    k[1] = -dloss_dcos * cos / m1;
    k[2] = -dloss_dcos * cos / m2;
    return loss;
  }
};

}  // namespace fastloss::row

// Runs BODY with `RowFormula` bound to the formula struct of LOSS (a RowLoss value).
#define FASTLOSS_ROW_CASE(KIND, ...) \
  case ::fastloss::row::RowLoss::KIND: { using RowFormula = __VA_ARGS__; return body(RowFormula{}); }
#define FASTLOSS_DISPATCH_ROW_LOSS(LOSS, ...)                                                  \
  [&] {                                                                                        \
    auto body = __VA_ARGS__;                                                                   \
    switch (static_cast<::fastloss::row::RowLoss>(LOSS)) {                                     \
      FASTLOSS_ROW_CASE(kContrastiveEuclidean, ::fastloss::row::ContrastiveEuclidean)         \
      FASTLOSS_ROW_CASE(kContrastiveManhattan, ::fastloss::row::ContrastiveManhattan)         \
      FASTLOSS_ROW_CASE(kContrastiveCosine, ::fastloss::row::ContrastiveCosine)               \
      FASTLOSS_ROW_CASE(kTripletL2, ::fastloss::row::Triplet<::fastloss::row::NormL2>)        \
      FASTLOSS_ROW_CASE(kTripletL1, ::fastloss::row::Triplet<::fastloss::row::NormL1>)        \
      FASTLOSS_ROW_CASE(kTripletLp, ::fastloss::row::Triplet<::fastloss::row::NormLp>)        \
      FASTLOSS_ROW_CASE(kCosineEmbedding, ::fastloss::row::CosineEmbedding)                   \
    }                                                                                          \
    throw std::invalid_argument("fastloss: unknown row loss id");                              \
  }()
