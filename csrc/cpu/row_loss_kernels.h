// The row-loss kernel (contrastive, triplet, cosine embedding; see formulas/row.h), for one
// instruction set: per row, pass 1 sums over D in kLanes lanes (a fixed order), the row's
// formula turns the sums into its loss and gradient coefficients, pass 2 writes the gradients
// (the row is still in cache).
#include "lanes.h"  // before the formulas: they call fmath::abs on Lanes too
#include "../formulas/row.h"
#include "kernel_helpers.h"

namespace fastloss::cpu::FASTLOSS_ISA {
namespace {

// Row r's label (0 for the losses without one).
template <typename T, typename Acc>
Acc row_label(const RowArgs& a, int64_t r) {
  return a.label ? load<Acc>(static_cast<const T*>(a.label)[r]) : Acc(0);
}

// Row r's loss: stored (reduction "none") or added to total.
template <typename T, typename Acc>
void keep_loss(const RowArgs& a, int64_t r, Acc loss, double& total) {
  if (a.loss_out) {
    static_cast<T*>(a.loss_out)[r] = Store<T>::of(loss);
  } else {
    total += double(loss);
  }
}

// Row r's loss from its sums, kept; its gradient coefficients, scaled, into coef. Returns
// whether any gradient is to be written.
template <typename T, typename Formula, typename Acc>
bool finish_row(const RowArgs& a, int64_t r, const Acc* s, const row::Params<Acc>& q, double& total, Acc* coef) {
  for (int k = 0; k < 6; ++k) coef[k] = Acc(0);
  keep_loss<T>(a, r, Formula::finish(s, row_label<T, Acc>(a, r), q, coef), total);
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

// Pass 1 of one row for the Lanes kernel: its kSums sums over D, lane by lane, into sums. The
// running sums are kept in pieces of the unit's vector width: a whole block's Lanes value is
// wider than any register, and GCC keeps it in memory, so every block waited on the store of
// the one before. A piece's lanes are the block's, so the additions are the same, in the same
// order.
template <typename T, typename Formula, typename Acc = typename AccOf<T>::type>
FASTLOSS_LANE_FN void row_sums(const T* ra, const T* rb, const T* rc, int64_t d,
                               const row::Params<Lanes<Acc, kPieceLanes<Acc>>>& qp,
                               const LaneMask<Acc>& tail_lanes, Lanes<Acc>* sums) {
  using L = Lanes<Acc>;
  constexpr int P = kPieceLanes<Acc>, kPieces = kLanes / P, kSums = Formula::kSums;
  using PL = Lanes<Acc, P>;
  PL acc[kPieces][3];
  for (int p = 0; p < kPieces; ++p)
    for (int s = 0; s < 3; ++s) acc[p][s] = PL(Acc(0));
  int64_t j = 0;
  for (; j + kLanes <= d; j += kLanes) {
    L ta, tb, tc;  // half and bfloat16: the block converted once, then taken in pieces
    if constexpr (!std::is_same_v<T, Acc>) {
      const auto full = std::integral_constant<int, kLanes>{};
      ta = load_lanes<Acc>(ra + j, full), tb = load_lanes<Acc>(rb + j, full);
      tc = rc ? load_lanes<Acc>(rc + j, full) : L(Acc(0));
    }
    for (int p = 0; p < kPieces; ++p) {
      PL va, vb, vc;
      if constexpr (std::is_same_v<T, Acc>) {
        va = load_piece<Acc>(ra + j, p), vb = load_piece<Acc>(rb + j, p);
        vc = rc ? load_piece<Acc>(rc + j, p) : PL(Acc(0));
      } else {
        va = piece_of(ta, p), vb = piece_of(tb, p), vc = piece_of(tc, p);
      }
      // straight into the sums: the same bits as adding the block's 0 + x (sums start at +0
      // and never become -0, the one case where x and 0 + x differ)
      Formula::accumulate(va, vb, vc, qp, acc[p]);
    }
  }
  if (j < d) {  // the tail block: lanes past it add nothing
    const int n = int(d - j);
    const L ta = load_lanes<Acc>(ra + j, n), tb = load_lanes<Acc>(rb + j, n);
    const L tc = rc ? load_lanes<Acc>(rc + j, n) : L(Acc(0));
    for (int p = 0; p < kPieces; ++p) {
      PL blk[3] = {PL(Acc(0)), PL(Acc(0)), PL(Acc(0))};
      Formula::accumulate(piece_of(ta, p), piece_of(tb, p), piece_of(tc, p), qp, blk);
      const auto inside = piece_of(tail_lanes, p);
      for (int s = 0; s < kSums; ++s) acc[p][s] += select(inside, blk[s], PL(Acc(0)));
    }
  }
  for (int s = 0; s < kSums; ++s)
    for (int p = 0; p < kPieces; ++p)
      std::memcpy(reinterpret_cast<char*>(&sums[s].v) + p * sizeof(acc[p][s].v), &acc[p][s].v, sizeof(acc[p][s].v));
}

// The same kernel with each block as one Lanes value: sums and gradients in registers. The same
// operations lane by lane as row_range, so the same bits. (Not for norms of order p: std::pow
// has no lane form.)
//  - Without gradients (evaluation) rows go in groups of kLanes: the group's sums are folded
//    together (sum_lanes_of_rows) and its finish runs once on lanes of rows. Row by row, the
//    finish (a chain of dependent square roots and divisions) and each row's own fold cost more
//    than the row's bytes when they are in cache: 2x torch.compile's time at 4096 x 128.
//  - With gradients each row's pass 2 follows its pass 1, the row still in L1. Groups were
//    slower there (20-40% at 65536 x 256 with streaming stores, measured), so the finish is the
//    scalar one, row by row.
template <typename T, typename Formula>
double row_range_lanes(const RowArgs& a, int64_t begin, int64_t end) {
  using Acc = typename AccOf<T>::type;
  using L = Lanes<Acc>;
  using PL = Lanes<Acc, kPieceLanes<Acc>>;
  const int64_t d = a.d;
  const row::Params<Acc> q{Acc(a.margin), Acc(a.eps), Acc(a.p), a.swap};
  const row::Params<L> ql{L(q.margin), L(q.eps), L(q.p), q.swap};
  const row::Params<PL> qp{PL(q.margin), PL(q.eps), PL(q.p), q.swap};
  const bool three = a.c != nullptr;
  const LaneMask<Acc> tail_lanes = lanes_below<Acc>(int(d % kLanes));
  constexpr int kSums = Formula::kSums;
  auto row_ptr = [&](const void* base, int64_t r) {
    return base ? static_cast<const T*>(base) + r * d : static_cast<const T*>(nullptr);
  };
  double total = 0.0;
  if (!(a.grad_a || a.grad_b || a.grad_c)) {
    for (int64_t r0 = begin; r0 < end; r0 += kLanes) {
      const int rows = int(std::min<int64_t>(kLanes, end - r0));
      L sums[kSums][kLanes];
      for (int i = 0; i < kLanes; ++i) {
        L one[kSums];
        if (i < rows) {
          row_sums<T, Formula>(row_ptr(a.a, r0 + i), row_ptr(a.b, r0 + i), row_ptr(a.c, r0 + i), d, qp, tail_lanes, one);
        } else {
          for (int s = 0; s < kSums; ++s) one[s] = L(Acc(0));  // past the range: results unused
        }
        for (int s = 0; s < kSums; ++s) sums[s][i] = one[s];
      }
      L row_sum[3] = {L(Acc(0)), L(Acc(0)), L(Acc(0))};  // lane i: row r0 + i
      for (int s = 0; s < kSums; ++s) row_sum[s] = sum_lanes_of_rows(sums[s]);
      Acc labels[kLanes] = {};
      for (int i = 0; i < rows; ++i) labels[i] = row_label<T, Acc>(a, r0 + i);
      L label;
      std::memcpy(&label.v, labels, sizeof(labels));
      L k[6];  // the coefficients: unused without gradients
      for (int c = 0; c < 6; ++c) k[c] = L(Acc(0));
      const L loss = Formula::finish(row_sum, label, ql, k);
      Acc losses[kLanes];
      std::memcpy(losses, &loss.v, sizeof(losses));
      for (int i = 0; i < rows; ++i) keep_loss<T>(a, r0 + i, losses[i], total);
    }
    return total;
  }
  for (int64_t r = begin; r < end; ++r) {
    const T *ra = row_ptr(a.a, r), *rb = row_ptr(a.b, r), *rc = row_ptr(a.c, r);
    L sums[kSums];
    row_sums<T, Formula>(ra, rb, rc, d, qp, tail_lanes, sums);
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
