// CPU implementation of fastloss::batch_pair_loss (formulas/batch_pair.h): the query rows in
// tasks of kTaskRows on at::parallel_for (a fixed split), each walking the reference rows in
// tiles of kTileCols in order: the tile's inner products by one BLAS call (single-threaded
// inside the parallel region), then the epilogue of kernels_<isa>.cpp, then - when training -
// the coefficient tiles times the reference rows (BLAS, or a sum over the nonzero coefficients
// when a tile is mostly zeros) into the task's own gradient rows.
// Nothing N x M is ever held: per worker three tiles of kTaskRows x kTileCols (768 KiB in
// float), per row five statistics and, when training, two gradient accumulators of D values.
//
// The AvgNonZero normalisers (how many positive and negative costs are > 0) are known only at
// the end of the sweep, so the gradient is accumulated in two parts, positive and negative
// pairs, and combined with 1/count each at the end: one pass over the matrix, at the price of
// a second coefficient product per tile (a first pass for the counts would recompute every
// tile's inner products instead). With the batch as its own reference set the pair matrix is
// symmetric and each row's gradient is twice its query-role part; with a separate reference
// set a second, column-owned sweep (the reference rows' tasks over the query tiles, the scales
// known by then) gives the reference gradient: no two writers to one row, no atomics.
#include <torch/library.h>

#include "../batch_pair_checks.h"
#include "cpu_common.h"

namespace fastloss::cpu {
namespace {

constexpr int64_t kTaskRows = 128;
constexpr int64_t kTileCols = 512;

// Equal int32 ids for equal labels (the epilogue compares them lane by lane with float values).
std::pair<at::Tensor, at::Tensor> label_ids(const at::Tensor& q_labels, const std::optional<at::Tensor>& r_labels) {
  const at::Tensor all = r_labels.has_value() ? at::cat({q_labels, *r_labels}) : q_labels;
  const at::Tensor ids = std::get<1>(at::_unique2(all, /*sorted=*/false, /*return_inverse=*/true)).to(at::kInt);
  const int64_t n = q_labels.size(0);
  at::Tensor q_ids = ids.narrow(0, 0, n).contiguous();
  at::Tensor r_ids = r_labels.has_value() ? ids.narrow(0, n, r_labels->size(0)).contiguous() : q_ids;
  return {q_ids, r_ids};
}

constexpr double kNormEps = 1e-12;  // F.normalize's eps

// Per row: the scale that makes it a unit row, 1 / max(|x_i|, 1e-12) (F.normalize), or 1; and
// the squared norm of the scaled row. Sums in double in index order.
template <typename T>
std::pair<at::Tensor, at::Tensor> row_scales(const at::Tensor& x, bool normalize) {
  const int64_t n = x.size(0), d = x.size(1);
  at::Tensor scale = at::empty({n}, x.options()), sq = at::empty({n}, x.options());
  const T* data = x.data_ptr<T>();
  T *sc = scale.data_ptr<T>(), *s2 = sq.data_ptr<T>();
  at::parallel_for(0, n, 256, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      double s = 0.0;
      for (int64_t k = 0; k < d; ++k) s += double(data[i * d + k]) * double(data[i * d + k]);
      const double f = normalize ? 1.0 / std::max(std::sqrt(s), kNormEps) : 1.0;
      sc[i] = T(f);
      s2[i] = T(s * f * f);
    }
  });
  return {scale, sq};
}

// g_i <- d L / d x_i in place, from g_i = d L / d(x_i scale_i): F.normalize's backward,
// (g - u (u . g)) / |x| with u the unit row, or g / 1e-12 where the norm was clamped.
template <typename T>
void unit_row_backward(at::Tensor& g, const at::Tensor& x, const at::Tensor& scale) {
  const int64_t n = x.size(0), d = x.size(1);
  T* gd = g.data_ptr<T>();
  const T *xd = x.data_ptr<T>(), *sc = scale.data_ptr<T>();
  at::parallel_for(0, n, 64, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const T f = sc[i];
      double norm_sq = 0.0, dot = 0.0;
      for (int64_t k = 0; k < d; ++k) {
        norm_sq += double(xd[i * d + k]) * double(xd[i * d + k]);
        dot += double(xd[i * d + k] * f) * double(gd[i * d + k]);
      }
      const bool clamped = !(std::sqrt(norm_sq) > kNormEps);  // no gradient through the clamped norm
      const T u_dot_g = clamped ? T(0) : T(dot);
      for (int64_t k = 0; k < d; ++k) gd[i * d + k] = (gd[i * d + k] - xd[i * d + k] * f * u_dot_g) * f;
    }
  });
}

// Per worker: the tile of inner products and the two coefficient tiles (with their rows' counts
// of nonzero coefficients).
template <typename T>
struct Scratch {
  std::vector<T> dots = std::vector<T>(size_t(kTaskRows * kTileCols));
  std::vector<T> coef_pos = std::vector<T>(size_t(kTaskRows * kTileCols));
  std::vector<T> coef_neg = std::vector<T>(size_t(kTaskRows * kTileCols));
  std::vector<int32_t> nonzero_pos = std::vector<int32_t>(size_t(kTaskRows));
  std::vector<int32_t> nonzero_neg = std::vector<int32_t>(size_t(kTaskRows));
  at::Tensor view(std::vector<T>& buffer, int64_t rows, int64_t cols, const at::TensorOptions& opts) {
    return at::from_blob(buffer.data(), {rows, cols}, opts);
  }
};

// acc (rows x d) += coef (rows x cols) @ y (cols x d, the tile's rows). A tile of coefficients
// is often mostly zeros (positive pairs are few when there are many labels; negative pairs cost
// only within the margin): then a row-by-row sum over its nonzero coefficients, in column order,
// replaces the matrix product. The choice depends on the data alone, not on threads.
template <typename T>
void add_coefficient_product(at::Tensor acc, const T* coef, const int32_t* nonzero, int64_t rows, int64_t cols,
                             const at::Tensor& y, const at::TensorOptions& opts, double alpha = 1.0) {
  int64_t total = 0;
  for (int64_t i = 0; i < rows; ++i) total += nonzero[i];
  if (total == 0) return;
  if (total * 32 > rows * cols) {  // dense enough for BLAS
    acc.addmm_(at::from_blob(const_cast<T*>(coef), {rows, cols}, opts), y, 1.0, alpha);
    return;
  }
  const int64_t d = y.size(1);
  const T* yd = y.data_ptr<T>();
  T* out = acc.data_ptr<T>();
  for (int64_t i = 0; i < rows; ++i) {
    if (nonzero[i] == 0) continue;
    for (int64_t j = 0; j < cols; ++j) {
      const T a = coef[i * cols + j] * T(alpha);
      if (coef[i * cols + j] == T(0)) continue;
      for (int64_t k = 0; k < d; ++k) out[i * d + k] += a * yd[j * d + k];
    }
  }
}

// Per-row data of one side of the tiles: scales, squared norms of the scaled rows, label ids.
struct RowSide {
  const at::Tensor& scale;
  const at::Tensor& sq;
  const at::Tensor& ids;
};

// The epilogue's arguments for the tile of rows [i0, i0 + rows) by columns [j0, j0 + cols).
template <typename T>
PairTileArgs tile_args(Scratch<T>& s, const RowSide& row, const RowSide& col, int64_t i0, int64_t rows, int64_t j0,
                       int64_t cols, std::optional<int64_t> dropped) {
  PairTileArgs a{};
  a.dots = s.dots.data();
  a.rows = rows;
  a.cols = cols;
  a.ld = cols;
  a.q_scale = row.scale.data_ptr<T>() + i0;
  a.r_scale = col.scale.data_ptr<T>() + j0;
  a.q_sq = row.sq.data_ptr<T>() + i0;
  a.r_sq = col.sq.data_ptr<T>() + j0;
  a.q_ids = row.ids.data_ptr<int32_t>() + i0;
  a.r_ids = col.ids.data_ptr<int32_t>() + j0;
  a.exclude_self = dropped.has_value();  // the pairs (row i, column i + *dropped) of the whole matrix
  a.self_offset = i0 + dropped.value_or(0) - j0;
  return a;
}

// Calls body(scratch, i0, rows, j0, cols) for every tile of rows q x rows r, after writing the
// tile's inner products into scratch.dots (rows x cols, row stride cols): tasks of kTaskRows
// query rows in parallel, each walking the reference tiles in order.
template <typename T, typename Body>
void for_each_tile(const at::Tensor& q, const at::Tensor& r, const Body& body) {
  const int64_t n = q.size(0), m = r.size(0);
  const int64_t tasks = (n + kTaskRows - 1) / kTaskRows;
  at::parallel_for(0, tasks, 1, [&](int64_t t0, int64_t t1) {
    // The ATen calls below run in worker threads, which have their own autograd state.
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    Scratch<T> scratch;
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t i0 = t * kTaskRows, rows = std::min(kTaskRows, n - i0);
      const at::Tensor qi = q.narrow(0, i0, rows);
      for (int64_t j0 = 0; j0 < m; j0 += kTileCols) {
        const int64_t cols = std::min(kTileCols, m - j0);
        at::Tensor dots = scratch.view(scratch.dots, rows, cols, q.options());
        at::mm_out(dots, qi, r.narrow(0, j0, cols).t());
        body(scratch, i0, rows, j0, cols);
      }
    }
  });
}

// Per row of x: the scale that makes it a unit row (or 1), the squared norm of the scaled row,
// the label ids. (RowSide refers to these.)
template <typename T>
struct Rows {
  Rows(const at::Tensor& x, const at::Tensor& label_ids, bool normalize)
      : scaled(row_scales<T>(x, normalize)), ids(label_ids) {}
  std::pair<at::Tensor, at::Tensor> scaled;
  at::Tensor ids;
  RowSide side() const { return {scaled.first, scaled.second, ids}; }
};

// One contrastive sweep, rows x against rows y (tasks of x rows): the epilogue of every tile,
// its statistics added to stats (x rows x kPairStats); when acc_pos is defined, the coefficient
// row sums added to rowsum_pos/neg and the coefficient tiles times y added to acc_pos and
// acc_neg, scaled by alpha_pos and alpha_neg (acc_neg may be acc_pos itself when both scales are
// known already).
template <typename T>
void contrastive_sweep(const at::Tensor& x, const at::Tensor& y, const RowSide& xs, const RowSide& ys,
                       std::optional<int64_t> dropped, double pos_margin, double neg_margin, double* stats,
                       at::Tensor& rowsum_pos,
                       at::Tensor& rowsum_neg, at::Tensor& acc_pos, at::Tensor& acc_neg, double alpha_pos = 1.0,
                       double alpha_neg = 1.0) {
  const ScalarKind kind = std::is_same_v<T, double> ? ScalarKind::kDouble : ScalarKind::kFloat;
  const PairTileFn tile = kernels_for_this_cpu().pair_tile(kind, /*hard_mining=*/false);
  const bool coef = acc_pos.defined();
  for_each_tile<T>(x, y, [&](Scratch<T>& s, int64_t i0, int64_t rows, int64_t j0, int64_t cols) {
    PairTileArgs a = tile_args<T>(s, xs, ys, i0, rows, j0, cols, dropped);
    a.margin_a = pos_margin;
    a.margin_b = neg_margin;
    a.stats = stats + i0 * kPairStats;
    if (coef) {
      a.coef_pos = s.coef_pos.data();
      a.coef_neg = s.coef_neg.data();
      a.nonzero_pos = s.nonzero_pos.data();
      a.nonzero_neg = s.nonzero_neg.data();
      a.rowsum_pos = rowsum_pos.data_ptr<T>() + i0;
      a.rowsum_neg = rowsum_neg.data_ptr<T>() + i0;
    }
    tile(a);
    if (coef) {
      const at::Tensor yj = y.narrow(0, j0, cols);
      add_coefficient_product<T>(acc_pos.narrow(0, i0, rows), s.coef_pos.data(), s.nonzero_pos.data(), rows, cols,
                                 yj, x.options(), alpha_pos);
      add_coefficient_product<T>(acc_neg.narrow(0, i0, rows), s.coef_neg.data(), s.nonzero_neg.data(), rows, cols,
                                 yj, x.options(), alpha_neg);
    }
  });
}

// The gradient rows of x, in place over acc: sum_j a_ij (u_i - v_j) = u_i rowsum(a)_i - (A V)_i
// (u, v the scaled rows), the positive and negative parts scaled by scale_pos and scale_neg, times
// factor; acc holds (A V) already scaled, or - with acc_neg given - its positive part alone,
// acc_neg the negative one. Then F.normalize's backward where normalising.
template <typename T>
at::Tensor finish_gradient(at::Tensor acc, const at::Tensor& acc_neg, const at::Tensor& x, const at::Tensor& scale,
                           const at::Tensor& rowsum_pos, const at::Tensor& rowsum_neg, double scale_pos,
                           double scale_neg, double factor, bool normalize) {
  const int64_t n = x.size(0), d = x.size(1);
  const T sp = T(scale_pos), sn = T(scale_neg), f = T(factor);
  const T ap = acc_neg.defined() ? sp : T(1);  // the scales acc and acc_neg still need
  const T *v = x.data_ptr<T>(), *sc = scale.data_ptr<T>(), *an = acc_neg.defined() ? acc_neg.data_ptr<T>() : nullptr;
  const T *rp = rowsum_pos.data_ptr<T>(), *rn = rowsum_neg.data_ptr<T>();
  T* g = acc.data_ptr<T>();
  at::parallel_for(0, n, 64, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const T along = sp * rp[i] + sn * rn[i];
      for (int64_t k = 0; k < d; ++k) {
        const int64_t o = i * d + k;
        const T part = an ? ap * g[o] + sn * an[o] : g[o];
        g[o] = f * (v[o] * sc[i] * along - part);
      }
    }
  });
  if (normalize) unit_row_backward<T>(acc, x, scale);
  return acc;
}

// The contrastive loss: its value, and (as if grad_output were 1) the gradients asked for; with a
// reference set whose rows from self_offset on are the queries (self_offset >= 0), the pairs
// (i, i + self_offset) are dropped as the batch's own pairs are. The sums of the pair statistics
// go to sums_out.
template <typename T>
std::tuple<double, at::Tensor, at::Tensor> contrastive(const at::Tensor& q, const at::Tensor& r, bool self,
                                                         const at::Tensor& q_ids, const at::Tensor& r_ids,
                                                         int64_t reduction, double pos_margin, double neg_margin,
                                                         bool normalize, bool need_q, bool need_r, int64_t self_offset,
                                                         double* sums_out) {
  const int64_t n = q.size(0), m = r.size(0), d = q.size(1);
  const Rows<T> q_rows(q, q_ids, normalize);
  const Rows<T> r_rows = self ? q_rows : Rows<T>(r, r_ids, normalize);
  std::vector<double> stats(size_t(n * kPairStats), 0.0);
  at::Tensor acc_pos, acc_neg, rowsum_pos, rowsum_neg;
  if (need_q) {
    acc_pos = at::zeros({n, d}, q.options());
    acc_neg = at::zeros({n, d}, q.options());
    rowsum_pos = at::zeros({n}, q.options());
    rowsum_neg = at::zeros({n}, q.options());
  }
  const std::optional<int64_t> dropped =
      self ? std::optional<int64_t>(0) : self_offset >= 0 ? std::optional<int64_t>(self_offset) : std::nullopt;
  contrastive_sweep<T>(q, r, q_rows.side(), r_rows.side(), dropped, pos_margin, neg_margin, stats.data(), rowsum_pos,
                       rowsum_neg, acc_pos, acc_neg);

  double sums[kPairStats] = {};
  for (int64_t i = 0; i < n; ++i)
    for (int k = 0; k < kPairStats; ++k) sums[k] += stats[size_t(i * kPairStats + k)];
  for (int k = 0; k < kPairStats; ++k) sums_out[k] = sums[k];
  // the pairs dropped: one per query row whose own row lies in the reference set
  const int64_t own = dropped ? std::max<int64_t>(0, std::min(n, m - *dropped)) : 0;
  const double pairs = double(n) * double(m) - double(own);
  double value, scale_pos, scale_neg;
  switch (static_cast<batch::BatchReduction>(reduction)) {
    case batch::BatchReduction::kMean:
      value = pairs > 0 ? sums[4] / pairs : 0.0;
      scale_pos = scale_neg = pairs > 0 ? 1.0 / pairs : 0.0;
      break;
    case batch::BatchReduction::kSum:
      value = sums[4];
      scale_pos = scale_neg = 1.0;
      break;
    default:  // AvgNonZero: the mean of the positive costs > 0 plus that of the negative ones
      scale_pos = sums[1] > 0 ? 1.0 / sums[1] : 0.0;
      scale_neg = sums[3] > 0 ? 1.0 / sums[3] : 0.0;
      value = sums[0] * scale_pos + sums[2] * scale_neg;
  }
  at::Tensor grad_q, grad_r;
  if (need_q) {  // twice the query part for the batch against itself
    grad_q = finish_gradient<T>(acc_pos, acc_neg, q, q_rows.scaled.first, rowsum_pos, rowsum_neg, scale_pos,
                                scale_neg, self ? 2.0 : 1.0, normalize);
    acc_neg = at::Tensor();
  }
  if (need_r) {  // the column-owned sweep: reference rows against the query tiles, scales known
    std::vector<double> unused(size_t(m * kPairStats), 0.0);
    at::Tensor acc = at::zeros({m, d}, r.options());
    at::Tensor rs_pos = at::zeros({m}, r.options()), rs_neg = at::zeros({m}, r.options());
    // (row j of r, column i of q) is dropped where j = i + self_offset
    const std::optional<int64_t> back = dropped ? std::optional<int64_t>(-*dropped) : std::nullopt;
    contrastive_sweep<T>(r, q, r_rows.side(), q_rows.side(), back, pos_margin, neg_margin, unused.data(), rs_pos,
                         rs_neg, acc, acc, scale_pos, scale_neg);
    grad_r = finish_gradient<T>(acc, at::Tensor(), r, r_rows.scaled.first, rs_pos, rs_neg, scale_pos, scale_neg,
                                1.0, normalize);
  }
  return {value, grad_q, grad_r};
}

// The batch-hard triplet loss: the mining sweep, each anchor's cost, and (as if grad_output
// were 1) the gradient, which goes to each anchor, its hardest positive and its hardest
// negative. The anchors are the rows of x; the candidates the rows of y (x itself, or a
// reference set holding the anchors from row self_offset on), an anchor never its own candidate.
// Its O(N D) scatter runs over the anchors in index order for every column of D (the columns in
// parallel): the same bits for any thread count. Returns the gradients of x and of y (one tensor
// when y is x).
template <typename T>
std::tuple<double, at::Tensor, at::Tensor> hard_triplet(const at::Tensor& x, const at::Tensor& y, bool self,
                                                          const at::Tensor& ids, const at::Tensor& y_ids,
                                                          int64_t self_offset, int64_t reduction, double margin,
                                                          bool soft, bool normalize, bool need, double* sums_out) {
  const int64_t n = x.size(0), d = x.size(1);
  const ScalarKind kind = std::is_same_v<T, double> ? ScalarKind::kDouble : ScalarKind::kFloat;
  const PairTileFn tile = kernels_for_this_cpu().pair_tile(kind, /*hard_mining=*/true);
  const std::pair<at::Tensor, at::Tensor> rows_of_x = row_scales<T>(x, normalize);
  const std::pair<at::Tensor, at::Tensor> rows_of_y = self ? rows_of_x : row_scales<T>(y, normalize);
  const at::Tensor &scale = rows_of_x.first, &sq = rows_of_x.second;
  const at::Tensor &y_scale = rows_of_y.first, &y_sq = rows_of_y.second;
  const int64_t own = self ? 0 : self_offset;  // anchor i's own row in y
  const T inf = std::numeric_limits<T>::infinity();
  std::vector<T> pos_d(size_t(n), -inf), neg_d(size_t(n), inf);
  std::vector<int64_t> pos_j(size_t(n), -1), neg_j(size_t(n), -1);
  for_each_tile<T>(x, y, [&](Scratch<T>& s, int64_t i0, int64_t rows, int64_t j0, int64_t cols) {
    PairTileArgs a = tile_args<T>(s, {scale, sq, ids}, {y_scale, y_sq, y_ids}, i0, rows, j0, cols, own);
    a.col0 = j0;
    a.pos_d = pos_d.data() + i0;
    a.pos_j = pos_j.data() + i0;
    a.neg_d = neg_d.data() + i0;
    a.neg_j = neg_j.data() + i0;
    tile(a);
  });
  std::vector<T> dcost(size_t(n), T(0));
  std::vector<T> cost(size_t(n), T(0));
  double total = 0.0, nonzero_total = 0.0, kept = 0.0, nonzero = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    if (pos_j[size_t(i)] < 0 || neg_j[size_t(i)] < 0) continue;  // no positive or no negative
    T dc;
    cost[size_t(i)] = batch::hard_triplet(pos_d[size_t(i)], neg_d[size_t(i)], T(margin), soft, dc);
    dcost[size_t(i)] = dc;
    kept += 1;
    total += double(cost[size_t(i)]);
    if (cost[size_t(i)] > T(0)) {
      nonzero += 1;
      nonzero_total += double(cost[size_t(i)]);
    }
  }
  sums_out[0] = total;
  sums_out[1] = kept;
  sums_out[2] = nonzero_total;
  sums_out[3] = nonzero;
  sums_out[4] = total;
  double value;
  std::vector<T> weight(size_t(n), T(0));
  const auto reduce = static_cast<batch::BatchReduction>(reduction);
  for (int64_t i = 0; i < n; ++i) {
    const T c = cost[size_t(i)], dc = dcost[size_t(i)];
    if (reduce == batch::BatchReduction::kAvgNonZero) {
      weight[size_t(i)] = c > T(0) ? dc / T(nonzero) : T(0);
    } else {
      weight[size_t(i)] = reduce == batch::BatchReduction::kMean ? (kept > 0 ? dc / T(kept) : T(0)) : dc;
    }
  }
  if (reduce == batch::BatchReduction::kAvgNonZero) {
    value = nonzero > 0 ? nonzero_total / nonzero : 0.0;
  } else {
    value = reduce == batch::BatchReduction::kMean ? (kept > 0 ? total / kept : 0.0) : total;
  }
  if (!need) return {value, at::Tensor(), at::Tensor()};
  at::Tensor grad = at::zeros({n, d}, x.options());
  at::Tensor grad_y = self ? grad : at::zeros({y.size(0), d}, y.options());
  const T *v = x.data_ptr<T>(), *vy = y.data_ptr<T>();
  const T *sc = scale.data_ptr<T>(), *scy = y_scale.data_ptr<T>();
  T *g = grad.data_ptr<T>(), *gy = grad_y.data_ptr<T>();
  at::parallel_for(0, d, 16, [&](int64_t k0, int64_t k1) {  // in the scaled rows u = x scale
    for (int64_t i = 0; i < n; ++i) {
      const T w = weight[size_t(i)];
      if (w == T(0)) continue;
      const int64_t p = pos_j[size_t(i)], q = neg_j[size_t(i)];
      const T cp = batch::over_distance(w, pos_d[size_t(i)]), cn = batch::over_distance(w, neg_d[size_t(i)]);
      for (int64_t k = k0; k < k1; ++k) {
        const T u = v[i * d + k] * sc[i];
        const T to_p = u - vy[p * d + k] * scy[p], to_n = u - vy[q * d + k] * scy[q];
        g[i * d + k] += cp * to_p - cn * to_n;
        gy[p * d + k] -= cp * to_p;
        gy[q * d + k] += cn * to_n;
      }
    }
  });
  if (normalize) unit_row_backward<T>(grad, x, scale);
  if (self) return {value, grad, at::Tensor()};
  if (normalize) unit_row_backward<T>(grad_y, y, y_scale);
  return {value, grad, grad_y};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> batch_pair_loss_cpu(
    const at::Tensor& q, const std::optional<at::Tensor>& r, const at::Tensor& q_labels,
    const std::optional<at::Tensor>& r_labels, int64_t loss, int64_t reduction, double margin_a, double margin_b,
    bool normalize, bool need_grad_q, bool need_grad_r, int64_t self_offset) {
  check_batch_pair_args(q, r, q_labels, r_labels, loss, reduction, self_offset);
  const bool self = !r.has_value();
  need_grad_r = need_grad_r && !self;
  const auto opts = q.options();
  // The tiles are float (double for double inputs): half and bfloat16 rows are converted once.
  const at::ScalarType acc = q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const at::Tensor qa = q.detach().to(acc).contiguous();
  const at::Tensor ra = self ? qa : r->detach().to(acc).contiguous();
  auto [q_ids, r_ids] = label_ids(q_labels, r_labels);
  std::tuple<double, at::Tensor, at::Tensor> result;
  at::Tensor sums = at::zeros({kPairStats}, opts.dtype(at::kDouble));
  AT_DISPATCH_FLOATING_TYPES(qa.scalar_type(), "batch_pair_loss_cpu", [&] {
    if (static_cast<batch::BatchLoss>(loss) == batch::BatchLoss::kContrastive) {
      result = contrastive<scalar_t>(qa, ra, self, q_ids, r_ids, reduction, margin_a, margin_b, normalize,
                                     need_grad_q, need_grad_r, self_offset, sums.data_ptr<double>());
    } else {
      // (need_grad_r implies need_grad_q here: the anchors' and candidates' parts come together)
      result = hard_triplet<scalar_t>(qa, ra, self, q_ids, r_ids, self_offset, reduction, margin_a,
                                      static_cast<batch::BatchLoss>(loss) == batch::BatchLoss::kHardSoftTriplet,
                                      normalize, need_grad_q || need_grad_r, sums.data_ptr<double>());
    }
  });
  at::Tensor value = at::empty({}, opts);
  value.fill_(std::get<0>(result));
  auto out = [&](const at::Tensor& g, bool need) { return need ? g.to(q.scalar_type()) : at::empty({0}, opts); };
  return {value, out(std::get<1>(result), need_grad_q), out(std::get<2>(result), need_grad_r), sums};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastloss, CPU, m) { m.impl("batch_pair_loss", &batch_pair_loss_cpu); }

}  // namespace fastloss::cpu
