// Argument checks for the pointwise-loss ops, shared by the CPU and CUDA registrations.
// The Python layer already broadcasts and casts; these guard direct calls of the ops.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <optional>

#include "formulas/pointwise.h"

namespace fastloss {
// Internal linkage: this header is compiled by both g++ (CPU) and nvcc (CUDA); one shared
// inline definition picked by the linker from either would be an ODR hazard.
namespace {

inline void check_pointwise_args(const at::Tensor& input, const at::Tensor& target,
                                 const std::optional<at::Tensor>& weight, int64_t loss,
                                 int64_t reduction) {
  TORCH_CHECK(loss == int64_t(PointwiseLoss::kSquaredError),
              "fastloss: unknown pointwise loss id ", loss);
  TORCH_CHECK(reduction >= 0 && reduction <= 2,
              "fastloss: reduction must be 0 (none), 1 (mean) or 2 (sum), got ", reduction);
  const auto dtype = input.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf ||
                  dtype == at::kBFloat16,
              "fastloss: input must be float32, float64, float16 or bfloat16, got ", dtype);
  TORCH_CHECK(target.scalar_type() == dtype, "fastloss: target must have input's dtype ", dtype,
              ", got ", target.scalar_type());
  TORCH_CHECK(target.sizes() == input.sizes(), "fastloss: target must have input's shape ",
              input.sizes(), ", got ", target.sizes());
  TORCH_CHECK(target.device() == input.device(), "fastloss: target must be on input's device ",
              input.device(), ", got ", target.device());
  TORCH_CHECK(input.is_contiguous() && target.is_contiguous(),
              "fastloss: input and target must be contiguous");
  if (weight.has_value()) {
    const auto& w = *weight;
    TORCH_CHECK(w.scalar_type() == dtype, "fastloss: weight must have input's dtype ", dtype,
                ", got ", w.scalar_type());
    TORCH_CHECK(w.sizes() == input.sizes(), "fastloss: weight must have input's shape ",
                input.sizes(), ", got ", w.sizes());
    TORCH_CHECK(w.device() == input.device(), "fastloss: weight must be on input's device ",
                input.device(), ", got ", w.device());
    TORCH_CHECK(w.is_contiguous(), "fastloss: weight must be contiguous");
  }
}

inline void check_scale_grad_args(const at::Tensor& grad, const at::Tensor& grad_output) {
  TORCH_CHECK(grad_output.dim() == 0 || grad_output.sizes() == grad.sizes(),
              "fastloss: grad_output must be 0-d or have the gradient's shape ", grad.sizes(),
              ", got ", grad_output.sizes());
  TORCH_CHECK(grad_output.device() == grad.device(),
              "fastloss: grad_output must be on the gradient's device ", grad.device(), ", got ",
              grad_output.device());
  TORCH_CHECK(grad.is_contiguous(), "fastloss: the saved gradient must be contiguous");
}

}  // namespace
}  // namespace fastloss
