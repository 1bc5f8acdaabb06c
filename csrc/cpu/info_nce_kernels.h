// The epilogues of the all-pairs softmax tiles (formulas/info_nce.h), for one instruction set:
// given a tile of inner products from a matrix product, either the online log-sum-exp
// statistics of its rows (and of its columns) or the gradient coefficients of its logits.
// Columns go in blocks of kLanes accumulated lane by lane, rows in index order, so every sum has
// an order fixed by the indices alone (the same bits for any thread count and instruction set).
#include "../formulas/info_nce.h"
#include "kernel_helpers.h"

namespace fastloss::cpu::FASTLOSS_ISA {
namespace {

// The tile's column of row r's positive and of its self pair, or -1 when outside the tile.
struct RowColumns {
  int64_t positive, self;
};
inline RowColumns row_columns(const InfoNceTileArgs& a, int64_t i) {
  const int64_t r = a.row0 + i;
  const int64_t p = (r + a.pos_offset) % a.pos_period - a.col0;
  const int64_t s = r + a.self_offset - a.col0;
  return {p >= 0 && p < a.cols ? p : -1, a.self_offset >= 0 && s >= 0 && s < a.cols ? s : -1};
}

template <typename T, bool kColumns>
void stats_tile(const InfoNceTileArgs& a) {
  const T* dots = static_cast<const T*>(a.dots);
  const T scale = T(a.scale), neg_inf = -std::numeric_limits<T>::infinity();
  T* row_max = static_cast<T*>(a.row_max);
  T* row_sum = static_cast<T*>(a.row_sum);
  T* pos_logit = static_cast<T*>(a.pos_logit);
  for (int64_t i = 0; i < a.rows; ++i) {
    const T* row = dots + i * a.cols;
    const RowColumns rc = row_columns(a, i);
    if (rc.positive >= 0 && rc.positive != rc.self) pos_logit[i] = row[rc.positive] * scale;
    T lane_max[kLanes];
    for (int k = 0; k < kLanes; ++k) lane_max[k] = neg_inf;
    for_each_block(a.cols, [&](int64_t j, auto n) {
      for (int k = 0; k < kLanes; ++k) {
        const bool inside = k < n;
        const int64_t c = j + (inside ? k : 0);
        const T l = select(inside & (c != rc.self), row[c] * scale, neg_inf);
        lane_max[k] = select(l > lane_max[k], l, lane_max[k]);
      }
    });
    T top = row_max[i];
    for (int k = 0; k < kLanes; ++k) top = select(lane_max[k] > top, lane_max[k], top);
    const T shift = info_nce::shift_of(top);
    T lane_sum[kLanes] = {};
    for_each_block(a.cols, [&](int64_t j, auto n) {
      for (int k = 0; k < kLanes; ++k) {
        const bool inside = k < n;
        const int64_t c = j + (inside ? k : 0);
        const T e = info_nce::exp_below(row[c] * scale, shift);
        lane_sum[k] += select(inside & (c != rc.self), e, T(0));
      }
    });
    row_sum[i] = info_nce::rescaled(row_sum[i], row_max[i], shift) + T(sum_lanes(lane_sum));
    row_max[i] = top;
  }
  if constexpr (kColumns) {
    // Per column over this tile's rows: the max first, then the sum at the merged shift.
    T* col_max = static_cast<T*>(a.col_max);
    T* col_sum = static_cast<T*>(a.col_sum);
    std::vector<T> top(size_t(a.cols), neg_inf);
    const int64_t self_col0 = a.row0 + a.self_offset - a.col0;  // row i's self column is i + self_col0
    for (int64_t i = 0; i < a.rows; ++i) {
      const T* row = dots + i * a.cols;
      const int64_t self = a.self_offset >= 0 ? i + self_col0 : -1;
      for (int64_t c = 0; c < a.cols; ++c) {
        const T l = select(c != self, row[c] * scale, neg_inf);
        top[size_t(c)] = select(l > top[size_t(c)], l, top[size_t(c)]);
      }
    }
    for (int64_t c = 0; c < a.cols; ++c) {
      const T merged = select(top[size_t(c)] > col_max[c], top[size_t(c)], col_max[c]);
      col_sum[c] = info_nce::rescaled(col_sum[c], col_max[c], info_nce::shift_of(merged));
      col_max[c] = merged;
      top[size_t(c)] = info_nce::shift_of(merged);  // now the column's shift
    }
    for (int64_t i = 0; i < a.rows; ++i) {
      const T* row = dots + i * a.cols;
      const int64_t self = a.self_offset >= 0 ? i + self_col0 : -1;
      for (int64_t c = 0; c < a.cols; ++c) {
        const T e = info_nce::exp_below(row[c] * scale, top[size_t(c)]);
        col_sum[c] += select(c != self, e, T(0));
      }
    }
  }
}

template <typename T, bool kRow, bool kCol>
void grad_tile(const InfoNceTileArgs& a) {
  const T* dots = static_cast<const T*>(a.dots);
  const T scale = T(a.scale);
  T* coef = static_cast<T*>(a.coef);
  const T* row_lse = static_cast<const T*>(a.row_lse);
  const T* row_weight = static_cast<const T*>(a.row_weight);
  const T* col_lse = kCol ? static_cast<const T*>(a.col_lse) + a.col0 : nullptr;
  const T* col_weight = kCol ? static_cast<const T*>(a.col_weight) + a.col0 : nullptr;
  T* dot_grad = static_cast<T*>(a.dot_grad);
  for (int64_t i = 0; i < a.rows; ++i) {
    const T* row = dots + i * a.cols;
    T* out = coef + i * a.cols;
    const RowColumns rc = row_columns(a, i);
    const T rl = kRow ? row_lse[i] : T(0), rw = kRow ? row_weight[i] : T(0);
    T lane_dot[kLanes] = {};
    T values[kLanes];
    for_each_block(a.cols, [&](int64_t j, auto n) {
      for (int k = 0; k < kLanes; ++k) {
        const bool inside = k < n;
        const int64_t c = j + (inside ? k : 0);
        const T cl = kCol ? col_lse[c] : T(0), cw = kCol ? col_weight[c] : T(0);
        const T v = info_nce::coefficient<T, kRow, kCol>(row[c] * scale, c == rc.positive, rl, rw, cl, cw);
        values[k] = select(inside & (c != rc.self), v, T(0));
        lane_dot[k] += values[k] * row[c];
      }
      for (int k = 0; k < n; ++k) out[j + k] = values[k];
    });
    dot_grad[i] += T(sum_lanes(lane_dot));
  }
}

template <typename T>
InfoNceTileFn info_nce_tile_of(InfoNceTile which) {
  switch (which) {
    case InfoNceTile::kStats: return &stats_tile<T, false>;
    case InfoNceTile::kStatsWithColumns: return &stats_tile<T, true>;
    case InfoNceTile::kGradRow: return &grad_tile<T, true, false>;
    case InfoNceTile::kGradColumn: return &grad_tile<T, false, true>;
    default: return &grad_tile<T, true, true>;
  }
}

InfoNceTileFn info_nce_tile_for(ScalarKind kind, InfoNceTile which) {
  return kind == ScalarKind::kDouble ? info_nce_tile_of<double>(which) : info_nce_tile_of<float>(which);
}

}  // namespace
}  // namespace fastloss::cpu::FASTLOSS_ISA
