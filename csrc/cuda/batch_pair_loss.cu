// CUDA implementation of fastloss::batch_pair_loss (formulas/batch_pair.h), on the current
// stream under a device guard: tiles of kTile x kTile, each the inner products by cuBLAS
// (at::mm, which follows torch's TF32 setting), a hand-written epilogue kernel (one block per
// tile row: distances, label masks, costs and coefficients, or the hard mining, reduced in a
// fixed order and added into per-row state in launch order), and - when training - the
// coefficient tiles times the reference rows by cuBLAS into the gradient accumulators. As on
// the CPU (cpu/batch_pair_loss.cpp): two accumulators for the positive and negative parts
// (their AvgNonZero normalisers come at the end), twice the query part for the batch against
// itself, a column-owned sweep for a separate reference set, and the batch-hard gradient's
// scatter as a segment sum over the anchors sorted by choice. No atomics; tile buffers of
// 3 kTile^2 values (192 MiB in float), per-row state, and the gradient accumulators.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <limits>

#include "../batch_pair_checks.h"
#include "common.cuh"
#include "tiles.cuh"

namespace fastloss::cuda {
namespace {

constexpr int kStats = 7;  // positive costs > 0 (sum, count), negative (sum, count), all, two coefficient row sums

template <typename T>
__global__ void __launch_bounds__(kThreads)
contrastive_epilogue(const T* __restrict__ dots, int64_t cols, const T* __restrict__ q_scale,
                     const T* __restrict__ r_scale, const T* __restrict__ q_sq, const T* __restrict__ r_sq,
                     const int64_t* __restrict__ q_lab, const int64_t* __restrict__ r_lab, bool exclude_self,
                     int64_t self_offset, T pos_margin, T neg_margin, const T* __restrict__ coef_scales,
                     T* __restrict__ coef_pos, T* __restrict__ coef_neg, double* __restrict__ stats) {
  const int64_t i = blockIdx.x;
  const T qs = q_sq[i], qscale = q_scale[i];
  const int64_t label = q_lab[i];
  const int64_t self_col = exclude_self ? i + self_offset : -1;
  const T scale_pos = coef_scales ? coef_scales[0] : T(1), scale_neg = coef_scales ? coef_scales[1] : T(1);
  T acc[kStats] = {};
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    const T d = sqrt(batch::squared_distance(qs, r_sq[c], dots[i * cols + c] * qscale * r_scale[c]));
    const bool same = r_lab[c] == label;
    const bool pos = same && c != self_col, neg = !same;
    T ap = T(0), an = T(0);
    const T cp = pos ? batch::contrastive_pos(d, pos_margin, ap) : T(0);
    const T cn = neg ? batch::contrastive_neg(d, neg_margin, an) : T(0);
    ap = pos ? ap : T(0);
    an = neg ? an : T(0);
    acc[0] += cp > T(0) ? cp : T(0);
    acc[1] += cp > T(0) ? T(1) : T(0);
    acc[2] += cn > T(0) ? cn : T(0);
    acc[3] += cn > T(0) ? T(1) : T(0);
    acc[4] += cp + cn;
    acc[5] += ap;
    acc[6] += an;
    if (coef_pos) {  // times the column's scale: the tile then multiplies the rows as given;
      // times the part's scale when given (the column sweep, where the reduction is known)
      coef_pos[i * cols + c] = ap * r_scale[c] * scale_pos;
      coef_neg[i * cols + c] = an * r_scale[c] * scale_neg;
    }
  }
  for (int k = 0; k < kStats; ++k) {
    const T total = block_sum(acc[k]);
    if (threadIdx.x == 0) stats[i * kStats + k] += double(total);
  }
}

// (value, column) candidates of the hard mining: NaN first, then the harder value, then the
// lower column. `larger` picks the positive rule (the largest), else the negative (the smallest).
template <typename T>
__device__ __forceinline__ bool harder(T v, int64_t c, T w, int64_t e, bool larger) {
  const bool v_nan = v != v, w_nan = w != w;
  if (v_nan || w_nan) return v_nan && (!w_nan || c < e);
  if (v != w) return larger ? v > w : v < w;
  return c < e;
}

template <typename T>
__device__ __forceinline__ void block_hardest(T& v, int64_t& c, bool larger) {
  __shared__ T values[32];
  __shared__ int64_t columns[32];
  for (int offset = 16; offset > 0; offset >>= 1) {
    const T w = __shfl_down_sync(0xffffffffu, v, offset);
    const int64_t e = __shfl_down_sync(0xffffffffu, c, offset);
    if (harder(w, e, v, c, larger)) { v = w; c = e; }
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) { values[warp] = v; columns[warp] = c; }
  __syncthreads();
  if (warp == 0) {
    const bool has = lane < int(blockDim.x >> 5);
    v = has ? values[lane] : (larger ? -std::numeric_limits<T>::infinity() : std::numeric_limits<T>::infinity());
    c = has ? columns[lane] : std::numeric_limits<int64_t>::max();
    for (int offset = 16; offset > 0; offset >>= 1) {
      const T w = __shfl_down_sync(0xffffffffu, v, offset);
      const int64_t e = __shfl_down_sync(0xffffffffu, c, offset);
      if (harder(w, e, v, c, larger)) { v = w; c = e; }
    }
  }
  __syncthreads();
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
hard_mining_epilogue(const T* __restrict__ dots, int64_t cols, int64_t col0, const T* __restrict__ q_scale,
                     const T* __restrict__ r_scale, const T* __restrict__ q_sq, const T* __restrict__ r_sq, const int64_t* __restrict__ q_lab, const int64_t* __restrict__ r_lab,
                     int64_t self_offset, T* __restrict__ pos_d, int64_t* __restrict__ pos_j, T* __restrict__ neg_d,
                     int64_t* __restrict__ neg_j) {
  const int64_t i = blockIdx.x;
  const T qs = q_sq[i], qscale = q_scale[i];
  const int64_t label = q_lab[i];
  const T inf = std::numeric_limits<T>::infinity();
  T best_p = -inf, best_n = inf;
  int64_t at_p = std::numeric_limits<int64_t>::max(), at_n = at_p;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    const T d = sqrt(batch::squared_distance(qs, r_sq[c], dots[i * cols + c] * qscale * r_scale[c]));
    const bool same = r_lab[c] == label;
    if (same && c != i + self_offset && harder(d, c, best_p, at_p, true)) { best_p = d; at_p = c; }
    if (!same && harder(d, c, best_n, at_n, false)) { best_n = d; at_n = c; }
  }
  block_hardest(best_p, at_p, true);
  block_hardest(best_n, at_n, false);
  if (threadIdx.x == 0) {  // a tile replaces the running choice only when strictly harder
    if (at_p != std::numeric_limits<int64_t>::max() && pos_d[i] == pos_d[i] &&
        (best_p != best_p || best_p > pos_d[i])) {
      pos_d[i] = best_p;
      pos_j[i] = col0 + at_p;
    }
    if (at_n != std::numeric_limits<int64_t>::max() && neg_d[i] == neg_d[i] &&
        (best_n != best_n || best_n < neg_d[i])) {
      neg_d[i] = best_n;
      neg_j[i] = col0 + at_n;
    }
  }
}

// Per anchor: batch_pair.h's hard_triplet cost and its derivative, 0 for an anchor without a
// positive or a negative; kept[i] whether it has both.
template <typename T>
__global__ void __launch_bounds__(kThreads)
anchor_costs(const T* __restrict__ pos_d, const T* __restrict__ neg_d, const int64_t* __restrict__ pos_j,
             const int64_t* __restrict__ neg_j, int64_t n, T margin, bool soft, T* __restrict__ cost,
             T* __restrict__ dcost, bool* __restrict__ kept) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const bool has = pos_j[i] >= 0 && neg_j[i] >= 0;
  T dc = T(0);
  const T c = has ? batch::hard_triplet(pos_d[i], neg_d[i], margin, soft, dc) : T(0);
  cost[i] = c;
  dcost[i] = has ? dc : T(0);
  kept[i] = has;
}

// Per anchor, from its gradient weight w: w / d to its hardest positive and to its hardest negative.
template <typename T>
__global__ void __launch_bounds__(kThreads)
anchor_coefficients(const T* __restrict__ weight, const T* __restrict__ pos_d, const T* __restrict__ neg_d,
                    int64_t n, T* __restrict__ cp, T* __restrict__ cn) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  cp[i] = batch::over_distance(weight[i], pos_d[i]);
  cn[i] = batch::over_distance(weight[i], neg_d[i]);
}

// out[t] += sum of src[order[k]] for k in [offsets[t], offsets[t + 1]), in that order.
template <typename T>
__global__ void __launch_bounds__(kThreads)
segment_sum(const T* __restrict__ src, const int64_t* __restrict__ order, const int64_t* __restrict__ offsets,
            T* __restrict__ out, int64_t d) {
  const int64_t t = blockIdx.x;
  const int64_t k = int64_t(blockIdx.y) * blockDim.x + threadIdx.x;
  if (k >= d) return;
  T acc = out[t * d + k];
  for (int64_t s = offsets[t]; s < offsets[t + 1]; ++s) acc += src[order[s] * d + k];
  out[t * d + k] = acc;
}

template <typename T>
void add_segment_sum(at::Tensor& out, const at::Tensor& src, const at::Tensor& target, cudaStream_t stream) {
  const int64_t n = out.size(0), d = out.size(1);
  if (n == 0 || d == 0) return;  // nothing to add to (and a grid of 0 blocks is no launch)
  const at::Tensor order = std::get<1>(at::sort(target, /*stable=*/true, /*dim=*/0, /*descending=*/false));
  at::Tensor offsets = at::zeros({n + 1}, target.options());
  offsets.narrow(0, 1, n).copy_(at::cumsum(at::bincount(target, {}, n), 0));
  const dim3 grid(unsigned(n), unsigned((d + kThreads - 1) / kThreads));
  segment_sum<T><<<grid, kThreads, 0, stream>>>(src.data_ptr<T>(), order.data_ptr<int64_t>(),
                                                 offsets.data_ptr<int64_t>(), out.data_ptr<T>(), d);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

constexpr double kNormEps = 1e-12;  // F.normalize's eps

// Per row: 1 / max(|x_i|, 1e-12) for unit rows (F.normalize), else 1; and the squared norm of
// the scaled row.
std::pair<at::Tensor, at::Tensor> row_scales(const at::Tensor& x, bool normalize) {
  const at::Tensor sq = x.square().sum(1);
  if (!normalize) return {at::ones_like(sq), sq};
  const at::Tensor scale = sq.sqrt().clamp_min(kNormEps).reciprocal();
  return {scale, sq * scale * scale};
}

// d L / d x from g = d L / d(x scale): F.normalize's backward where normalising.
at::Tensor unit_row_backward(const at::Tensor& g, const at::Tensor& x, const at::Tensor& scale, bool normalize) {
  if (!normalize) return g;
  const at::Tensor s = scale.unsqueeze(1);
  const at::Tensor u = x * s;
  const at::Tensor along = at::where(x.square().sum(1) > kNormEps * kNormEps, (u * g).sum(1),
                                     at::zeros_like(scale)).unsqueeze(1);
  return (g - u * along) * s;
}

template <typename T>
std::tuple<at::Tensor, at::Tensor, at::Tensor> contrastive(const at::Tensor& q, const at::Tensor& r, bool self,
                                                             const at::Tensor& q_lab, const at::Tensor& r_lab,
                                                             int64_t reduction, double pos_margin, double neg_margin,
                                                             bool normalize, bool need_q, bool need_r,
                                                             int64_t self_offset, at::Tensor& sums_out,
                                                             cudaStream_t stream) {
  const int64_t n = q.size(0), m = r.size(0), d = q.size(1);
  // the pairs (row i, column i + *dropped) are left out: the batch's own pairs (self), or a
  // reference set whose rows from self_offset on are the queries
  const std::optional<int64_t> dropped =
      self ? std::optional<int64_t>(0) : self_offset >= 0 ? std::optional<int64_t>(self_offset) : std::nullopt;
  const auto [q_scale, q_sq] = row_scales(q, normalize);
  const auto [r_scale, r_sq] = self ? std::pair{q_scale, q_sq} : row_scales(r, normalize);
  const bool coef = need_q || need_r;
  at::Tensor stats = at::zeros({n, kStats}, q.options().dtype(at::kDouble));
  at::Tensor acc_pos = need_q ? at::zeros({n, d}, q.options()) : at::Tensor();
  at::Tensor acc_neg = need_q ? at::zeros({n, d}, q.options()) : at::Tensor();
  at::Tensor coefs = coef ? at::empty({2, std::min(n, kTile) * std::min(m, kTile)}, q.options()) : at::Tensor();
  auto epilogue = [&](const at::Tensor& rows_scale, const at::Tensor& cols_scale, const at::Tensor& rows_sq,
                      const at::Tensor& cols_sq, const at::Tensor& row_lab, const at::Tensor& col_lab,
                      std::optional<int64_t> drop,
                      int64_t i0, int64_t rows, int64_t j0, int64_t cols, const at::Tensor& dots, double* row_stats,
                      const T* coef_scales) {
    contrastive_epilogue<T><<<unsigned(rows), kThreads, 0, stream>>>(
        dots.data_ptr<T>(), cols, rows_scale.data_ptr<T>() + i0, cols_scale.data_ptr<T>() + j0,
        rows_sq.data_ptr<T>() + i0, cols_sq.data_ptr<T>() + j0,
        row_lab.data_ptr<int64_t>() + i0, col_lab.data_ptr<int64_t>() + j0, drop.has_value(),
        i0 + drop.value_or(0) - j0, T(pos_margin),
        T(neg_margin), coef_scales, coef ? coefs[0].data_ptr<T>() : nullptr, coef ? coefs[1].data_ptr<T>() : nullptr,
        row_stats);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  };
  auto coef_view = [&](int part, int64_t rows, int64_t cols) {
    return coefs[part].narrow(0, 0, rows * cols).view({rows, cols});
  };
  for_each_tile(q, r, [&](int64_t i0, int64_t rows, int64_t j0, int64_t cols, const at::Tensor& dots) {
    epilogue(q_scale, r_scale, q_sq, r_sq, q_lab, r_lab, dropped, i0, rows, j0, cols, dots,
             stats.data_ptr<double>() + i0 * kStats, nullptr);
    if (need_q) {
      const at::Tensor rj = r.narrow(0, j0, cols);
      acc_pos.narrow(0, i0, rows).addmm_(coef_view(0, rows, cols), rj);
      acc_neg.narrow(0, i0, rows).addmm_(coef_view(1, rows, cols), rj);
    }
  });
  const at::Tensor sums = stats.sum(0);
  sums_out = sums.narrow(0, 0, 5);
  // the pairs dropped: one per query row whose own row lies in the reference set
  const int64_t own = dropped ? std::max<int64_t>(0, std::min(n, m - *dropped)) : 0;
  const double pairs = double(n) * double(m) - double(own);
  at::Tensor value, scales;
  if (reduction == int64_t(batch::BatchReduction::kMean)) {
    value = sums[4] / std::max(pairs, 1.0);
    scales = at::full({2}, pairs > 0 ? 1.0 / pairs : 0.0, stats.options());
  } else if (reduction == int64_t(batch::BatchReduction::kSum)) {
    value = sums[4];
    scales = at::ones({2}, stats.options());
  } else {
    const at::Tensor counts = at::stack({sums[1], sums[3]});
    scales = at::where(counts > 0, counts.clamp_min(1.0).reciprocal(), at::zeros_like(counts));
    value = sums[0] * scales[0] + sums[2] * scales[1];
  }
  at::Tensor grad_q, grad_r;
  const at::Tensor sc = scales.to(q.scalar_type());
  if (need_q) {
    const at::Tensor rs_pos = stats.select(1, 5).to(q.scalar_type()).unsqueeze(1);
    const at::Tensor rs_neg = stats.select(1, 6).to(q.scalar_type()).unsqueeze(1);
    const at::Tensor u = q * q_scale.unsqueeze(1);
    grad_q = sc[0] * (u * rs_pos - acc_pos) + sc[1] * (u * rs_neg - acc_neg);
    if (self) grad_q = grad_q * 2.0;
    grad_q = unit_row_backward(grad_q, q, q_scale, normalize);
  }
  if (need_r) {
    at::Tensor col_stats = at::zeros({m, kStats}, stats.options());
    at::Tensor acc = at::zeros({m, d}, r.options());
    for_each_tile(r, q, [&](int64_t j0, int64_t rows, int64_t i0, int64_t cols, const at::Tensor& dots) {
      // (row j of r, column i of q) is dropped where j = i + self_offset
      const std::optional<int64_t> back = dropped ? std::optional<int64_t>(-*dropped) : std::nullopt;
      epilogue(r_scale, q_scale, r_sq, q_sq, r_lab, q_lab, back, j0, rows, i0, cols, dots,
               col_stats.data_ptr<double>() + j0 * kStats, sc.data_ptr<T>());  // the scales stay on the device
      const at::Tensor qi = q.narrow(0, i0, cols);
      at::Tensor out = acc.narrow(0, j0, rows);
      out.addmm_(coef_view(0, rows, cols), qi);
      out.addmm_(coef_view(1, rows, cols), qi);
    });
    const at::Tensor total = (sc[0] * col_stats.select(1, 5).to(r.scalar_type()) +
                              sc[1] * col_stats.select(1, 6).to(r.scalar_type())).unsqueeze(1);
    grad_r = unit_row_backward(r * r_scale.unsqueeze(1) * total - acc, r, r_scale, normalize);
  }
  return {value, grad_q, grad_r};
}

// The anchors are the rows of x, the candidates the rows of y (x itself, or a reference set that
// holds the anchors from row self_offset on); returns the gradients of x and of y (y's undefined
// when y is x: the one gradient holds both parts).
template <typename T>
std::tuple<at::Tensor, at::Tensor, at::Tensor> hard_triplet(const at::Tensor& x, const at::Tensor& y, bool self,
                                                              const at::Tensor& lab, const at::Tensor& y_lab,
                                                              int64_t self_offset, int64_t reduction, double margin,
                                                              bool soft, bool normalize, bool need,
                                                              at::Tensor& sums_out, cudaStream_t stream) {
  const int64_t n = x.size(0);
  const auto [scale, sq] = row_scales(x, normalize);
  const auto [y_scale, y_sq] = self ? std::pair{scale, sq} : row_scales(y, normalize);
  const int64_t own = self ? 0 : self_offset;  // anchor i's own row in y
  const double inf = std::numeric_limits<double>::infinity();
  at::Tensor pos_d = at::full({n}, -inf, x.options()), neg_d = at::full({n}, inf, x.options());
  at::Tensor pos_j = at::full({n}, -1, lab.options()), neg_j = at::full({n}, -1, lab.options());
  for_each_tile(x, y, [&](int64_t i0, int64_t rows, int64_t j0, int64_t cols, const at::Tensor& dots) {
    hard_mining_epilogue<T><<<unsigned(rows), kThreads, 0, stream>>>(
        dots.data_ptr<T>(), cols, j0, scale.data_ptr<T>() + i0, y_scale.data_ptr<T>() + j0, sq.data_ptr<T>() + i0,
        y_sq.data_ptr<T>() + j0, lab.data_ptr<int64_t>() + i0,
        y_lab.data_ptr<int64_t>() + j0, i0 + own - j0, pos_d.data_ptr<T>() + i0, pos_j.data_ptr<int64_t>() + i0,
        neg_d.data_ptr<T>() + i0, neg_j.data_ptr<int64_t>() + i0);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  const unsigned anchor_blocks = unsigned((n + kThreads - 1) / kThreads);
  at::Tensor cost = at::empty_like(pos_d), dcost = at::empty_like(pos_d);
  at::Tensor kept = at::empty({n}, x.options().dtype(at::kBool));
  if (n > 0) {
    anchor_costs<T><<<anchor_blocks, kThreads, 0, stream>>>(
        pos_d.data_ptr<T>(), neg_d.data_ptr<T>(), pos_j.data_ptr<int64_t>(), neg_j.data_ptr<int64_t>(), n, T(margin),
        soft, cost.data_ptr<T>(), dcost.data_ptr<T>(), kept.data_ptr<bool>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  const at::Tensor cost64 = cost.to(at::kDouble);
  {
    const at::Tensor positive = cost > 0;
    const at::Tensor total = cost64.sum();
    sums_out = at::stack({total, kept.sum().to(at::kDouble), at::where(positive, cost64, at::zeros_like(cost64)).sum(),
                          positive.sum().to(at::kDouble), total});
  }
  at::Tensor value, weight;
  if (reduction == int64_t(batch::BatchReduction::kAvgNonZero)) {
    const at::Tensor nonzero = cost > 0;
    const at::Tensor count = nonzero.sum().to(at::kDouble).clamp_min(1.0);
    value = at::where(nonzero, cost64, at::zeros_like(cost64)).sum() / count;
    weight = at::where(nonzero, dcost / count.to(x.scalar_type()), at::zeros_like(dcost));
  } else if (reduction == int64_t(batch::BatchReduction::kMean)) {
    const at::Tensor count = kept.sum().to(at::kDouble).clamp_min(1.0);
    value = cost64.sum() / count;
    weight = dcost / count.to(x.scalar_type());
  } else {
    value = cost64.sum();
    weight = dcost;
  }
  if (!need) return {value, at::Tensor(), at::Tensor()};
  const at::Tensor p = pos_j.clamp_min(0), q = neg_j.clamp_min(0);
  at::Tensor cp = at::empty_like(pos_d), cn = at::empty_like(pos_d);
  if (n > 0) {
    const at::Tensor w = weight.contiguous();
    anchor_coefficients<T><<<anchor_blocks, kThreads, 0, stream>>>(w.data_ptr<T>(), pos_d.data_ptr<T>(),
                                                                   neg_d.data_ptr<T>(), n, cp.data_ptr<T>(),
                                                                   cn.data_ptr<T>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  cp = cp.unsqueeze(1);
  cn = cn.unsqueeze(1);
  const at::Tensor u = x * scale.unsqueeze(1);  // the rows the distances are of
  const at::Tensor uy = self ? u : y * y_scale.unsqueeze(1);
  const at::Tensor to_p = u - uy.index_select(0, p), to_n = u - uy.index_select(0, q);
  at::Tensor grad = cp * to_p - cn * to_n;
  at::Tensor grad_y = self ? grad : at::zeros_like(y);
  add_segment_sum<T>(grad_y, (-cp * to_p).contiguous(), p, stream);
  add_segment_sum<T>(grad_y, (cn * to_n).contiguous(), q, stream);
  if (self) return {value, unit_row_backward(grad, x, scale, normalize), at::Tensor()};
  return {value, unit_row_backward(grad, x, scale, normalize), unit_row_backward(grad_y, y, y_scale, normalize)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> batch_pair_loss_cuda(
    const at::Tensor& q, const std::optional<at::Tensor>& r, const at::Tensor& q_labels,
    const std::optional<at::Tensor>& r_labels, int64_t loss, int64_t reduction, double margin_a, double margin_b,
    bool normalize, bool need_grad_q, bool need_grad_r, int64_t self_offset) {
  check_batch_pair_args(q, r, q_labels, r_labels, loss, reduction, self_offset);
  const c10::cuda::CUDAGuard guard(q.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(q.device().index());
  const bool self = !r.has_value();
  need_grad_r = need_grad_r && !self;
  // The tiles are float (double for double inputs): half and bfloat16 rows are converted once.
  const at::ScalarType acc = q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const at::Tensor qa = q.detach().to(acc).contiguous();
  const at::Tensor ra = self ? qa : r->detach().to(acc).contiguous();
  const at::Tensor rl = self ? q_labels : *r_labels;
  const bool soft = loss == int64_t(batch::BatchLoss::kHardSoftTriplet);
  at::Tensor sums;
  auto run = [&](auto zero) {  // zero: a value of the tiles' type
    using T = decltype(zero);
    return loss == int64_t(batch::BatchLoss::kContrastive)
               ? contrastive<T>(qa, ra, self, q_labels, rl, reduction, margin_a, margin_b, normalize, need_grad_q,
                                need_grad_r, self_offset, sums, stream)
               : hard_triplet<T>(qa, ra, self, q_labels, rl, self_offset, reduction, margin_a, soft, normalize,
                                 need_grad_q || need_grad_r, sums, stream);
  };
  const std::tuple<at::Tensor, at::Tensor, at::Tensor> result = acc == at::kDouble ? run(0.0) : run(0.0f);
  const auto opts = q.options();
  const at::Tensor value = std::get<0>(result).to(q.scalar_type(), /*non_blocking=*/false, /*copy=*/true);  // not a view
  auto out = [&](const at::Tensor& g, bool need) { return need ? g.to(q.scalar_type()) : at::empty({0}, opts); };
  return {value, out(std::get<1>(result), need_grad_q), out(std::get<2>(result), need_grad_r), sums.contiguous()};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastloss, CUDA, m) { m.impl("batch_pair_loss", &batch_pair_loss_cuda); }

}  // namespace fastloss::cuda
