// Shared by the CUDA kernels: accumulation types, 16-byte packs, the grid rule, and the
// deterministic two-stage sum (per-block partials, then one block adds them in order).
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cstdint>

#include "reduce.cuh"

namespace fastloss::cuda {

constexpr int kThreads = 256;
constexpr int kMaxBlocks = 1024;  // fixed: the split of the sum must not depend on the device

template <typename T> struct AccOf { using type = float; };
template <> struct AccOf<double> { using type = double; };

template <typename T, int N>
struct alignas(sizeof(T) * N) Pack { T v[N]; };

template <typename T, int VEC>
__global__ void __launch_bounds__(kThreads)
sum_kernel(const T* __restrict__ data, int64_t n, typename AccOf<T>::type* __restrict__ partials) {
  using Acc = typename AccOf<T>::type;
  Acc sum = Acc(0);
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t first = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t n_vec = n / VEC;
  using P = Pack<T, VEC>;
  for (int64_t v = first; v < n_vec; v += stride) {
    const P x = *reinterpret_cast<const P*>(data + v * VEC);
#pragma unroll
    for (int j = 0; j < VEC; ++j) sum += Acc(x.v[j]);
  }
  const int64_t i = n_vec * VEC + first;
  if (i < n) sum += Acc(data[i]);
  sum = block_sum(sum);
  if (threadIdx.x == 0) partials[blockIdx.x] = sum;
}

// One block: total = sum(partials) in a fixed order. Writes total * multiplier (times
// *divisor_inv when given) to out as T, and 1/total to inverse_out when given.
template <typename T>
__global__ void __launch_bounds__(1024)
finish_kernel(const typename AccOf<T>::type* __restrict__ partials, int count, double multiplier,
              const typename AccOf<T>::type* __restrict__ divisor_inv, T* __restrict__ out,
              typename AccOf<T>::type* __restrict__ inverse_out) {
  using Acc = typename AccOf<T>::type;
  Acc sum = Acc(0);
  for (int k = threadIdx.x; k < count; k += blockDim.x) sum += partials[k];
  sum = block_sum(sum);
  if (threadIdx.x == 0) {
    if (out) {
      Acc value = sum * Acc(multiplier);
      if (divisor_inv) value *= *divisor_inv;
      *out = T(value);
    }
    if (inverse_out) *inverse_out = Acc(1) / sum;
  }
}

inline int blocks_for(int64_t n, int vec) {
  const int64_t work = (n + vec - 1) / vec;
  return int(std::max<int64_t>(1, std::min<int64_t>((work + kThreads - 1) / kThreads, kMaxBlocks)));
}

inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

template <typename T>
T* ptr_or_null(const at::Tensor& t, bool present) {
  return present ? static_cast<T*>(t.data_ptr()) : nullptr;
}

template <typename T>
void launch_sum(const T* data, int64_t n, at::Tensor& partials, int blocks, cudaStream_t stream) {
  using Acc = typename AccOf<T>::type;
  constexpr int kVec = 16 / sizeof(T);
  if (aligned16(data)) {
    sum_kernel<T, kVec><<<blocks, kThreads, 0, stream>>>(data, n, partials.data_ptr<Acc>());
  } else {
    sum_kernel<T, 1><<<blocks, kThreads, 0, stream>>>(data, n, partials.data_ptr<Acc>());
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace fastloss::cuda

#define FASTLOSS_CUDA_DISPATCH_FLOATING(DTYPE, ...)                                   \
  [&] {                                                                               \
    switch (DTYPE) {                                                                  \
      case at::kFloat: { using scalar_t = float; return __VA_ARGS__(); }             \
      case at::kDouble: { using scalar_t = double; return __VA_ARGS__(); }           \
      case at::kHalf: { using scalar_t = c10::Half; return __VA_ARGS__(); }          \
      case at::kBFloat16: { using scalar_t = c10::BFloat16; return __VA_ARGS__(); }  \
      default: TORCH_CHECK(false, "fastloss: unsupported dtype ", DTYPE);            \
    }                                                                                 \
  }()
