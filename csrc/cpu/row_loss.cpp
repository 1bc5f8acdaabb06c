// CPU implementation of fastloss::row_loss: rows in fixed chunks (a function of D alone) on
// at::parallel_for, chunk sums added in order.
#include <torch/library.h>

#include "../row_checks.h"
#include "cpu_common.h"

namespace fastloss::cpu {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> row_loss_cpu(
    const at::Tensor& a, const at::Tensor& b, const std::optional<at::Tensor>& c,
    const std::optional<at::Tensor>& label, int64_t loss, int64_t reduction, double margin, double eps,
    double p, bool swap, bool need_grad_a, bool need_grad_b, bool need_grad_c) {
  check_row_args(a, b, c, label, loss, reduction);
  const int64_t n = a.size(0), d = a.size(1);
  const auto opts = a.options();
  const bool none = reduction == 0;
  at::Tensor loss_out = none ? at::empty({n}, opts) : at::empty({}, opts);
  auto grad = [&](bool need) { return need ? empty_output(a.sizes(), opts) : at::empty({0}, opts); };
  at::Tensor ga = grad(need_grad_a), gb = grad(need_grad_b), gc = grad(need_grad_c && c.has_value());
  RowArgs args{};
  args.a = a.data_ptr();
  args.b = b.data_ptr();
  args.c = c.has_value() ? c->data_ptr() : nullptr;
  args.label = label.has_value() ? label->data_ptr() : nullptr;
  args.loss_out = none ? loss_out.data_ptr() : nullptr;
  args.grad_a = need_grad_a ? ga.data_ptr() : nullptr;
  args.grad_b = need_grad_b ? gb.data_ptr() : nullptr;
  args.grad_c = (need_grad_c && c.has_value()) ? gc.data_ptr() : nullptr;
  args.d = d;
  args.grad_scale = reduction == 1 ? 1.0 / double(n) : 1.0;
  args.margin = margin;
  args.eps = eps;
  args.p = p;
  args.swap = swap;
  const int64_t grads = int64_t(need_grad_a) + int64_t(need_grad_b) + int64_t(need_grad_c && c.has_value());
  args.stream_grads = grads * a.numel() * int64_t(a.element_size()) >= kStreamingBytes;
  const RowRangeFn fn = kernels_for_this_cpu().row_loss(scalar_kind(a.scalar_type()), loss);
  const double total = chunked_sum(n, rows_per_chunk(d), [&](int64_t r0, int64_t r1) { return fn(args, r0, r1); });
  if (!none) loss_out.fill_(reduction == 1 ? total / double(n) : total);  // mean of none: NaN
  return {loss_out, ga, gb, gc};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastloss, CPU, m) { m.impl("row_loss", &row_loss_cpu); }

}  // namespace fastloss::cpu
