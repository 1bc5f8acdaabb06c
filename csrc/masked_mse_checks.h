// Argument checks for the masked patch MSE op, shared by the CPU and CUDA registrations.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include "common/op_checks.h"

namespace fastloss {
namespace {  // internal linkage: compiled by both g++ and nvcc

inline void check_masked_mse_args(const at::Tensor& input, const at::Tensor& target,
                                  const at::Tensor& mask) {
  check_kernel_dtype("input", input.scalar_type());
  TORCH_CHECK(input.dim() == 2, "fastloss: input must be (rows, P), got ", input.sizes());
  TORCH_CHECK(input.is_contiguous(), "fastloss: input must be contiguous");
  check_like("target", target, "input", input);
  TORCH_CHECK(mask.dim() == 1 && mask.size(0) == input.size(0),
              "fastloss: mask must be (rows,) = (", input.size(0), ",), got ", mask.sizes());
  check_companion("mask", mask, "input", input);
}

}  // namespace
}  // namespace fastloss
