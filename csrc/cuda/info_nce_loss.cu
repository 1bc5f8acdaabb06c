// CUDA implementation of fastloss::info_nce_stats and fastloss::info_nce_grad (the all-pairs
// softmax losses; formulas/info_nce.h), on the current stream under a device guard. The n x m
// logits l_ij = (a_i . b_j) / temperature are walked in tiles of kTile x kTile, never held:
// each tile's inner products by cuBLAS (at::mm_out, which follows torch's TF32 setting), then a
// hand-written epilogue kernel with one block per tile row, reducing in a fixed order and
// updating per-row state in launch order (row tiles outer, column tiles inner, so a row's tiles
// arrive in column order). The temperature stays on the device: scale = 1 / temperature is a 0-d
// tensor in the accumulation type T that the kernels read through a pointer (no .item(), no host
// sync); the matrix products see the raw rows.
//   stats: per tile row the epilogue takes the max of its logits, then sum exp(l - max), and
//     merges that (max, sum) into the row's online log-sum-exp state (info_nce::merge); a last
//     small kernel turns the states into lse_of(m, s). The positive's logit is picked out of the
//     tile that holds it. Column statistics: a second epilogue over the same tile, one thread per
//     column (the same bits of every logit in both directions).
//   grad: the epilogue recomputes each logit, overwrites the tile in place with its coefficient
//     (info_nce::coefficient, its terms chosen at compile time) and adds sum_j c_ij (a_i . b_j) to
//     dot_grad_i; at::addmm then adds C times the tile's rows of b into the (n, D) accumulator
//     and, when b's gradient is asked, C^T times the tile's rows of a into b's, both scaled by
//     1 / temperature at the end.
// Half and bfloat16 rows are converted to float once. No atomics. Memory: one tile buffer of
// kTile^2 values of T (64 MiB in float, 128 MiB in double; shared by the logits and, in place,
// the coefficients), two values of T per row (and per column with col_stats), the float copies
// of half/bfloat16 a and b, and for the gradient the (n, D) accumulator in T.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <limits>
#include <optional>
#include <tuple>

#include "../formulas/info_nce.h"
#include "../info_nce_checks.h"
#include "common.cuh"
#include "tiles.cuh"

namespace fastloss::cuda {
namespace {


// The largest value over the block, valid in every thread; NaN is never the max (as in
// info_nce::merge: comparisons with NaN are false). blockDim.x a multiple of 32.
template <typename T>
__device__ __forceinline__ T block_max_all(T v) {
  __shared__ T warp_max[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int offset = 16; offset > 0; offset >>= 1) {
    const T w = __shfl_xor_sync(0xffffffffu, v, offset);
    v = select(w > v, w, v);
  }
  if (lane == 0) warp_max[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < int(blockDim.x >> 5) ? warp_max[lane] : -std::numeric_limits<T>::infinity();
    for (int offset = 16; offset > 0; offset >>= 1) {
      const T w = __shfl_xor_sync(0xffffffffu, v, offset);
      v = select(w > v, w, v);
    }
    if (lane == 0) warp_max[0] = v;
  }
  __syncthreads();
  v = warp_max[0];
  __syncthreads();  // warp_max may be reused by a later call
  return v;
}

// The positive's column of global row gi: (gi + shift) mod period with shift = pos_offset mod
// period (so no overflow), or -1 when that column is not < m.
__device__ __forceinline__ int64_t positive_col(int64_t gi, int64_t shift, int64_t period, int64_t m) {
  const int64_t p = (gi + shift) % period;
  return p < m ? p : -1;
}

// One block per tile row: the tile's (max, sum exp(l - max)) over its kept logits, merged into
// the row's state (row_m, row_s: offset to the tile's first row). pos_logit (offset too, or
// null for the column sweep) gets the positive's logit when this tile holds it. Self pairs
// (global column == global row + self_offset) are skipped when self_offset >= 0.
template <typename T>
__global__ void __launch_bounds__(kThreads)
lse_epilogue(const T* __restrict__ dots, int64_t cols, int64_t i0, int64_t j0, const T* __restrict__ scale,
             int64_t self_offset, int64_t shift, int64_t period, int64_t m, T* __restrict__ row_m, T* __restrict__ row_s,
             T* __restrict__ pos_logit) {
  const int64_t i = blockIdx.x;
  const T sc = *scale;
  const T* row = dots + i * cols;
  // the local column of the self pair; out of range when not in the tile
  const int64_t self_col = self_offset >= 0 ? i0 + i + self_offset - j0 : -1;
  T top = -std::numeric_limits<T>::infinity();
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    const T l = row[c] * sc;
    top = c != self_col ? select(l > top, l, top) : top;
  }
  top = block_max_all(top);
  const T tile_shift = info_nce::shift_of(top);
  T sum = T(0);
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    if (c != self_col) sum += info_nce::exp_below(row[c] * sc, tile_shift);
  }
  sum = block_sum(sum);
  if (threadIdx.x == 0) {
    T state_m = row_m[i], state_s = row_s[i];
    info_nce::merge(state_m, state_s, top, sum);
    row_m[i] = state_m;
    row_s[i] = state_s;
    if (pos_logit) {
      const int64_t p = positive_col(i0 + i, shift, period, m);
      const int64_t pc = p - j0;
      // left NaN where it is a dropped pair (as where it has none)
      if (p >= 0 && pc >= 0 && pc < cols && pc != self_col) pos_logit[i] = row[pc] * sc;
    }
  }
}

// One thread per tile column: the column's (max, sum exp(l - max)) over the tile's rows, merged
// into the column's state (col_m, col_s: offset to the tile's first column). Reads the tile the
// row epilogue read, so both directions see the same bits of every logit: where one logit
// dominates, exp(l - lse) is then exactly 1 (a second sweep over b a^T would sum each product in
// another order, 1e-2 apart at float32 logits of 1e5). Adjacent threads read adjacent columns.
template <typename T>
__global__ void __launch_bounds__(kThreads)
col_lse_epilogue(const T* __restrict__ dots, int64_t rows, int64_t cols, int64_t i0, int64_t j0,
                 const T* __restrict__ scale, int64_t self_offset, T* __restrict__ col_m, T* __restrict__ col_s) {
  const int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= cols) return;
  const T sc = *scale;
  // the local row whose self pair this column is (out of range when not in the tile)
  const int64_t self_row = self_offset >= 0 ? j0 + c - self_offset - i0 : -1;
  T top = -std::numeric_limits<T>::infinity();
  for (int64_t i = 0; i < rows; ++i) {
    const T l = dots[i * cols + c] * sc;
    top = i != self_row ? select(l > top, l, top) : top;
  }
  const T tile_shift = info_nce::shift_of(top);
  T sum = T(0);
  for (int64_t i = 0; i < rows; ++i) {
    if (i != self_row) sum += info_nce::exp_below(dots[i * cols + c] * sc, tile_shift);
  }
  T state_m = col_m[c], state_s = col_s[c];
  info_nce::merge(state_m, state_s, top, sum);
  col_m[c] = state_m;
  col_s[c] = state_s;
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
lse_finish(const T* __restrict__ state_m, const T* __restrict__ state_s, int64_t count, T* __restrict__ lse) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < count) lse[i] = info_nce::lse_of(state_m[i], state_s[i]);
}

// One block per tile row: overwrites the row's inner products with its coefficients (0 for an
// excluded self pair) and adds sum_c c_ic * dot_ic to dot_grad (offset to the tile's first row).
// row_lse/row_weight are offset to the tile's first row, col_lse/col_weight to its first column;
// only the ones of the terms present (kRow, kCol) are read. In place: each element is read and
// then written by the same thread, so `tile` is not __restrict__ against anything it aliases.
template <typename T, bool kRow, bool kCol>
__global__ void __launch_bounds__(kThreads)
coefficient_epilogue(T* tile, int64_t cols, int64_t i0, int64_t j0, const T* __restrict__ scale,
                     int64_t self_offset, int64_t shift, int64_t period, int64_t m, const T* __restrict__ row_lse,
                     const T* __restrict__ row_weight, const T* __restrict__ col_lse,
                     const T* __restrict__ col_weight, T* __restrict__ dot_grad) {
  const int64_t i = blockIdx.x;
  const T sc = *scale;
  T* row = tile + i * cols;
  const int64_t self_col = self_offset >= 0 ? i0 + i + self_offset - j0 : -1;
  const int64_t p = positive_col(i0 + i, shift, period, m);
  const int64_t pos_col = p >= 0 ? p - j0 : -1;  // may be outside [0, cols): then no column matches
  const T rl = kRow ? row_lse[i] : T(0), rw = kRow ? row_weight[i] : T(0);
  T acc = T(0);
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    const T dot = row[c];
    T coef = T(0);
    if (c != self_col) {
      coef = info_nce::coefficient<T, kRow, kCol>(dot * sc, c == pos_col, rl, rw, kCol ? col_lse[c] : T(0),
                                                  kCol ? col_weight[c] : T(0));
      acc += coef * dot;
    }
    row[c] = coef;
  }
  acc = block_sum(acc);
  if (threadIdx.x == 0) dot_grad[i] += acc;
}

// The log-sum-exp of every row of x's logits against y (x (n, D), y (m, D) in T), with
// pos_logit each row's positive logit (NaN where it has none), and with col_lse (defined: m
// values) every column's over the rows, from the same tiles. shift = pos_offset mod period.
template <typename T>
at::Tensor lse_sweep(const at::Tensor& x, const at::Tensor& y, const at::Tensor& scale, int64_t self_offset,
                     int64_t shift, int64_t period, at::Tensor* pos_logit, at::Tensor* col_lse, cudaStream_t stream) {
  const int64_t n = x.size(0), m = y.size(0);
  const double inf = std::numeric_limits<double>::infinity();
  at::Tensor state_m = at::full({n}, -inf, x.options()), state_s = at::zeros({n}, x.options());
  at::Tensor col_m, col_s;
  if (col_lse) {
    col_m = at::full({m}, -inf, x.options());
    col_s = at::zeros({m}, x.options());
  }
  if (pos_logit) *pos_logit = at::full({n}, std::numeric_limits<double>::quiet_NaN(), x.options());
  for_each_tile(x, y, [&](int64_t i0, int64_t rows, int64_t j0, int64_t cols, const at::Tensor& dots) {
    lse_epilogue<T><<<unsigned(rows), kThreads, 0, stream>>>(
        dots.data_ptr<T>(), cols, i0, j0, scale.data_ptr<T>(), self_offset, shift, period, m,
        state_m.data_ptr<T>() + i0, state_s.data_ptr<T>() + i0, pos_logit ? pos_logit->data_ptr<T>() + i0 : nullptr);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if (col_lse) {
      col_lse_epilogue<T><<<unsigned((cols + kThreads - 1) / kThreads), kThreads, 0, stream>>>(
          dots.data_ptr<T>(), rows, cols, i0, j0, scale.data_ptr<T>(), self_offset, col_m.data_ptr<T>() + j0,
          col_s.data_ptr<T>() + j0);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  auto finish = [&](const at::Tensor& sm, const at::Tensor& ss, int64_t count) {
    at::Tensor out = at::empty({count}, x.options());
    if (count > 0) {  // also with no tiles: lse_of(-inf, 0) = -inf
      lse_finish<T><<<unsigned((count + kThreads - 1) / kThreads), kThreads, 0, stream>>>(
          sm.data_ptr<T>(), ss.data_ptr<T>(), count, out.data_ptr<T>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    return out;
  };
  if (col_lse) *col_lse = finish(col_m, col_s, m);
  return finish(state_m, state_s, n);
}

template <typename T, bool kRow, bool kCol>
void grad_sweep(const at::Tensor& a, const at::Tensor& b, const at::Tensor& scale, const T* row_lse,
                const T* row_weight, const T* col_lse, const T* col_weight, int64_t self_offset, int64_t shift,
                int64_t period,
                at::Tensor& acc, at::Tensor& dot_grad, at::Tensor& acc_b, cudaStream_t stream) {
  const int64_t n = a.size(0), m = b.size(0);
  for_each_tile(a, b, [&](int64_t i0, int64_t rows, int64_t j0, int64_t cols, const at::Tensor& dots) {
    coefficient_epilogue<T, kRow, kCol><<<unsigned(rows), kThreads, 0, stream>>>(
        dots.data_ptr<T>(), cols, i0, j0, scale.data_ptr<T>(), self_offset, shift, period, m,
        kRow ? row_lse + i0 : nullptr, kRow ? row_weight + i0 : nullptr, kCol ? col_lse + j0 : nullptr,
        kCol ? col_weight + j0 : nullptr, dot_grad.data_ptr<T>() + i0);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    acc.narrow(0, i0, rows).addmm_(dots, b.narrow(0, j0, cols));  // dots now holds the coefficients
    // b's gradient from the same tile: the tiles run one after another on the stream, so its
    // rows never have two writers at once (and their parts arrive in row-tile order).
    if (acc_b.defined()) acc_b.narrow(0, j0, cols).addmm_(dots.t(), a.narrow(0, i0, rows));
  });
}

// The tiles are float (double for double inputs): half and bfloat16 rows are converted once,
// and b reuses a's copy when it is a. scale = 1 / temperature on the device, in T.
struct Prepared {
  at::ScalarType acc;
  at::Tensor a, b, scale;
  int64_t shift;
};

Prepared prepare(const at::Tensor& a, const at::Tensor& b, const at::Tensor& temperature, int64_t pos_offset,
                 int64_t pos_period) {
  Prepared p;
  p.acc = a.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  p.a = a.detach().to(p.acc).contiguous();
  p.b = b.is_same(a) ? p.a : b.detach().to(p.acc).contiguous();
  p.scale = temperature.detach().to(p.acc).reciprocal();
  p.shift = pos_offset % pos_period;
  return p;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> info_nce_stats_cuda(const at::Tensor& a, const at::Tensor& b,
                                                                    const at::Tensor& temperature, int64_t pos_offset,
                                                                    int64_t pos_period, int64_t self_offset,
                                                                    bool col_stats) {
  check_info_nce_args(a, b, temperature, pos_offset, pos_period, self_offset);
  const c10::cuda::CUDAGuard guard(a.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(a.device().index());
  const Prepared p = prepare(a, b, temperature, pos_offset, pos_period);
  auto run = [&](auto zero) {  // zero: a value of the tiles' type
    using T = decltype(zero);
    at::Tensor pos_logit, col_lse = at::empty({0}, p.a.options());
    at::Tensor lse = lse_sweep<T>(p.a, p.b, p.scale, self_offset, p.shift, pos_period, &pos_logit,
                                  col_stats ? &col_lse : nullptr, stream);
    return std::tuple<at::Tensor, at::Tensor, at::Tensor>{lse, pos_logit, col_lse};
  };
  return p.acc == at::kDouble ? run(0.0) : run(0.0f);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> info_nce_grad_cuda(
    const at::Tensor& a, const at::Tensor& b, const at::Tensor& temperature, const std::optional<at::Tensor>& row_lse,
    const std::optional<at::Tensor>& row_weight, const std::optional<at::Tensor>& col_lse,
    const std::optional<at::Tensor>& col_weight, int64_t pos_offset, int64_t pos_period, int64_t self_offset,
    bool need_grad_b) {
  check_info_nce_grad_args(a, b, temperature, row_lse, row_weight, col_lse, col_weight, pos_offset, pos_period,
                           self_offset);
  const c10::cuda::CUDAGuard guard(a.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(a.device().index());
  const bool has_row = row_lse.has_value(), has_col = col_lse.has_value();
  const Prepared p = prepare(a, b, temperature, pos_offset, pos_period);
  at::Tensor dot_grad = at::zeros({a.size(0)}, p.a.options());
  at::Tensor empty_b = at::empty({0}, b.options());
  if (!has_row && !has_col) {  // every coefficient is 0
    return {at::zeros_like(a), need_grad_b ? at::zeros_like(b) : empty_b, dot_grad};
  }
  at::Tensor acc = at::zeros({a.size(0), a.size(1)}, p.a.options());
  at::Tensor acc_b = need_grad_b ? at::zeros({b.size(0), b.size(1)}, p.a.options()) : at::Tensor();
  auto run = [&](auto zero) {
    using T = decltype(zero);
    const T* rl = has_row ? row_lse->data_ptr<T>() : nullptr;
    const T* rw = has_row ? row_weight->data_ptr<T>() : nullptr;
    const T* cl = has_col ? col_lse->data_ptr<T>() : nullptr;
    const T* cw = has_col ? col_weight->data_ptr<T>() : nullptr;
    if (has_row && has_col) {
      grad_sweep<T, true, true>(p.a, p.b, p.scale, rl, rw, cl, cw, self_offset, p.shift, pos_period,
                                acc, dot_grad, acc_b, stream);
    } else if (has_row) {
      grad_sweep<T, true, false>(p.a, p.b, p.scale, rl, rw, cl, cw, self_offset, p.shift, pos_period,
                                 acc, dot_grad, acc_b, stream);
    } else {
      grad_sweep<T, false, true>(p.a, p.b, p.scale, rl, rw, cl, cw, self_offset, p.shift, pos_period,
                                 acc, dot_grad, acc_b, stream);
    }
  };
  if (p.acc == at::kDouble) run(0.0); else run(0.0f);
  acc.mul_(p.scale);  // / temperature, as the logits: times the same device-side 1 / temperature
  if (!need_grad_b) return {acc.to(a.scalar_type()), empty_b, dot_grad};
  acc_b.mul_(p.scale);
  return {acc.to(a.scalar_type()), acc_b.to(b.scalar_type()), dot_grad};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastloss, CUDA, m) {
  m.impl("info_nce_stats", &info_nce_stats_cuda);
  m.impl("info_nce_grad", &info_nce_grad_cuda);
}

}  // namespace fastloss::cuda
