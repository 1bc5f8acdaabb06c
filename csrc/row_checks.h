// Argument checks for the row-loss op, shared by the CPU (and any device) registrations.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <optional>

#include "formulas/row.h"

namespace fastloss {
namespace {  // internal linkage: compiled by both g++ and nvcc

inline void check_row_args(const at::Tensor& a, const at::Tensor& b, const std::optional<at::Tensor>& c,
                           const std::optional<at::Tensor>& label, int64_t loss, int64_t reduction) {
  TORCH_CHECK(loss >= 0 && loss < row::kNumRowLosses, "fastloss: unknown row loss id ", loss);
  TORCH_CHECK(reduction >= 0 && reduction <= 2, "fastloss: reduction must be 0, 1 or 2, got ", reduction);
  const auto dtype = a.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf || dtype == at::kBFloat16,
              "fastloss: rows must be float32, float64, float16 or bfloat16, got ", dtype);
  TORCH_CHECK(a.dim() == 2, "fastloss: rows must be (N, D), got ", a.sizes());
  auto same = [&](const at::Tensor& t, const char* name) {
    TORCH_CHECK(t.sizes() == a.sizes() && t.scalar_type() == dtype && t.device() == a.device() &&
                    t.is_contiguous(),
                "fastloss: ", name, " must be contiguous, of the first input's shape ", a.sizes(),
                ", dtype and device");
  };
  TORCH_CHECK(a.is_contiguous(), "fastloss: the first input must be contiguous");
  same(b, "the second input");
  if (c.has_value()) same(*c, "the third input");
  if (label.has_value()) {
    TORCH_CHECK(label->dim() == 1 && label->size(0) == a.size(0) && label->scalar_type() == dtype &&
                    label->device() == a.device() && label->is_contiguous(),
                "fastloss: the label must be (N,) = (", a.size(0), ",) of the inputs' dtype and device");
  }
}

}  // namespace
}  // namespace fastloss
