// CPU implementation of fastloss::pointwise_loss and fastloss::scale_grad_: splits the tensor
// into fixed chunks (kChunk), runs them on at::parallel_for, and adds the per-chunk sums in
// chunk order, so the result does not depend on the number of threads.
#include <torch/library.h>

#include "../pointwise_checks.h"
#include "cpu_common.h"

namespace fastloss::cpu {

const char* isa_name() { return kernels_for_this_cpu().name; }

namespace {

int64_t num_chunks(int64_t n) { return (n + kChunk - 1) / kChunk; }

template <typename Fn>
double chunked_sum(int64_t n, const Fn& fn) { return fastloss::cpu::chunked_sum(n, kChunk, fn); }

void* data_or_null(const at::Tensor& t, bool present) { return present ? t.data_ptr() : nullptr; }

std::tuple<at::Tensor, at::Tensor, at::Tensor> pointwise_loss_cpu(
    const at::Tensor& input, const at::Tensor& target, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& pos_weight, int64_t loss, int64_t reduction, double param,
    bool mean_by_weight_sum, bool need_grad_input, bool need_grad_target) {
  check_pointwise_args(input, target, weight, pos_weight, loss, reduction, mean_by_weight_sum);
  const int64_t n = input.numel();
  const auto red = static_cast<Reduction>(reduction);
  const ScalarKind kind = scalar_kind(input.scalar_type());
  const KernelTable& kernels = kernels_for_this_cpu();
  // "mean" divides by sum(weight) only where the loss says so (torch's MSE and L1 do).
  const bool weighted = weight.has_value() && mean_by_weight_sum;

  const auto opts = input.options();
  at::Tensor loss_out = red == Reduction::kNone ? empty_output(input.sizes(), opts) : at::empty({}, opts);
  at::Tensor grad_input = need_grad_input ? empty_output(input.sizes(), opts) : at::empty({0}, opts);
  at::Tensor grad_target = need_grad_target ? empty_output(input.sizes(), opts) : at::empty({0}, opts);

  // "mean" divides by N, or by sum(weight) when weighted: that sum is needed before the
  // gradients are written, so it takes a pass over weight alone (only when training).
  double weight_sum = double(n);
  const bool need_grad = need_grad_input || need_grad_target;
  if (weighted && red == Reduction::kMean && need_grad) {
    const SumRangeFn sum = kernels.sum(kind);
    const void* w = weight->data_ptr();
    weight_sum = chunked_sum(n, [&](int64_t b, int64_t e) { return sum(w, b, e); });
  }

  PointwiseArgs args{};
  args.input = input.data_ptr();
  args.target = target.data_ptr();
  args.weight = weight.has_value() ? weight->data_ptr() : nullptr;
  args.weight_period = operand_period(input, weight);
  args.aux = pos_weight.has_value() ? pos_weight->data_ptr() : nullptr;
  args.aux_period = operand_period(input, pos_weight);
  args.loss_out = data_or_null(loss_out, red == Reduction::kNone);
  args.grad_input = data_or_null(grad_input, need_grad_input);
  args.grad_target = data_or_null(grad_target, need_grad_target);
  args.grad_scale = red == Reduction::kMean ? 1.0 / weight_sum : 1.0;
  args.param = param;
  const PointwiseRangeFn range = kernels.pointwise(kind, loss, args.weight != nullptr, args.aux != nullptr);

  if (red == Reduction::kNone) {
    at::parallel_for(0, num_chunks(n), 1, [&](int64_t first, int64_t last) {
      for (int64_t c = first; c < last; ++c) range(args, c * kChunk, std::min(n, (c + 1) * kChunk));
    });
    return {loss_out, grad_input, grad_target};
  }

  const double total = chunked_sum(n, [&](int64_t b, int64_t e) { return range(args, b, e); });
  double value = total;
  if (red == Reduction::kMean) {
    if (weighted && !need_grad) {
      const SumRangeFn sum = kernels.sum(kind);
      const void* w = weight->data_ptr();
      weight_sum = chunked_sum(n, [&](int64_t b, int64_t e) { return sum(w, b, e); });
    }
    value = total / weight_sum;  // 0/0 = NaN for an empty input, as torch gives
  }
  loss_out.fill_(value);
  return {loss_out, grad_input, grad_target};
}

void scale_grad_cpu(at::Tensor& grad, const at::Tensor& grad_output) {
  check_scale_grad_args(grad, grad_output);
  // The CPU reads a 0-d grad_output without a device sync; 1 leaves the gradient untouched.
  if (grad_output.dim() == 0 && grad_output.item<double>() == 1.0) return;
  grad.mul_(grad_output);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastloss, CPU, m) {
  m.impl("pointwise_loss", &pointwise_loss_cpu);
  m.impl("scale_grad_", &scale_grad_cpu);
}

}  // namespace fastloss::cpu
