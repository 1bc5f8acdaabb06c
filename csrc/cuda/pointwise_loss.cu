// CUDA implementation of fastloss::pointwise_loss and fastloss::scale_grad_.
// One pass: each thread walks the tensor grid-stride in 16-byte vectors (scalar tail), applies
// the shared formula in float (double for double), writes the gradients, and sums its losses;
// blocks reduce by warp shuffles into one partial each; a one-block kernel adds the partials in
// a fixed order. No atomics, a fixed grid: the same bits on every run.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <type_traits>

#include "../formulas/pointwise.h"
#include "../pointwise_checks.h"
#include "common.cuh"

namespace fastloss::cuda {
namespace {

// An optional per-element operand: ptr[i] (period 0) or ptr[i % period] (a repeated block).
template <typename T>
struct Operand {
  const T* ptr;
  int64_t period;

  // Loads elements i .. i+N-1 as Acc (1 when absent).
  template <typename Acc, int N>
  __device__ __forceinline__ void load(int64_t i, Acc (&out)[N]) const {
    if (ptr == nullptr) {
#pragma unroll
      for (int j = 0; j < N; ++j) out[j] = Acc(1);
    } else if (period == 0) {
      if constexpr (N > 1) {
        const Pack<T, N> v = *reinterpret_cast<const Pack<T, N>*>(ptr + i);
#pragma unroll
        for (int j = 0; j < N; ++j) out[j] = Acc(v.v[j]);
      } else {
        out[0] = Acc(ptr[i]);
      }
    } else {
      int64_t k = i % period;
#pragma unroll
      for (int j = 0; j < N; ++j) {
        out[j] = Acc(ptr[k]);
        k = k + 1 == period ? 0 : k + 1;
      }
    }
  }
};

struct PointwiseParams {
  int64_t n;
  double param;
  double grad_scale;            // multiplies the gradients
  const void* grad_scale_ptr;   // if set, an Acc on the device that multiplies them too
  bool write_loss;              // reduction "none"
};

template <typename T, typename Formula, int VEC>
__global__ void __launch_bounds__(kThreads)
pointwise_loss_kernel(const T* __restrict__ input, const T* __restrict__ target, Operand<T> weight,
                      Operand<T> pos_weight, T* __restrict__ loss_out, T* __restrict__ grad_input,
                      T* __restrict__ grad_target, typename AccOf<T>::type* __restrict__ partials,
                      PointwiseParams p) {
  using Acc = typename AccOf<T>::type;
  const Acc param = Acc(p.param);
  Acc scale = Acc(p.grad_scale);
  if (p.grad_scale_ptr) scale *= *static_cast<const Acc*>(p.grad_scale_ptr);
  Acc sum = Acc(0);

  // Evaluates COUNT consecutive elements from i; x, t are already loaded.
  auto apply = [&](int64_t i, const T* x, const T* t, T* l, T* gx, T* gt, auto count_tag) {
    constexpr int kCount = decltype(count_tag)::value;
    Acc w[kCount], aux[kCount];
    weight.load(i, w);
    pos_weight.load(i, aux);
#pragma unroll
    for (int j = 0; j < kCount; ++j) {
      Acc loss, dx, dt;
      if (pos_weight.ptr == nullptr) {  // uniform across the grid: no divergence
        Formula::eval(Acc(x[j]), Acc(t[j]), param, Absent{}, loss, dx, dt);
      } else {
        Formula::eval(Acc(x[j]), Acc(t[j]), param, aux[j], loss, dx, dt);
      }
      loss *= w[j];
      if (p.write_loss) l[j] = T(loss); else sum += loss;
      gx[j] = T(dx * w[j] * scale);
      gt[j] = T(dt * w[j] * scale);
    }
  };

  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t first = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t n_vec = p.n / VEC;
  using P = Pack<T, VEC>;
  for (int64_t v = first; v < n_vec; v += stride) {
    const int64_t i = v * VEC;
    const P x = *reinterpret_cast<const P*>(input + i);
    const P t = *reinterpret_cast<const P*>(target + i);
    P l, gx, gt;
    apply(i, x.v, t.v, l.v, gx.v, gt.v, std::integral_constant<int, VEC>{});
    if (p.write_loss) *reinterpret_cast<P*>(loss_out + i) = l;
    if (grad_input) *reinterpret_cast<P*>(grad_input + i) = gx;
    if (grad_target) *reinterpret_cast<P*>(grad_target + i) = gt;
  }
  // Scalar tail (fewer than VEC elements), one element per thread.
  const int64_t i = n_vec * VEC + first;
  if (i < p.n) {
    T l, gx, gt;
    apply(i, input + i, target + i, &l, &gx, &gt, std::integral_constant<int, 1>{});
    if (p.write_loss) loss_out[i] = l;
    if (grad_input) grad_input[i] = gx;
    if (grad_target) grad_target[i] = gt;
  }
  if (p.write_loss) return;
  sum = block_sum(sum);
  if (threadIdx.x == 0) partials[blockIdx.x] = sum;
}

template <typename T, int VEC>
__global__ void __launch_bounds__(kThreads)
scale_kernel(T* __restrict__ grad, const T* __restrict__ grad_output, int64_t n) {
  using Acc = typename AccOf<T>::type;
  const Acc g = Acc(*grad_output);
  if (g == Acc(1)) return;  // the common last-layer case moves no memory
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t first = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t n_vec = n / VEC;
  using P = Pack<T, VEC>;
  for (int64_t v = first; v < n_vec; v += stride) {
    P x = *reinterpret_cast<P*>(grad + v * VEC);
#pragma unroll
    for (int j = 0; j < VEC; ++j) x.v[j] = T(Acc(x.v[j]) * g);
    *reinterpret_cast<P*>(grad + v * VEC) = x;
  }
  const int64_t i = n_vec * VEC + first;
  if (i < n) grad[i] = T(Acc(grad[i]) * g);
}

template <typename T>
Operand<T> operand_of(const at::Tensor& input, const std::optional<at::Tensor>& t) {
  return {t.has_value() ? static_cast<const T*>(t->data_ptr()) : nullptr, operand_period(input, t)};
}

template <typename T, typename Formula>
void run_pointwise(const at::Tensor& input, const at::Tensor& target,
                   const std::optional<at::Tensor>& weight,
                   const std::optional<at::Tensor>& pos_weight, Reduction red, double param,
                   bool mean_by_weight_sum, at::Tensor& loss_out, at::Tensor& grad_input,
                   at::Tensor& grad_target, bool need_gi, bool need_gt) {
  using Acc = typename AccOf<T>::type;
  constexpr int kVec = 16 / sizeof(T);
  const int64_t n = input.numel();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(input.device().index());
  const auto acc_options = input.options().dtype(c10::CppTypeToScalarType<Acc>::value);
  // "mean" divides by sum(weight) only where the loss says so (torch's MSE and L1 do).
  const bool weighted = weight.has_value() && mean_by_weight_sum;
  const Operand<T> w = operand_of<T>(input, weight);
  const Operand<T> pw = operand_of<T>(input, pos_weight);

  PointwiseParams p{};
  p.n = n;
  p.param = param;
  p.grad_scale = 1.0;
  p.write_loss = red == Reduction::kNone;

  // Weighted "mean" divides by sum(weight), needed by the gradients: sum it first.
  at::Tensor weight_inv;
  if (weighted && red == Reduction::kMean) {
    const int blocks = blocks_for(n, kVec);
    at::Tensor partials = at::empty({blocks}, acc_options);
    weight_inv = at::empty({}, acc_options);
    launch_sum<T>(w.ptr, n, partials, blocks, stream);
    finish_kernel<T><<<1, 1024, 0, stream>>>(partials.data_ptr<Acc>(), blocks, 1.0, nullptr,
                                             nullptr, weight_inv.data_ptr<Acc>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    p.grad_scale_ptr = weight_inv.data_ptr<Acc>();
  } else if (red == Reduction::kMean) {
    p.grad_scale = 1.0 / double(n);
  }

  if (n == 0 && red != Reduction::kNone) {  // sum of nothing: 0; mean: 0/0 = NaN, as torch
    loss_out.fill_(red == Reduction::kSum ? 0.0 : std::numeric_limits<double>::quiet_NaN());
    return;
  }
  if (n == 0) return;

  const T* x = static_cast<const T*>(input.data_ptr());
  const T* t = static_cast<const T*>(target.data_ptr());
  T* l = ptr_or_null<T>(loss_out, p.write_loss);
  T* gi = ptr_or_null<T>(grad_input, need_gi);
  T* gt = ptr_or_null<T>(grad_target, need_gt);
  const bool vectorizable = aligned16(x) && aligned16(t) && (w.period || aligned16(w.ptr)) &&
                            (pw.period || aligned16(pw.ptr)) &&
                            (!l || aligned16(l)) && (!gi || aligned16(gi)) && (!gt || aligned16(gt));
  const int blocks = blocks_for(n, vectorizable ? kVec : 1);
  at::Tensor partials = at::empty({p.write_loss ? 0 : blocks}, acc_options);
  Acc* part = p.write_loss ? nullptr : partials.data_ptr<Acc>();
  if (vectorizable) {
    pointwise_loss_kernel<T, Formula, kVec><<<blocks, kThreads, 0, stream>>>(x, t, w, pw, l, gi, gt, part, p);
  } else {
    pointwise_loss_kernel<T, Formula, 1><<<blocks, kThreads, 0, stream>>>(x, t, w, pw, l, gi, gt, part, p);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  if (p.write_loss) return;

  const double multiplier = red == Reduction::kMean && !weighted ? 1.0 / double(n) : 1.0;
  const Acc* divisor_inv = weight_inv.defined() ? weight_inv.data_ptr<Acc>() : nullptr;
  finish_kernel<T><<<1, 1024, 0, stream>>>(part, blocks, multiplier, divisor_inv,
                                           static_cast<T*>(loss_out.data_ptr()), nullptr);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> pointwise_loss_cuda(
    const at::Tensor& input, const at::Tensor& target, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& pos_weight, int64_t loss, int64_t reduction, double param,
    bool mean_by_weight_sum, bool need_grad_input, bool need_grad_target) {
  check_pointwise_args(input, target, weight, pos_weight, loss, reduction, mean_by_weight_sum);
  const c10::cuda::CUDAGuard guard(input.device());
  const auto red = static_cast<Reduction>(reduction);
  at::Tensor loss_out = red == Reduction::kNone ? at::empty_like(input) : at::empty({}, input.options());
  at::Tensor grad_input = need_grad_input ? at::empty_like(input) : at::empty({0}, input.options());
  at::Tensor grad_target = need_grad_target ? at::empty_like(input) : at::empty({0}, input.options());
  FASTLOSS_CUDA_DISPATCH_FLOATING(input.scalar_type(), [&] {
    FASTLOSS_DISPATCH_POINTWISE_LOSS(loss, [&] {
      run_pointwise<scalar_t, Formula>(input, target, weight, pos_weight, red, param,
                                       mean_by_weight_sum, loss_out, grad_input, grad_target,
                                       need_grad_input, need_grad_target);
    });
  });
  return {loss_out, grad_input, grad_target};
}

void scale_grad_cuda(at::Tensor& grad, const at::Tensor& grad_output) {
  check_scale_grad_args(grad, grad_output);
  if (grad_output.dim() != 0) {  // reduction "none": an elementwise product, one ATen pass
    grad.mul_(grad_output);
    return;
  }
  const int64_t n = grad.numel();
  if (n == 0) return;
  const c10::cuda::CUDAGuard guard(grad.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(grad.device().index());
  const at::Tensor g = grad_output.to(grad.scalar_type());
  FASTLOSS_CUDA_DISPATCH_FLOATING(grad.scalar_type(), [&] {
    constexpr int kVec = 16 / sizeof(scalar_t);
    auto* data = static_cast<scalar_t*>(grad.data_ptr());
    const auto* go = static_cast<const scalar_t*>(g.data_ptr());
    if (aligned16(data)) {
      scale_kernel<scalar_t, kVec><<<blocks_for(n, kVec), kThreads, 0, stream>>>(data, go, n);
    } else {
      scale_kernel<scalar_t, 1><<<blocks_for(n, 1), kThreads, 0, stream>>>(data, go, n);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(fastloss, CUDA, m) {
  m.impl("pointwise_loss", &pointwise_loss_cuda);
  m.impl("scale_grad_", &scale_grad_cuda);
}

}  // namespace fastloss::cuda
