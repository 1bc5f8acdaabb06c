// Checks shared by the ops' argument checks (pointwise_checks.h, masked_mse_checks.h,
// row_checks.h): the dtypes the kernels take, the reduction ids, companion tensors.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

namespace fastloss {
namespace {  // internal linkage: compiled by both g++ and nvcc

inline void check_kernel_dtype(const char* name, at::ScalarType dtype) {
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf || dtype == at::kBFloat16,
              "fastloss: ", name, " must be float32, float64, float16 or bfloat16, got ", dtype);
}

inline void check_reduction_id(int64_t reduction) {
  TORCH_CHECK(reduction >= 0 && reduction <= 2,
              "fastloss: reduction must be 0 (none), 1 (mean) or 2 (sum), got ", reduction);
}

// `t` (called name) has the dtype and device of `ref` (called ref_name) and is contiguous.
inline void check_companion(const char* name, const at::Tensor& t, const char* ref_name, const at::Tensor& ref) {
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), "fastloss: ", name, " must have ", ref_name, "'s dtype ",
              ref.scalar_type(), ", got ", t.scalar_type());
  TORCH_CHECK(t.device() == ref.device(), "fastloss: ", name, " must be on ", ref_name, "'s device ",
              ref.device(), ", got ", t.device());
  TORCH_CHECK(t.is_contiguous(), "fastloss: ", name, " must be contiguous");
}

// The same, and `ref`'s shape too.
inline void check_like(const char* name, const at::Tensor& t, const char* ref_name, const at::Tensor& ref) {
  TORCH_CHECK(t.sizes() == ref.sizes(), "fastloss: ", name, " must have ", ref_name, "'s shape ", ref.sizes(),
              ", got ", t.sizes());
  check_companion(name, t, ref_name, ref);
}

}  // namespace
}  // namespace fastloss
