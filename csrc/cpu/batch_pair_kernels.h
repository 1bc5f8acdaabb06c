// The epilogues of the in-batch losses' tiles (formulas/batch_pair.h), for one instruction set:
// given a tile of inner products from a matrix product, the distances, the label masks, and
// either the contrastive costs, counts and gradient coefficients or the batch-hard mining.
// Columns go in blocks of kLanes accumulated lane by lane, so every sum has an order fixed by
// the indices alone (the same bits for any thread count and instruction set).
#include "../formulas/batch_pair.h"
#include "kernel_helpers.h"

namespace fastloss::cpu::FASTLOSS_ISA {
namespace {

template <typename T>
void contrastive_tile(const PairTileArgs& a) {
  const T* dots = static_cast<const T*>(a.dots);
  const T* q_scale = static_cast<const T*>(a.q_scale);
  const T* r_scale = static_cast<const T*>(a.r_scale);
  const T* q_sq = static_cast<const T*>(a.q_sq);
  const T* r_sq = static_cast<const T*>(a.r_sq);
  T* coef_pos = static_cast<T*>(a.coef_pos);
  T* coef_neg = static_cast<T*>(a.coef_neg);
  const T pos_margin = T(a.margin_a), neg_margin = T(a.margin_b);
  for (int64_t i = 0; i < a.rows; ++i) {
    const T* row = dots + i * a.ld;
    const T qs = q_sq[i], qscale = q_scale[i];
    const int32_t id = a.q_ids[i];
    const int64_t self_col = a.exclude_self ? i + a.self_offset : -1;
    T lanes[9][kLanes] = {};
    T out_pos[kLanes], out_neg[kLanes];
    for_each_block(a.cols, [&](int64_t j, auto n) {
      for (int k = 0; k < kLanes; ++k) {  // all lanes (a fixed trip count vectorizes)
        const bool inside = k < n;
        const int64_t c = j + (inside ? k : 0);  // lanes past a tail read column j, then count nothing
        const T d = std::sqrt(batch::squared_distance(qs, r_sq[c], row[c] * qscale * r_scale[c]));
        const bool same = a.r_ids[c] == id;
        const bool pos = inside & same & (c != self_col);  // & not &&: no branches in the lane loop
        const bool neg = inside & !same;
        T ap, an;
        const T cp = select(pos, batch::contrastive_pos(d, pos_margin, ap), T(0));
        const T cn = select(neg, batch::contrastive_neg(d, neg_margin, an), T(0));
        lanes[0][k] += select(cp > T(0), cp, T(0));
        lanes[1][k] += select(cp > T(0), T(1), T(0));
        lanes[2][k] += select(cn > T(0), cn, T(0));
        lanes[3][k] += select(cn > T(0), T(1), T(0));
        lanes[4][k] += cp + cn;
        const T coef_p = select(pos, ap, T(0)), coef_n = select(neg, an, T(0));
        lanes[5][k] += coef_p;
        lanes[6][k] += coef_n;
        out_pos[k] = coef_p * r_scale[c];
        out_neg[k] = coef_n * r_scale[c];
        lanes[7][k] += select(out_pos[k] != T(0), T(1), T(0));
        lanes[8][k] += select(out_neg[k] != T(0), T(1), T(0));
      }
      if (coef_pos) {
        for (int k = 0; k < n; ++k) coef_pos[i * a.cols + j + k] = out_pos[k];
        for (int k = 0; k < n; ++k) coef_neg[i * a.cols + j + k] = out_neg[k];
      }
    });
    double* stats = a.stats + i * kPairStats;
    for (int s = 0; s < kPairStats; ++s) stats[s] += sum_lanes(lanes[s]);
    if (a.rowsum_pos) {
      static_cast<T*>(a.rowsum_pos)[i] += T(sum_lanes(lanes[5]));
      static_cast<T*>(a.rowsum_neg)[i] += T(sum_lanes(lanes[6]));
    }
    if (a.nonzero_pos) {
      a.nonzero_pos[i] = int32_t(sum_lanes(lanes[7]));
      a.nonzero_neg[i] = int32_t(sum_lanes(lanes[8]));
    }
  }
}

// The hardest positive (largest distance) and negative (smallest) of each row over this tile's
// columns, merged into the running state: a tile replaces it only when strictly harder, and
// within a tile the lowest column wins a tie, so ties go to the lowest column overall. A NaN
// distance is the hardest of all (torch.max and torch.min return NaN), its first column kept.
template <typename T>
void hard_mining_tile(const PairTileArgs& a) {
  const T* dots = static_cast<const T*>(a.dots);
  const T* q_scale = static_cast<const T*>(a.q_scale);
  const T* r_scale = static_cast<const T*>(a.r_scale);
  const T* q_sq = static_cast<const T*>(a.q_sq);
  const T* r_sq = static_cast<const T*>(a.r_sq);
  T* pos_d = static_cast<T*>(a.pos_d);
  T* neg_d = static_cast<T*>(a.neg_d);
  const T inf = std::numeric_limits<T>::infinity();
  std::vector<T> cand_pos(size_t(a.cols)), cand_neg(size_t(a.cols));
  for (int64_t i = 0; i < a.rows; ++i) {
    const T* row = dots + i * a.ld;
    const T qs = q_sq[i], qscale = q_scale[i];
    const int32_t id = a.q_ids[i];
    const int64_t self_col = a.exclude_self ? i + a.self_offset : -1;
    // per lane: the hardest so far and whether a NaN was seen (selects, no reductions: vectorizes)
    T lane_pos[kLanes], lane_neg[kLanes], lane_nan_pos[kLanes], lane_nan_neg[kLanes];
    for (int k = 0; k < kLanes; ++k) {
      lane_pos[k] = -inf;
      lane_neg[k] = inf;
      lane_nan_pos[k] = lane_nan_neg[k] = T(0);
    }
    T out_pos[kLanes], out_neg[kLanes];
    for_each_block(a.cols, [&](int64_t j, auto n) {
      for (int k = 0; k < kLanes; ++k) {
        const bool inside = k < n;
        const int64_t c = j + (inside ? k : 0);
        const T d = std::sqrt(batch::squared_distance(qs, r_sq[c], row[c] * qscale * r_scale[c]));
        const bool same = a.r_ids[c] == id;
        const T p = select(inside & same & (c != self_col), d, -inf);
        const T q = select(inside & !same, d, inf);
        out_pos[k] = p;
        out_neg[k] = q;
        lane_pos[k] = select(p > lane_pos[k], p, lane_pos[k]);
        lane_neg[k] = select(q < lane_neg[k], q, lane_neg[k]);
        lane_nan_pos[k] = select(p != p, T(1), lane_nan_pos[k]);
        lane_nan_neg[k] = select(q != q, T(1), lane_nan_neg[k]);
      }
      for (int k = 0; k < n; ++k) cand_pos[size_t(j + k)] = out_pos[k];
      for (int k = 0; k < n; ++k) cand_neg[size_t(j + k)] = out_neg[k];
    });
    T best_pos = -inf, best_neg = inf;
    bool nan_pos = false, nan_neg = false;
    for (int k = 0; k < kLanes; ++k) {
      best_pos = lane_pos[k] > best_pos ? lane_pos[k] : best_pos;
      best_neg = lane_neg[k] < best_neg ? lane_neg[k] : best_neg;
      nan_pos |= lane_nan_pos[k] != T(0);
      nan_neg |= lane_nan_neg[k] != T(0);
    }
    auto first = [&](const std::vector<T>& cand, T value, bool nan) {
      for (int64_t c = 0; c < a.cols; ++c) {
        const T v = cand[size_t(c)];
        if (nan ? v != v : v == value) return c;
      }
      return int64_t(-1);
    };
    const bool had_nan_pos = pos_d[i] != pos_d[i], had_nan_neg = neg_d[i] != neg_d[i];
    if (!had_nan_pos && (nan_pos || best_pos > pos_d[i])) {
      const int64_t c = first(cand_pos, best_pos, nan_pos);
      pos_d[i] = cand_pos[size_t(c)];
      a.pos_j[i] = a.col0 + c;
    }
    if (!had_nan_neg && (nan_neg || best_neg < neg_d[i])) {
      const int64_t c = first(cand_neg, best_neg, nan_neg);
      neg_d[i] = cand_neg[size_t(c)];
      a.neg_j[i] = a.col0 + c;
    }
  }
}

PairTileFn pair_tile_for(ScalarKind kind, bool hard_mining) {
  if (kind == ScalarKind::kDouble) return hard_mining ? &hard_mining_tile<double> : &contrastive_tile<double>;
  return hard_mining ? &hard_mining_tile<float> : &contrastive_tile<float>;
}

}  // namespace
}  // namespace fastloss::cpu::FASTLOSS_ISA
