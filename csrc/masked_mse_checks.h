// Argument checks for the masked patch MSE op, shared by the CPU and CUDA registrations.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

namespace fastloss {
namespace {  // internal linkage: compiled by both g++ and nvcc

inline void check_masked_mse_args(const at::Tensor& input, const at::Tensor& target,
                                  const at::Tensor& mask) {
  const auto dtype = input.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf ||
                  dtype == at::kBFloat16,
              "fastloss: input must be float32, float64, float16 or bfloat16, got ", dtype);
  TORCH_CHECK(input.dim() == 2, "fastloss: input must be (rows, P), got ", input.sizes());
  TORCH_CHECK(target.sizes() == input.sizes(), "fastloss: target must have input's shape ",
              input.sizes(), ", got ", target.sizes());
  TORCH_CHECK(mask.dim() == 1 && mask.size(0) == input.size(0),
              "fastloss: mask must be (rows,) = (", input.size(0), ",), got ", mask.sizes());
  TORCH_CHECK(target.scalar_type() == dtype && mask.scalar_type() == dtype,
              "fastloss: target and mask must have input's dtype ", dtype);
  TORCH_CHECK(target.device() == input.device() && mask.device() == input.device(),
              "fastloss: target and mask must be on input's device ", input.device());
  TORCH_CHECK(input.is_contiguous() && target.is_contiguous() && mask.is_contiguous(),
              "fastloss: input, target and mask must be contiguous");
}

}  // namespace
}  // namespace fastloss
