// Shared by the CPU ops: the dtype mapping and the deterministic chunked parallel sum.
#pragma once
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "kernel_api.h"

namespace fastloss::cpu {

inline ScalarKind scalar_kind(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return ScalarKind::kFloat;
    case at::kDouble: return ScalarKind::kDouble;
    case at::kHalf: return ScalarKind::kHalf;
    case at::kBFloat16: return ScalarKind::kBFloat16;
    default: TORCH_CHECK(false, "fastloss: unsupported dtype ", t);
  }
}

// Runs fn(begin, end) -> double over [0, n) in chunks of `chunk` on at::parallel_for and adds
// the results in chunk order: the same bits whatever the number of threads.
template <typename Fn>
double chunked_sum(int64_t n, int64_t chunk, const Fn& fn) {
  const int64_t chunks = (n + chunk - 1) / chunk;
  std::vector<double> partial(chunks, 0.0);
  at::parallel_for(0, chunks, 1, [&](int64_t first, int64_t last) {
    for (int64_t c = first; c < last; ++c) partial[c] = fn(c * chunk, std::min(n, (c + 1) * chunk));
  });
  double total = 0.0;
  for (double p : partial) total += p;
  return total;
}

}  // namespace fastloss::cpu
