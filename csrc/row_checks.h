// Argument checks for the row-loss op, shared by the CPU (and any device) registrations.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <optional>

#include "common/op_checks.h"
#include "formulas/row.h"

namespace fastloss {
namespace {  // internal linkage: compiled by both g++ and nvcc

inline void check_row_args(const at::Tensor& a, const at::Tensor& b, const std::optional<at::Tensor>& c,
                           const std::optional<at::Tensor>& label, int64_t loss, int64_t reduction) {
  TORCH_CHECK(loss >= 0 && loss < row::kNumRowLosses, "fastloss: unknown row loss id ", loss);
  check_reduction_id(reduction);
  check_kernel_dtype("rows", a.scalar_type());
  TORCH_CHECK(a.dim() == 2, "fastloss: rows must be (N, D), got ", a.sizes());
  TORCH_CHECK(a.is_contiguous(), "fastloss: the first input must be contiguous");
  check_like("the second input", b, "the first input", a);
  if (c.has_value()) check_like("the third input", *c, "the first input", a);
  if (label.has_value()) {
    TORCH_CHECK(label->dim() == 1 && label->size(0) == a.size(0),
                "fastloss: the label must be (N,) = (", a.size(0), ",), got ", label->sizes());
    check_companion("the label", *label, "the first input", a);
  }
}

}  // namespace
}  // namespace fastloss
