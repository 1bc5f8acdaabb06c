// CPU implementation of fastloss::masked_mse_loss: rows of P values in fixed chunks of rows
// (a function of P alone) on at::parallel_for, chunk sums added in order.
#include <torch/library.h>

#include "../masked_mse_checks.h"
#include "cpu_common.h"

namespace fastloss::cpu {
namespace {

std::tuple<at::Tensor, at::Tensor> masked_mse_loss_cpu(const at::Tensor& input,
                                                       const at::Tensor& target,
                                                       const at::Tensor& mask, bool norm_target,
                                                       double eps, bool need_grad_input) {
  check_masked_mse_args(input, target, mask);
  const int64_t rows = mask.numel();
  const int64_t p = rows == 0 ? 0 : input.numel() / rows;
  const ScalarKind kind = scalar_kind(input.scalar_type());
  const KernelTable& kernels = kernels_for_this_cpu();
  at::Tensor loss = at::empty({}, input.options());
  at::Tensor grad = need_grad_input ? empty_output(input.sizes(), input.options()) : at::empty({0}, input.options());

  // sum(mask) first: the gradients are scaled by it.
  const SumRangeFn sum = kernels.sum(kind);
  const void* m = mask.data_ptr();
  const double mask_sum = chunked_sum(rows, kChunk, [&](int64_t b, int64_t e) { return sum(m, b, e); });

  MaskedMseArgs args{};
  args.input = input.data_ptr();
  args.target = target.data_ptr();
  args.mask = m;
  args.grad_input = need_grad_input ? grad.data_ptr() : nullptr;
  args.rows = rows;
  args.p = p;
  args.norm_target = norm_target;
  args.stream_grad = need_grad_input && input.numel() * int64_t(input.element_size()) >= kStreamingBytes;
  args.eps = eps;
  args.grad_scale = 1.0 / (double(p) * mask_sum);
  const MaskedMseRowsFn row_fn = kernels.masked_mse(kind);
  const double total = chunked_sum(rows, rows_per_chunk(p), [&](int64_t b, int64_t e) { return row_fn(args, b, e); });
  loss.fill_(total / mask_sum);  // an all-zero mask gives 0/0 = NaN, as the formula does
  return {loss, grad};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastloss, CPU, m) { m.impl("masked_mse_loss", &masked_mse_loss_cpu); }

}  // namespace fastloss::cpu
