// Deterministic block reduction: warp shuffles, then one warp over the per-warp sums. The
// order depends only on blockDim, so the same launch gives the same bits every run.
#pragma once

namespace fastloss::cuda {

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
  return v;
}

// Sum over the warp, valid in every lane (butterfly: the same order in each).
template <typename T>
__device__ __forceinline__ T warp_all_sum(T v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// Sum over the block, valid in thread 0. blockDim.x must be a multiple of 32, at most 1024.
template <typename T>
__device__ __forceinline__ T block_sum(T v) {
  __shared__ T warp_sums[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_sum(v);
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < int(blockDim.x >> 5) ? warp_sums[lane] : T(0);
    v = warp_sum(v);
  }
  __syncthreads();  // warp_sums may be reused by a later call
  return v;
}

}  // namespace fastloss::cuda
