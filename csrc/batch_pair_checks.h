// Argument checks for the in-batch loss op, shared by the CPU and CUDA registrations.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <optional>

#include "common/op_checks.h"
#include "formulas/batch_pair.h"

namespace fastloss {
namespace {  // internal linkage: compiled by both g++ and nvcc

inline void check_labels(const char* name, const at::Tensor& labels, const at::Tensor& rows) {
  TORCH_CHECK(labels.dim() == 1 && labels.size(0) == rows.size(0), "fastloss: ", name, " must be (",
              rows.size(0), ",), got ", labels.sizes());
  TORCH_CHECK(labels.scalar_type() == at::kLong, "fastloss: ", name, " must be int64, got ", labels.scalar_type());
  TORCH_CHECK(labels.device() == rows.device(), "fastloss: ", name, " must be on the embeddings' device");
  TORCH_CHECK(labels.is_contiguous(), "fastloss: ", name, " must be contiguous");
}

inline void check_batch_pair_args(const at::Tensor& q, const std::optional<at::Tensor>& r, const at::Tensor& q_labels,
                                  const std::optional<at::Tensor>& r_labels, int64_t loss, int64_t reduction,
                                  int64_t self_offset) {
  TORCH_CHECK(loss >= 0 && loss < batch::kNumBatchLosses, "fastloss: unknown in-batch loss id ", loss);
  TORCH_CHECK(reduction >= 1 && reduction <= 3, "fastloss: in-batch reduction must be 1 (mean), 2 (sum) or 3 "
              "(avg_nonzero), got ", reduction);
  check_kernel_dtype("embeddings", q.scalar_type());
  TORCH_CHECK(q.dim() == 2, "fastloss: embeddings must be (N, D), got ", q.sizes());
  TORCH_CHECK(q.is_contiguous(), "fastloss: embeddings must be contiguous");
  check_labels("labels", q_labels, q);
  TORCH_CHECK(r.has_value() == r_labels.has_value(), "fastloss: reference embeddings and labels come together");
  if (r.has_value()) {
    TORCH_CHECK(r->dim() == 2 && r->size(1) == q.size(1), "fastloss: reference embeddings must be (M, ",
                q.size(1), "), got ", r->sizes());
    check_companion("reference embeddings", *r, "embeddings", q);
    check_labels("reference labels", *r_labels, *r);
    TORCH_CHECK(loss == int64_t(batch::BatchLoss::kContrastive) || self_offset >= 0, "fastloss: the batch-hard "
                "triplet loss takes a reference set only as the batch that holds its anchors (self_offset >= 0)");
  }
  TORCH_CHECK(self_offset == -1 || (self_offset >= 0 && r.has_value()), "fastloss: self_offset (the queries' "
              "first row in the reference set) must be -1 (none), or >= 0 with a reference set, got ", self_offset);
}

}  // namespace
}  // namespace fastloss
