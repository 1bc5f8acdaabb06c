// CUDA implementation of fastloss::row_loss (contrastive, triplet, cosine embedding; see
// formulas/row.h). One warp per row, grid-stride over rows: lanes read the row coalesced and
// sum in a fixed order through warp shuffles, lane results give the row's loss and gradient
// coefficients, a second pass (from L1/L2) writes the gradients. Row losses are added per
// block, then in one block: no atomics, a fixed grid, the same bits every run.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../formulas/row.h"
#include "../row_checks.h"
#include "common.cuh"

namespace fastloss::cuda {
namespace {

struct RowKernelArgs {
  int64_t n, d;
  double margin, eps, p, grad_scale;
  bool swap, write_loss;
};

template <typename T, typename Formula>
__global__ void __launch_bounds__(kThreads)
row_loss_kernel(const T* __restrict__ a, const T* __restrict__ b, const T* __restrict__ c,
                const T* __restrict__ label, T* __restrict__ loss_out, T* __restrict__ ga,
                T* __restrict__ gb, T* __restrict__ gc, typename AccOf<T>::type* __restrict__ partials,
                RowKernelArgs args) {
  using Acc = typename AccOf<T>::type;
  const int lane = threadIdx.x & 31;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x >> 5);
  const int64_t first = int64_t(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
  const row::Params<Acc> q{Acc(args.margin), Acc(args.eps), Acc(args.p), args.swap};
  const int64_t d = args.d;
  Acc total = Acc(0);
  for (int64_t r = first; r < args.n; r += warps) {
    const T* ra = a + r * d;
    const T* rb = b + r * d;
    const T* rc = c ? c + r * d : nullptr;
    Acc s[3] = {Acc(0), Acc(0), Acc(0)};
    for (int64_t j = lane; j < d; j += 32)
      Formula::accumulate(Acc(ra[j]), Acc(rb[j]), rc ? Acc(rc[j]) : Acc(0), q, s);
    for (int k = 0; k < 3; ++k) s[k] = warp_all_sum(s[k]);
    Acc coef[6] = {};
    const Acc y = label ? Acc(label[r]) : Acc(0);
    const Acc loss = Formula::finish(s, y, q, coef);
    if (args.write_loss) {
      if (lane == 0) loss_out[r] = T(loss);
    } else {
      total += loss;  // every lane holds the same value; lane 0's is summed below
    }
    if (!ga && !gb && !gc) continue;
    for (int k = 0; k < 6; ++k) coef[k] *= Acc(args.grad_scale);
    for (int64_t j = lane; j < d; j += 32) {
      Acc x, yv, z;
      Formula::gradient(Acc(ra[j]), Acc(rb[j]), rc ? Acc(rc[j]) : Acc(0), coef, q, x, yv, z);
      if (ga) ga[r * d + j] = T(x);
      if (gb) gb[r * d + j] = T(yv);
      if (gc) gc[r * d + j] = T(z);
    }
  }
  if (args.write_loss) return;
  total = block_sum(lane == 0 ? total : Acc(0));
  if (threadIdx.x == 0) partials[blockIdx.x] = total;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> row_loss_cuda(
    const at::Tensor& a, const at::Tensor& b, const std::optional<at::Tensor>& c,
    const std::optional<at::Tensor>& label, int64_t loss, int64_t reduction, double margin, double eps,
    double p, bool swap, bool need_grad_a, bool need_grad_b, bool need_grad_c) {
  check_row_args(a, b, c, label, loss, reduction);
  const c10::cuda::CUDAGuard guard(a.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(a.device().index());
  const int64_t n = a.size(0), d = a.size(1);
  const auto opts = a.options();
  const bool none = reduction == 0;
  at::Tensor loss_out = none ? at::empty({n}, opts) : at::empty({}, opts);
  auto grad = [&](bool need) { return need ? at::empty_like(a) : at::empty({0}, opts); };
  const bool need_c = need_grad_c && c.has_value();
  at::Tensor ga = grad(need_grad_a), gb = grad(need_grad_b), gc = grad(need_c);
  if (n == 0) {
    if (!none) loss_out.fill_(reduction == 2 ? 0.0 : std::numeric_limits<double>::quiet_NaN());
    return {loss_out, ga, gb, gc};
  }
  FASTLOSS_CUDA_DISPATCH_FLOATING(a.scalar_type(), [&] {
    using Acc = typename AccOf<scalar_t>::type;
    const int warps_per_block = kThreads / 32;
    const int blocks = int(std::min<int64_t>((n + warps_per_block - 1) / warps_per_block, kMaxBlocks));
    at::Tensor partials = at::empty({none ? 0 : blocks}, opts.dtype(c10::CppTypeToScalarType<Acc>::value));
    RowKernelArgs args{n, d, margin, eps, p, reduction == 1 ? 1.0 / double(n) : 1.0, swap, none};
    auto ptr = [](const at::Tensor& t) { return static_cast<scalar_t*>(t.data_ptr()); };
    FASTLOSS_DISPATCH_ROW_LOSS(loss, [&](auto formula) {
      row_loss_kernel<scalar_t, decltype(formula)><<<blocks, kThreads, 0, stream>>>(
          ptr(a), ptr(b), c.has_value() ? ptr(*c) : nullptr, label.has_value() ? ptr(*label) : nullptr,
          none ? ptr(loss_out) : nullptr, need_grad_a ? ptr(ga) : nullptr, need_grad_b ? ptr(gb) : nullptr,
          need_c ? ptr(gc) : nullptr, none ? nullptr : partials.data_ptr<Acc>(), args);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    if (!none) {
      finish_kernel<scalar_t><<<1, 1024, 0, stream>>>(partials.data_ptr<Acc>(), blocks,
                                                      reduction == 1 ? 1.0 / double(n) : 1.0, nullptr,
                                                      ptr(loss_out), nullptr);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  return {loss_out, ga, gb, gc};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastloss, CUDA, m) { m.impl("row_loss", &row_loss_cuda); }

}  // namespace fastloss::cuda
