// The masked patch MSE row kernel (see kernel_api.h), for one instruction set.
#include "../formulas/masked_mse.h"
#include "kernel_helpers.h"

namespace fastloss::cpu::FASTLOSS_ISA {
namespace {

// Sum over one row of f(j) for j in [0, p), in kLanes lanes: a fixed order.
template <typename Acc, typename F>
FASTLOSS_HD Acc row_sum(int64_t p, const F& f) {
  Acc lanes[kLanes] = {};
  for_each_block(p, [&](int64_t j, auto n) {
    for (int k = 0; k < n; ++k) lanes[k] += f(j + k);
  });
  return Acc(sum_lanes(lanes));
}

template <typename T>
double masked_mse_rows(const MaskedMseArgs& a, int64_t begin, int64_t end) {
  using Acc = typename AccOf<T>::type;
  const int64_t p = a.p;
  const Acc eps = Acc(a.eps), scale = Acc(a.grad_scale);
  const T* mask = static_cast<const T*>(a.mask);
  // The rows counted are scattered at random (a masked autoencoder drops 75% of the patches
  // at random), which defeats the hardware prefetcher at every gap: each counted row asks for
  // the next counted row's input and target while it streams its own.
  const auto next_counted = [&](int64_t r) {
    while (r < a.rows && load<Acc>(mask[r]) == Acc(0)) ++r;
    return r;
  };
  double total = 0.0;
  Acc xb[kLanes], tb[kLanes], gb[kLanes];
  for (int64_t r = begin; r < end; ++r) {
    const Acc m = load<Acc>(mask[r]);
    T* grad = a.grad_input ? static_cast<T*>(a.grad_input) + r * p : nullptr;
    if (m == Acc(0)) {  // masked out: the row is not read
      if (grad) {
        for (int k = 0; k < kLanes; ++k) gb[k] = Acc(0);
        for_each_block(p, [&](int64_t j, auto n) { store_gradient_block(a.stream_grad, gb, n, grad + j); });
      }
      continue;
    }
    const T* x = static_cast<const T*>(a.input) + r * p;
    const T* t = static_cast<const T*>(a.target) + r * p;
    Acc mean = Acc(0), inv_std = Acc(1);
    if (a.norm_target) {
      mean = row_sum<Acc>(p, [&](int64_t j) { return load<Acc>(t[j]); }) / Acc(p);
      const Acc centered = row_sum<Acc>(p, [&](int64_t j) {
        const Acc c = load<Acc>(t[j]) - mean;
        return c * c;
      });
      inv_std = masked_mse::inverse_std(centered, p, eps);
    }
    Acc lanes[kLanes] = {};
    const Acc gscale = m * scale;
    // Without normalisation mean = 0 and inv_std = 1, and (t - 0) * 1 is t exactly: one
    // branch-free loop over all kLanes lanes (a tail's extra lanes are not stored or summed).
    const int64_t ahead = next_counted(r + 1);
    const int64_t prefetch_offset = ahead < a.rows ? (ahead - r) * p : 0;  // 0: nothing to fetch
    for_each_block(p, [&](int64_t j, auto n) {
      if (prefetch_offset && n == kLanes) {  // full blocks only: never past the tensor's end
        prefetch_block(x + j + prefetch_offset);
        prefetch_block(t + j + prefetch_offset);
      }
      load_block(x + j, n, xb);
      load_block(t + j, n, tb);
      for (int k = 0; k < kLanes; ++k) {
        Acc sq, dx;
        masked_mse::error(xb[k], (tb[k] - mean) * inv_std, sq, dx);
        lanes[k] += k < n ? sq : Acc(0);
        gb[k] = dx * gscale;
      }
      if (grad) store_gradient_block(a.stream_grad, gb, n, grad + j);
    });
    total += double(m) * sum_lanes(lanes) / double(p);
  }
  if (a.stream_grad) finish_streaming();
  return total;
}

MaskedMseRowsFn masked_mse_for(ScalarKind kind) {
  switch (kind) {
    case ScalarKind::kFloat: return &masked_mse_rows<float>;
    case ScalarKind::kDouble: return &masked_mse_rows<double>;
    case ScalarKind::kHalf: return &masked_mse_rows<Half>;
    case ScalarKind::kBFloat16: return &masked_mse_rows<BFloat16>;
  }
  return nullptr;
}

}  // namespace
}  // namespace fastloss::cpu::FASTLOSS_ISA
