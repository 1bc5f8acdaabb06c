// CUDA implementation of fastloss::masked_mse_loss. One warp per patch row (grid-stride over
// rows): lanes read the row coalesced, sums go through warp shuffles in a fixed order; a row
// whose mask is 0 is not read, only its gradient row zeroed. Per-warp row sums are added per
// block, then in one block: no atomics, a fixed grid, the same bits every run.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../formulas/masked_mse.h"
#include "../masked_mse_checks.h"
#include "common.cuh"

namespace fastloss::cuda {
namespace {

template <typename T>
__global__ void __launch_bounds__(kThreads)
masked_mse_kernel(const T* __restrict__ input, const T* __restrict__ target,
                  const T* __restrict__ mask, T* __restrict__ grad, int64_t rows, int64_t p,
                  bool norm_target, double eps_d,
                  const typename AccOf<T>::type* __restrict__ inv_mask_sum,
                  typename AccOf<T>::type* __restrict__ partials) {
  using Acc = typename AccOf<T>::type;
  const int lane = threadIdx.x & 31;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x >> 5);
  const int64_t first = int64_t(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
  const Acc eps = Acc(eps_d);
  const Acc scale = *inv_mask_sum / Acc(p);
  Acc total = Acc(0);  // meaningful in lane 0
  for (int64_t r = first; r < rows; r += warps) {
    const Acc m = Acc(mask[r]);
    T* g = grad ? grad + r * p : nullptr;
    if (m == Acc(0)) {
      if (g)
        for (int64_t j = lane; j < p; j += 32) g[j] = T(0);
      continue;
    }
    const T* x = input + r * p;
    const T* t = target + r * p;
    Acc mean = Acc(0), inv_std = Acc(1);
    if (norm_target) {
      Acc s = Acc(0);
      for (int64_t j = lane; j < p; j += 32) s += Acc(t[j]);
      mean = warp_all_sum(s) / Acc(p);
      Acc c = Acc(0);
      for (int64_t j = lane; j < p; j += 32) {
        const Acc d = Acc(t[j]) - mean;
        c += d * d;
      }
      inv_std = masked_mse::inverse_std(warp_all_sum(c), p, eps);
    }
    const Acc gscale = m * scale;
    Acc sq_sum = Acc(0);
    for (int64_t j = lane; j < p; j += 32) {
      Acc sq, dx;
      masked_mse::error(Acc(x[j]), masked_mse::target_value(Acc(t[j]), norm_target, mean, inv_std), sq, dx);
      sq_sum += sq;
      if (g) g[j] = T(dx * gscale);
    }
    sq_sum = warp_all_sum(sq_sum);
    total += m * sq_sum / Acc(p);
  }
  total = block_sum(lane == 0 ? total : Acc(0));
  if (threadIdx.x == 0) partials[blockIdx.x] = total;
}

std::tuple<at::Tensor, at::Tensor> masked_mse_loss_cuda(const at::Tensor& input,
                                                        const at::Tensor& target,
                                                        const at::Tensor& mask, bool norm_target,
                                                        double eps, bool need_grad_input) {
  check_masked_mse_args(input, target, mask);
  const c10::cuda::CUDAGuard guard(input.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(input.device().index());
  const int64_t rows = mask.numel();
  const int64_t p = rows == 0 ? 0 : input.numel() / rows;
  at::Tensor loss = at::empty({}, input.options());
  at::Tensor grad = need_grad_input ? at::empty_like(input) : at::empty({0}, input.options());
  FASTLOSS_CUDA_DISPATCH_FLOATING(input.scalar_type(), [&] {
    using Acc = typename AccOf<scalar_t>::type;
    const auto acc_options = input.options().dtype(c10::CppTypeToScalarType<Acc>::value);
    const auto* m = static_cast<const scalar_t*>(mask.data_ptr());
    // 1 / sum(mask) on the device: the gradients and the loss are scaled by it.
    const int mask_blocks = blocks_for(rows, 16 / sizeof(scalar_t));
    at::Tensor mask_partials = at::empty({mask_blocks}, acc_options);
    at::Tensor inv_mask_sum = at::empty({}, acc_options);
    launch_sum<scalar_t>(m, rows, mask_partials, mask_blocks, stream);
    finish_kernel<scalar_t><<<1, 1024, 0, stream>>>(mask_partials.data_ptr<Acc>(), mask_blocks, 1.0,
                                                    nullptr, nullptr, inv_mask_sum.data_ptr<Acc>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    const int warps_per_block = kThreads / 32;
    const int blocks = int(std::max<int64_t>(1, std::min<int64_t>((rows + warps_per_block - 1) / warps_per_block, kMaxBlocks)));
    at::Tensor partials = at::empty({blocks}, acc_options);
    masked_mse_kernel<scalar_t><<<blocks, kThreads, 0, stream>>>(
        static_cast<const scalar_t*>(input.data_ptr()), static_cast<const scalar_t*>(target.data_ptr()), m,
        need_grad_input ? static_cast<scalar_t*>(grad.data_ptr()) : nullptr, rows, p, norm_target, eps,
        inv_mask_sum.data_ptr<Acc>(), partials.data_ptr<Acc>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    finish_kernel<scalar_t><<<1, 1024, 0, stream>>>(partials.data_ptr<Acc>(), blocks, 1.0,
                                                    inv_mask_sum.data_ptr<Acc>(),
                                                    static_cast<scalar_t*>(loss.data_ptr()), nullptr);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {loss, grad};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastloss, CUDA, m) { m.impl("masked_mse_loss", &masked_mse_loss_cuda); }

}  // namespace fastloss::cuda
