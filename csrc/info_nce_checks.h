// Argument checks for the all-pairs softmax ops (info_nce_stats, info_nce_grad), shared by the
// CPU and CUDA registrations.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <optional>

#include "common/op_checks.h"

namespace fastloss {
namespace {  // internal linkage: compiled by both g++ and nvcc

// a (n, D) and b (m, D) of one dtype and device, contiguous; temperature 0-d, floating, there too.
inline void check_info_nce_args(const at::Tensor& a, const at::Tensor& b, const at::Tensor& temperature,
                                int64_t pos_offset, int64_t pos_period, int64_t self_offset) {
  check_kernel_dtype("a", a.scalar_type());
  TORCH_CHECK(a.dim() == 2, "fastloss: a must be (n, D), got ", a.sizes());
  TORCH_CHECK(a.is_contiguous(), "fastloss: a must be contiguous");
  TORCH_CHECK(b.dim() == 2 && b.size(1) == a.size(1), "fastloss: b must be (m, ", a.size(1), "), got ", b.sizes());
  check_companion("b", b, "a", a);
  TORCH_CHECK(temperature.dim() == 0 && at::isFloatingType(temperature.scalar_type()),
              "fastloss: temperature must be a 0-d floating tensor, got ", temperature.scalar_type(), " of shape ",
              temperature.sizes());
  TORCH_CHECK(temperature.device() == a.device(), "fastloss: temperature must be on a's device ", a.device(),
              ", got ", temperature.device());
  TORCH_CHECK(pos_offset >= 0, "fastloss: pos_offset must be >= 0, got ", pos_offset);
  TORCH_CHECK(pos_period >= 1, "fastloss: pos_period must be >= 1, got ", pos_period);
  TORCH_CHECK(self_offset >= -1, "fastloss: self_offset must be >= 0, or -1 for none, got ", self_offset);
}

// The per-row statistics of the grad op: (rows,) in the accumulation dtype of a, on its device.
inline void check_row_stat(const char* name, const std::optional<at::Tensor>& t, int64_t rows, const at::Tensor& a) {
  if (!t.has_value()) return;
  const at::ScalarType acc = a.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  TORCH_CHECK(t->dim() == 1 && t->size(0) == rows, "fastloss: ", name, " must be (", rows, ",), got ", t->sizes());
  TORCH_CHECK(t->scalar_type() == acc, "fastloss: ", name, " must be ", acc, ", got ", t->scalar_type());
  TORCH_CHECK(t->device() == a.device() && t->is_contiguous(), "fastloss: ", name,
              " must be contiguous on a's device");
}

inline void check_info_nce_grad_args(const at::Tensor& a, const at::Tensor& b, const at::Tensor& temperature,
                                     const std::optional<at::Tensor>& row_lse,
                                     const std::optional<at::Tensor>& row_weight,
                                     const std::optional<at::Tensor>& col_lse,
                                     const std::optional<at::Tensor>& col_weight, int64_t pos_offset,
                                     int64_t pos_period, int64_t self_offset) {
  check_info_nce_args(a, b, temperature, pos_offset, pos_period, self_offset);
  TORCH_CHECK(row_lse.has_value() == row_weight.has_value(), "fastloss: row_lse and row_weight come together");
  TORCH_CHECK(col_lse.has_value() == col_weight.has_value(), "fastloss: col_lse and col_weight come together");
  check_row_stat("row_lse", row_lse, a.size(0), a);
  check_row_stat("row_weight", row_weight, a.size(0), a);
  check_row_stat("col_lse", col_lse, b.size(0), a);
  check_row_stat("col_weight", col_weight, b.size(0), a);
}

}  // namespace
}  // namespace fastloss
