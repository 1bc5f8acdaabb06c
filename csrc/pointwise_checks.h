// Argument checks for the pointwise-loss ops, shared by the CPU and CUDA registrations.
// The Python layer already broadcasts and casts; these guard direct calls of the ops.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <optional>

#include "common/op_checks.h"
#include "formulas/pointwise.h"

namespace fastloss {
// Internal linkage: this header is compiled by both g++ (CPU) and nvcc (CUDA); one shared
// inline definition picked by the linker from either would be an ODR hazard.
namespace {

inline void check_operand(const char* name, const at::Tensor& input,
                          const std::optional<at::Tensor>& operand) {
  if (!operand.has_value()) return;
  const auto& w = *operand;
  check_companion(name, w, "input", input);
  const int64_t n = input.numel(), period = w.numel();
  TORCH_CHECK(period == n || (period > 0 && n % period == 0), "fastloss: ", name,
              " must have input's numel ", n, " or a divisor of it (a repeated block), got ", period);
}

// 0 for an operand of input's size (index i), else the length of its repeated block.
inline int64_t operand_period(const at::Tensor& input, const std::optional<at::Tensor>& operand) {
  return (!operand.has_value() || operand->numel() == input.numel()) ? 0 : operand->numel();
}

inline void check_pointwise_args(const at::Tensor& input, const at::Tensor& target,
                                 const std::optional<at::Tensor>& weight,
                                 const std::optional<at::Tensor>& pos_weight, int64_t loss,
                                 int64_t reduction, bool mean_by_weight_sum) {
  TORCH_CHECK(loss >= 0 && loss < kNumPointwiseLosses, "fastloss: unknown pointwise loss id ", loss);
  check_reduction_id(reduction);
  check_kernel_dtype("input", input.scalar_type());
  TORCH_CHECK(input.is_contiguous(), "fastloss: input must be contiguous");
  check_like("target", target, "input", input);
  check_operand("weight", input, weight);
  check_operand("pos_weight", input, pos_weight);
  TORCH_CHECK(!mean_by_weight_sum || reduction != int64_t(Reduction::kMean) || !weight.has_value() ||
                  weight->numel() == input.numel(),
              "fastloss: a mean by the sum of weight needs an input-sized weight");
}

inline void check_scale_grad_args(const at::Tensor& grad, const at::Tensor& grad_output) {
  bool broadcasts = grad_output.dim() <= grad.dim();
  for (int64_t i = 1; broadcasts && i <= grad_output.dim(); ++i) {
    const int64_t g = grad_output.size(-i);
    broadcasts = g == 1 || g == grad.size(-i);
  }
  TORCH_CHECK(broadcasts, "fastloss: grad_output must be 0-d or broadcast to the gradient's shape ",
              grad.sizes(), ", got ", grad_output.sizes());
  TORCH_CHECK(grad_output.device() == grad.device(),
              "fastloss: grad_output must be on the gradient's device ", grad.device(), ", got ",
              grad_output.device());
  TORCH_CHECK(grad.is_contiguous(), "fastloss: the saved gradient must be contiguous");
}

}  // namespace
}  // namespace fastloss
