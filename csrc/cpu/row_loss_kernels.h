// The row-loss kernel (contrastive, triplet, cosine embedding; see formulas/row.h), for one
// instruction set: per row, pass 1 sums over D in kLanes lanes (a fixed order), the row's
// formula turns the sums into its loss and gradient coefficients, pass 2 writes the gradients
// (the row is still in cache).
#include "lanes.h"  // before the formulas: they call fmath::abs on Lanes too
#include "../formulas/row.h"
#include "kernel_helpers.h"

namespace fastloss::cpu::FASTLOSS_ISA {
namespace {

// Row r's loss from its sums: stored (reduction "none") or added to total; its gradient
// coefficients, scaled, into coef. Returns whether any gradient is to be written.
template <typename T, typename Formula, typename Acc>
bool finish_row(const RowArgs& a, int64_t r, const Acc* s, const row::Params<Acc>& q, double& total, Acc* coef) {
  const Acc label = a.label ? load<Acc>(static_cast<const T*>(a.label)[r]) : Acc(0);
  for (int k = 0; k < 6; ++k) coef[k] = Acc(0);
  const Acc loss = Formula::finish(s, label, q, coef);
  if (a.loss_out) {
    static_cast<T*>(a.loss_out)[r] = Store<T>::of(loss);
  } else {
    total += double(loss);
  }
  for (int k = 0; k < 6; ++k) coef[k] *= Acc(a.grad_scale);
  return a.grad_a || a.grad_b || a.grad_c;
}

template <typename T, typename Formula>
double row_range(const RowArgs& a, int64_t begin, int64_t end) {
  using Acc = typename AccOf<T>::type;
  const int64_t d = a.d;
  const row::Params<Acc> q{Acc(a.margin), Acc(a.eps), Acc(a.p), a.swap};
  const bool three = a.c != nullptr;
  double total = 0.0;
  Acc ab[kLanes], bb[kLanes], cb[kLanes], ga[kLanes], gb[kLanes], gc[kLanes];
  for (int k = 0; k < kLanes; ++k) cb[k] = Acc(0);
  for (int64_t r = begin; r < end; ++r) {
    const T* ra = static_cast<const T*>(a.a) + r * d;
    const T* rb = static_cast<const T*>(a.b) + r * d;
    const T* rc = three ? static_cast<const T*>(a.c) + r * d : nullptr;
    // Only the sums the formula uses are kept and added (adding a constant 0 is not free in
    // IEEE arithmetic: the compiler keeps it).
    constexpr int kSums = Formula::kSums;
    Acc sums[kSums][kLanes];
    for (int i = 0; i < kSums; ++i)
      for (int k = 0; k < kLanes; ++k) sums[i][k] = Acc(0);
    for_each_block(d, [&](int64_t j, auto n) {
      load_block(ra + j, n, ab);
      load_block(rb + j, n, bb);
      if (three) load_block(rc + j, n, cb);
      // All kLanes lanes (a fixed trip count vectorizes); lanes past a tail add nothing.
      for (int k = 0; k < kLanes; ++k) {
        Acc s[3] = {Acc(0), Acc(0), Acc(0)};
        Formula::accumulate(ab[k], bb[k], cb[k], q, s);
        const bool inside = k < n;
        for (int i = 0; i < kSums; ++i) sums[i][k] += select(inside, s[i], Acc(0));
      }
    });
    Acc s[3] = {Acc(0), Acc(0), Acc(0)};
    for (int i = 0; i < kSums; ++i) s[i] = Acc(sum_lanes(sums[i]));
    Acc coef[6];
    if (!finish_row<T, Formula>(a, r, s, q, total, coef)) continue;
    for_each_block(d, [&](int64_t j, auto n) {
      load_block(ra + j, n, ab);
      load_block(rb + j, n, bb);
      if (three) load_block(rc + j, n, cb);
      for (int k = 0; k < kLanes; ++k) Formula::gradient(ab[k], bb[k], cb[k], coef, q, ga[k], gb[k], gc[k]);
      if (a.grad_a) store_gradient_block(a.stream_grads, ga, n, static_cast<T*>(a.grad_a) + r * d + j);
      if (a.grad_b) store_gradient_block(a.stream_grads, gb, n, static_cast<T*>(a.grad_b) + r * d + j);
      if (a.grad_c) store_gradient_block(a.stream_grads, gc, n, static_cast<T*>(a.grad_c) + r * d + j);
    });
  }
  if (a.stream_grads) finish_streaming();
  return total;
}

// The same kernel with each block as one Lanes value: sums and gradients stay in registers.
// The same operations lane by lane as row_range, so the same bits. (Not for norms of order p:
// std::pow has no lane form.)
template <typename T, typename Formula>
double row_range_lanes(const RowArgs& a, int64_t begin, int64_t end) {
  using Acc = typename AccOf<T>::type;
  using L = Lanes<Acc>;
  const int64_t d = a.d;
  const row::Params<Acc> q{Acc(a.margin), Acc(a.eps), Acc(a.p), a.swap};
  const row::Params<L> ql{L(q.margin), L(q.eps), L(q.p), q.swap};
  const bool three = a.c != nullptr;
  const LaneMask<Acc> tail_lanes = lanes_below<Acc>(int(d % kLanes));
  constexpr int kSums = Formula::kSums;
  double total = 0.0;
  for (int64_t r = begin; r < end; ++r) {
    const T* ra = static_cast<const T*>(a.a) + r * d;
    const T* rb = static_cast<const T*>(a.b) + r * d;
    const T* rc = three ? static_cast<const T*>(a.c) + r * d : nullptr;
    L sums[kSums];
    for (int i = 0; i < kSums; ++i) sums[i] = L(Acc(0));
    for_each_block(d, [&](int64_t j, auto n) {
      const L va = load_lanes<Acc>(ra + j, n), vb = load_lanes<Acc>(rb + j, n);
      const L vc = three ? load_lanes<Acc>(rc + j, n) : L(Acc(0));
      L s[3] = {L(Acc(0)), L(Acc(0)), L(Acc(0))};
      Formula::accumulate(va, vb, vc, ql, s);
      for (int i = 0; i < kSums; ++i) {
        if constexpr (std::is_same_v<decltype(n), std::integral_constant<int, kLanes>>) {
          sums[i] += s[i];
        } else {  // lanes past a tail add nothing
          sums[i] += select(tail_lanes, s[i], L(Acc(0)));
        }
      }
    });
    Acc s[3] = {Acc(0), Acc(0), Acc(0)};
    for (int i = 0; i < kSums; ++i) s[i] = Acc(sum_lanes(sums[i]));
    Acc coef[6];
    if (!finish_row<T, Formula>(a, r, s, q, total, coef)) continue;
    L k[6];
    for (int i = 0; i < 6; ++i) k[i] = L(coef[i]);
    for_each_block(d, [&](int64_t j, auto n) {
      const L va = load_lanes<Acc>(ra + j, n), vb = load_lanes<Acc>(rb + j, n);
      const L vc = three ? load_lanes<Acc>(rc + j, n) : L(Acc(0));
      L ga, gb, gc;
      Formula::gradient(va, vb, vc, k, ql, ga, gb, gc);
      if (a.grad_a) store_lanes(a.stream_grads, ga, n, static_cast<T*>(a.grad_a) + r * d + j);
      if (a.grad_b) store_lanes(a.stream_grads, gb, n, static_cast<T*>(a.grad_b) + r * d + j);
      if (a.grad_c) store_lanes(a.stream_grads, gc, n, static_cast<T*>(a.grad_c) + r * d + j);
    });
  }
  if (a.stream_grads) finish_streaming();
  return total;
}

template <typename T>
RowRangeFn row_loss_for_kind(int64_t loss) {
  return FASTLOSS_DISPATCH_ROW_LOSS(loss, [](auto formula) -> RowRangeFn {
    using Formula = decltype(formula);
    if constexpr (std::is_same_v<Formula, row::Triplet<row::NormLp>>) {
      return &row_range<T, Formula>;
    } else {
      return &row_range_lanes<T, Formula>;
    }
  });
}

RowRangeFn row_loss_for(ScalarKind kind, int64_t loss) {
  switch (kind) {
    case ScalarKind::kFloat: return row_loss_for_kind<float>(loss);
    case ScalarKind::kDouble: return row_loss_for_kind<double>(loss);
    case ScalarKind::kHalf: return row_loss_for_kind<Half>(loss);
    case ScalarKind::kBFloat16: return row_loss_for_kind<BFloat16>(loss);
  }
  return nullptr;
}

}  // namespace
}  // namespace fastloss::cpu::FASTLOSS_ISA
