// The pointwise-loss and sum kernels (see kernel_api.h), for one instruction set.
#include "../formulas/pointwise.h"
#include "kernel_helpers.h"

namespace fastloss::cpu::FASTLOSS_ISA {
namespace {

// Loads n <= kLanes elements of a block of `period` elements repeated end to end, starting
// at element i of the repetition.
template <typename T, typename Acc>
FASTLOSS_HD void load_periodic(const T* __restrict src, int64_t period, int64_t i, int n,
                               Acc* __restrict dst) {
  const int64_t base = i % period;
  if (base + n <= period) {  // no wrap inside this block: a plain load
    load_block(src + base, n, dst);
    return;
  }
  for (int j = 0; j < n; ++j) dst[j] = load<Acc>(src[(base + j) % period]);
  for (int j = n; j < kLanes; ++j) dst[j] = Acc(1);
}

template <typename T, typename Acc>
FASTLOSS_HD void load_operand(const void* src, int64_t period, int64_t i, int n, Acc* __restrict dst) {
  const T* p = static_cast<const T*>(src);
  if (p == nullptr) {
    for (int j = 0; j < kLanes; ++j) dst[j] = Acc(1);
  } else if (period == 0) {  // full size
    load_block(p + i, n, dst);
  } else {
    load_periodic(p, period, i, n, dst);
  }
}

// kWeight, kAux: whether weight / pos_weight are present; an absent weight is the constant 1,
// which the compiler folds away, and an absent pos_weight is `Absent` (its own formula).
// N: the block's width, the constant kLanes for a full block (see for_each_block). A full block
// of float or double data is read and written where it lies; conversions and tails go through
// local arrays (the copy costs a load and a store per vector: a tenth of BCE's instructions).
template <typename T, typename Formula, bool kWeight, bool kAux, typename N>
FASTLOSS_HD void pointwise_block(const PointwiseArgs& a, int64_t i, N n,
                                 typename AccOf<T>::type* __restrict lanes) {
  using Acc = typename AccOf<T>::type;
  constexpr bool kInPlace = std::is_same_v<T, Acc> && std::is_same_v<N, std::integral_constant<int, kLanes>>;
  Acc x_[kLanes], t_[kLanes], w[kLanes], aux[kLanes], loss_[kLanes], dx_[kLanes], dt_[kLanes];
  const Acc* x = x_;
  const Acc* t = t_;
  Acc* loss = loss_;
  Acc* dx = dx_;
  Acc* dt = dt_;
  if constexpr (kInPlace) {
    x = static_cast<const Acc*>(a.input) + i;
    t = static_cast<const Acc*>(a.target) + i;
    if (a.loss_out) loss = static_cast<Acc*>(a.loss_out) + i;
    if (a.grad_input) dx = static_cast<Acc*>(a.grad_input) + i;
    if (a.grad_target) dt = static_cast<Acc*>(a.grad_target) + i;
  } else {
    load_block(static_cast<const T*>(a.input) + i, n, x_);
    load_block(static_cast<const T*>(a.target) + i, n, t_);
  }
  if constexpr (kWeight) load_operand<T>(a.weight, a.weight_period, i, n, w);
  if constexpr (kAux) load_operand<T>(a.aux, a.aux_period, i, n, aux);
  const Acc param = Acc(a.param), scale = Acc(a.grad_scale);
  // All kLanes lanes, whatever n (a tail's extra lanes hold zeros and are not stored): a fixed
  // trip count, and `omp simd`, make the compiler turn the formula's selects into blends.
  // d_target is computed only where it is written (BCE's with pos_weight costs a tenth of
  // the formula), the choice made outside the loop so that the loop stays branch-free.
  auto lane_loop = [&](auto with_target) {
#pragma omp simd
    for (int j = 0; j < kLanes; ++j) {
      Acc l, gx, gt;
      if constexpr (kAux) {
        Formula::eval(x[j], t[j], param, aux[j], l, gx, gt);
      } else {
        Formula::eval(x[j], t[j], param, Absent{}, l, gx, gt);
      }
      const Acc wj = kWeight ? w[j] : Acc(1);
      loss[j] = l * wj;
      dx[j] = gx * wj * scale;
      if constexpr (decltype(with_target)::value) dt[j] = gt * wj * scale;
    }
  };
  if (a.grad_target) {
    lane_loop(std::true_type{});
  } else {
    lane_loop(std::false_type{});
  }
  if (!a.loss_out) {
    for (int j = 0; j < n; ++j) lanes[j] += loss[j];
  } else if constexpr (!kInPlace) {
    store_block(loss_, n, static_cast<T*>(a.loss_out) + i);
  }
  if constexpr (!kInPlace) {
    if (a.grad_input) store_block(dx_, n, static_cast<T*>(a.grad_input) + i);
    if (a.grad_target) store_block(dt_, n, static_cast<T*>(a.grad_target) + i);
  }
}

template <typename T, typename Formula, bool kWeight, bool kAux>
double pointwise_range(const PointwiseArgs& a, int64_t begin, int64_t end) {
  using Acc = typename AccOf<T>::type;
  Acc lanes[kLanes] = {};
  for_each_block(end - begin, [&](int64_t j, auto n) {
    pointwise_block<T, Formula, kWeight, kAux>(a, begin + j, n, lanes);
  });
  return sum_lanes(lanes);
}

template <typename T>
double sum_range(const void* data, int64_t begin, int64_t end) {
  using Acc = typename AccOf<T>::type;
  const T* p = static_cast<const T*>(data);
  Acc lanes[kLanes] = {};
  Acc v[kLanes];
  int64_t i = begin;
  for (; i + kLanes <= end; i += kLanes) {
    load_block(p + i, kLanes, v);
    for (int j = 0; j < kLanes; ++j) lanes[j] += v[j];
  }
  const int n = int(end - i);
  load_block(p + i, n, v);
  for (int j = 0; j < n; ++j) lanes[j] += v[j];
  return sum_lanes(lanes);
}

template <typename T>
PointwiseRangeFn pointwise_for_loss(int64_t loss, bool weight, bool aux) {
  return FASTLOSS_DISPATCH_POINTWISE_LOSS(loss, [&]() -> PointwiseRangeFn {
    if (weight) return aux ? &pointwise_range<T, Formula, true, true> : &pointwise_range<T, Formula, true, false>;
    return aux ? &pointwise_range<T, Formula, false, true> : &pointwise_range<T, Formula, false, false>;
  });
}

PointwiseRangeFn pointwise_for(ScalarKind kind, int64_t loss, bool weight, bool aux) {
  switch (kind) {
    case ScalarKind::kFloat: return pointwise_for_loss<float>(loss, weight, aux);
    case ScalarKind::kDouble: return pointwise_for_loss<double>(loss, weight, aux);
    case ScalarKind::kHalf: return pointwise_for_loss<Half>(loss, weight, aux);
    case ScalarKind::kBFloat16: return pointwise_for_loss<BFloat16>(loss, weight, aux);
  }
  return nullptr;
}

SumRangeFn sum_for(ScalarKind kind) {
  switch (kind) {
    case ScalarKind::kFloat: return &sum_range<float>;
    case ScalarKind::kDouble: return &sum_range<double>;
    case ScalarKind::kHalf: return &sum_range<Half>;
    case ScalarKind::kBFloat16: return &sum_range<BFloat16>;
  }
  return nullptr;
}

}  // namespace
}  // namespace fastloss::cpu::FASTLOSS_ISA
