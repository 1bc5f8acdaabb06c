// CPU implementation of fastloss::info_nce_stats and info_nce_grad (formulas/info_nce.h): the
// rows of a in blocks of kBlockRows walking the rows of b in tiles of kTileCols, in order: the
// tile's inner products by one BLAS call (single-threaded inside the parallel region), then the
// epilogue of kernels_<isa>.cpp, then - for the gradient - the coefficient tile times b's rows
// (BLAS) into the block's own gradient rows. Nothing n x m is ever held: per worker two tiles of
// kBlockRows x kTileCols (512 KiB in float), per row two statistics and, for the gradient, the
// block's D-wide accumulator.
//
// Column statistics (CLIP's key -> query direction) come in the same sweep as the row ones: each
// of at most kColumnStripes stripes of row blocks keeps its own per-column state (2 m values),
// merged in stripe order at the end. The number of stripes depends on the sizes alone, so the
// bits do not depend on the thread count; 2 kColumnStripes m values is the price (1 MiB at m =
// 16384), where a second sweep would cost a whole further matrix product.
//
// The gradient sweep recomputes each tile's logits (the forward holds no n x m state), forms the
// coefficient tile, and adds C b into a's gradient rows and, when asked, C^T a into b's (see
// grad() for the order that keeps both deterministic without atomics).
#include <torch/library.h>

#include "../formulas/info_nce.h"
#include "../info_nce_checks.h"
#include "cpu_common.h"

namespace fastloss::cpu {
namespace {

constexpr int64_t kBlockRows = 128;
constexpr int64_t kTileCols = 512;
constexpr int64_t kColumnStripes = 16;
constexpr int64_t kGradStripes = 16;

at::ScalarType acc_type(const at::Tensor& x) { return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat; }

// Rows as tiles see them: float (double for double inputs), converted once from half/bfloat16.
at::Tensor tile_rows(const at::Tensor& x) { return x.detach().to(acc_type(x)).contiguous(); }

template <typename T>
T inverse_temperature(const at::Tensor& temperature) {
  return T(1.0 / temperature.item<double>());
}

template <typename T>
InfoNceTileArgs tile_base(const T* dots, int64_t i0, int64_t rows, int64_t j0, int64_t cols, T scale,
                          int64_t pos_offset, int64_t pos_period, int64_t self_offset) {
  InfoNceTileArgs t{};
  t.dots = dots;
  t.rows = rows;
  t.cols = cols;
  t.scale = double(scale);
  t.row0 = i0;
  t.col0 = j0;
  t.pos_offset = pos_offset;
  t.pos_period = pos_period;
  t.self_offset = self_offset;
  return t;
}

// body(dots, i0, rows, j0, cols) for every tile of the row blocks [b0, b1), after the tile's
// inner products a[i0:i0+rows] b[j0:j0+cols]^T were written into dots (rows x cols).
template <typename T, typename Body>
void sweep_blocks(const at::Tensor& a, const at::Tensor& b, int64_t b0, int64_t b1, std::vector<T>& dots,
                  const Body& body) {
  const int64_t n = a.size(0), m = b.size(0);
  for (int64_t blk = b0; blk < b1; ++blk) {
    const int64_t i0 = blk * kBlockRows, rows = std::min(kBlockRows, n - i0);
    const at::Tensor ai = a.narrow(0, i0, rows);
    for (int64_t j0 = 0; j0 < m; j0 += kTileCols) {
      const int64_t cols = std::min(kTileCols, m - j0);
      at::Tensor tile = at::from_blob(dots.data(), {rows, cols}, a.options());
      at::mm_out(tile, ai, b.narrow(0, j0, cols).t());
      body(dots.data(), i0, rows, j0, cols);
    }
  }
}

template <typename T>
std::tuple<at::Tensor, at::Tensor, at::Tensor> stats(const at::Tensor& a, const at::Tensor& b, T scale,
                                                     int64_t pos_offset, int64_t pos_period, int64_t self_offset,
                                                     bool col_stats) {
  const int64_t n = a.size(0), m = b.size(0);
  const T inf = std::numeric_limits<T>::infinity();
  const auto opts = a.options();
  at::Tensor row_max = at::full({n}, -inf, opts), row_sum = at::zeros({n}, opts);
  at::Tensor pos = at::full({n}, std::numeric_limits<T>::quiet_NaN(), opts);
  const int64_t blocks = (n + kBlockRows - 1) / kBlockRows;
  const int64_t stripes = col_stats ? std::min(blocks, kColumnStripes) : blocks;
  at::Tensor col_max, col_sum;
  if (col_stats) {
    col_max = at::full({std::max<int64_t>(stripes, 1), m}, -inf, opts);
    col_sum = at::zeros({std::max<int64_t>(stripes, 1), m}, opts);
  }
  const ScalarKind kind = std::is_same_v<T, double> ? ScalarKind::kDouble : ScalarKind::kFloat;
  const InfoNceTileFn tile =
      kernels_for_this_cpu().info_nce_tile(kind, col_stats ? InfoNceTile::kStatsWithColumns : InfoNceTile::kStats);
  T *rmax = row_max.data_ptr<T>(), *rsum = row_sum.data_ptr<T>(), *pl = pos.data_ptr<T>();
  at::parallel_for(0, stripes, 1, [&](int64_t s0, int64_t s1) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;  // worker threads have their own state
    std::vector<T> dots(size_t(kBlockRows * kTileCols));
    for (int64_t s = s0; s < s1; ++s) {
      sweep_blocks<T>(a, b, s * blocks / stripes, (s + 1) * blocks / stripes, dots,
                      [&](const T* d, int64_t i0, int64_t rows, int64_t j0, int64_t cols) {
                        InfoNceTileArgs t = tile_base<T>(d, i0, rows, j0, cols, scale, pos_offset, pos_period, self_offset);
                        t.row_max = rmax + i0;
                        t.row_sum = rsum + i0;
                        t.pos_logit = pl + i0;
                        if (col_stats) {
                          t.col_max = col_max.data_ptr<T>() + s * m + j0;
                          t.col_sum = col_sum.data_ptr<T>() + s * m + j0;
                        }
                        tile(t);
                      });
    }
  });
  at::Tensor lse = at::empty({n}, opts);
  T* out = lse.data_ptr<T>();
  for (int64_t i = 0; i < n; ++i) out[i] = info_nce::lse_of(rmax[i], rsum[i]);
  at::Tensor col_lse = at::empty({col_stats ? m : 0}, opts);
  if (col_stats) {
    const T *cmax = col_max.data_ptr<T>(), *csum = col_sum.data_ptr<T>();
    T* cl = col_lse.data_ptr<T>();
    for (int64_t j = 0; j < m; ++j) {  // the stripes merged in order
      T mx = -inf, sm = T(0);
      for (int64_t s = 0; s < stripes; ++s) info_nce::merge(mx, sm, cmax[s * m + j], csum[s * m + j]);
      cl[j] = info_nce::lse_of(mx, sm);
    }
  }
  return {lse, pos, col_lse};
}

// The gradient sweep. Without grad_b: row-owned, each block of a's rows accumulating C b into its
// own rows. With grad_b, C^T a is wanted too, from the same coefficient tiles (a third matrix
// product per tile instead of a second sweep's two): a's row blocks and b's tiles are cut into P
// stripes each, and the sweep runs in P rounds; in round r, worker w takes a-stripe w against
// b-stripe (w + r) mod P, so within a round no two workers share a row of either gradient. Each
// gradient row receives its parts in an order fixed by P, which depends on the sizes alone: the
// same bits for any thread count, no atomics, no partial buffers.
template <typename T>
std::tuple<at::Tensor, at::Tensor, at::Tensor> grad(const at::Tensor& a, const at::Tensor& b, T scale,
                                                    const at::Tensor& row_lse, const at::Tensor& row_weight,
                                                    const at::Tensor& col_lse, const at::Tensor& col_weight,
                                                    int64_t pos_offset, int64_t pos_period, int64_t self_offset,
                                                    bool need_grad_b) {
  const int64_t n = a.size(0), m = b.size(0), d = a.size(1);
  const bool row_term = row_lse.defined(), col_term = col_lse.defined();
  const auto opts = a.options();
  at::Tensor acc_a = at::zeros({n, d}, opts), dot_grad = at::zeros({n}, opts);
  at::Tensor acc_b = need_grad_b ? at::zeros({m, d}, opts) : at::empty({0}, opts);
  if (!row_term && !col_term) return {acc_a, acc_b, dot_grad};
  const ScalarKind kind = std::is_same_v<T, double> ? ScalarKind::kDouble : ScalarKind::kFloat;
  const InfoNceTile which = row_term && col_term ? InfoNceTile::kGradBoth
                            : row_term          ? InfoNceTile::kGradRow
                                                : InfoNceTile::kGradColumn;
  const InfoNceTileFn tile = kernels_for_this_cpu().info_nce_tile(kind, which);
  T* dg = dot_grad.data_ptr<T>();
  const int64_t blocks = (n + kBlockRows - 1) / kBlockRows, tiles = (m + kTileCols - 1) / kTileCols;
  const int64_t stripes = need_grad_b ? std::max<int64_t>(1, std::min({blocks, tiles, kGradStripes})) : 1;
  // Blocks [b0, b1) of a against tiles [t0, t1) of b.
  auto part = [&](int64_t b0, int64_t b1, int64_t t0, int64_t t1) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;  // worker threads have their own state
    std::vector<T> dots(size_t(kBlockRows * kTileCols)), coef(size_t(kBlockRows * kTileCols));
    for (int64_t blk = b0; blk < b1; ++blk) {
      const int64_t i0 = blk * kBlockRows, rows = std::min(kBlockRows, n - i0);
      const at::Tensor ai = a.narrow(0, i0, rows);
      for (int64_t tj = t0; tj < t1; ++tj) {
        const int64_t j0 = tj * kTileCols, cols = std::min(kTileCols, m - j0);
        const at::Tensor bj = b.narrow(0, j0, cols);
        at::Tensor dots_view = at::from_blob(dots.data(), {rows, cols}, opts);
        at::mm_out(dots_view, ai, bj.t());
        InfoNceTileArgs t = tile_base<T>(dots.data(), i0, rows, j0, cols, scale, pos_offset, pos_period, self_offset);
        t.coef = coef.data();
        if (row_term) {
          t.row_lse = row_lse.data_ptr<T>() + i0;
          t.row_weight = row_weight.data_ptr<T>() + i0;
        }
        if (col_term) {
          t.col_lse = col_lse.data_ptr<T>();
          t.col_weight = col_weight.data_ptr<T>();
        }
        t.dot_grad = dg + i0;
        tile(t);
        const at::Tensor c = at::from_blob(coef.data(), {rows, cols}, opts);
        acc_a.narrow(0, i0, rows).addmm_(c, bj);
        if (need_grad_b) acc_b.narrow(0, j0, cols).addmm_(c.t(), ai);
      }
    }
  };
  if (!need_grad_b) {
    at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) { part(b0, b1, 0, tiles); });
  } else {
    for (int64_t r = 0; r < stripes; ++r) {
      at::parallel_for(0, stripes, 1, [&](int64_t w0, int64_t w1) {
        for (int64_t w = w0; w < w1; ++w) {
          const int64_t v = (w + r) % stripes;
          part(w * blocks / stripes, (w + 1) * blocks / stripes, v * tiles / stripes, (v + 1) * tiles / stripes);
        }
      });
    }
  }
  acc_a.mul_(scale);
  if (need_grad_b) acc_b.mul_(scale);
  return {acc_a, acc_b, dot_grad};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> info_nce_stats_cpu(const at::Tensor& a, const at::Tensor& b,
                                                                  const at::Tensor& temperature, int64_t pos_offset,
                                                                  int64_t pos_period, int64_t self_offset,
                                                                  bool col_stats) {
  check_info_nce_args(a, b, temperature, pos_offset, pos_period, self_offset);
  const at::Tensor at_ = tile_rows(a), bt = tile_rows(b);
  std::tuple<at::Tensor, at::Tensor, at::Tensor> result;
  AT_DISPATCH_FLOATING_TYPES(at_.scalar_type(), "info_nce_stats_cpu", [&] {
    result = stats<scalar_t>(at_, bt, inverse_temperature<scalar_t>(temperature), pos_offset, pos_period,
                             self_offset, col_stats);
  });
  return result;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> info_nce_grad_cpu(
    const at::Tensor& a, const at::Tensor& b, const at::Tensor& temperature, const std::optional<at::Tensor>& row_lse,
    const std::optional<at::Tensor>& row_weight, const std::optional<at::Tensor>& col_lse,
    const std::optional<at::Tensor>& col_weight, int64_t pos_offset, int64_t pos_period, int64_t self_offset,
    bool need_grad_b) {
  check_info_nce_grad_args(a, b, temperature, row_lse, row_weight, col_lse, col_weight, pos_offset, pos_period,
                           self_offset);
  const at::Tensor at_ = tile_rows(a), bt = tile_rows(b);
  auto get = [](const std::optional<at::Tensor>& t) { return t.has_value() ? *t : at::Tensor(); };
  std::tuple<at::Tensor, at::Tensor, at::Tensor> result;
  AT_DISPATCH_FLOATING_TYPES(at_.scalar_type(), "info_nce_grad_cpu", [&] {
    result = grad<scalar_t>(at_, bt, inverse_temperature<scalar_t>(temperature), get(row_lse), get(row_weight),
                            get(col_lse), get(col_weight), pos_offset, pos_period, self_offset, need_grad_b);
  });
  const at::Tensor& grad_b = std::get<1>(result);
  return {std::get<0>(result).to(a.scalar_type()), need_grad_b ? grad_b.to(b.scalar_type()) : grad_b,
          std::get<2>(result)};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastloss, CPU, m) {
  m.impl("info_nce_stats", &info_nce_stats_cpu);
  m.impl("info_nce_grad", &info_nce_grad_cpu);
}

}  // namespace fastloss::cpu
