// The tile walk of the in-batch CUDA ops (batch_pair_loss.cu, info_nce_loss.cu): tiles of
// kTile x kTile inner products by cuBLAS (at::mm_out, which follows torch's TF32 setting) into one
// reused buffer, handed to the op's epilogue in launch order on the current stream.
#pragma once
#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>

namespace fastloss::cuda {

constexpr int64_t kTile = 4096;

// Calls body(i0, rows, j0, cols, dots) for every tile of rows x against rows y, the tile's inner
// products in dots (rows x cols, contiguous, writable), in launch order on the current stream.
template <typename Body>
void for_each_tile(const at::Tensor& x, const at::Tensor& y, const Body& body) {
  const int64_t n = x.size(0), m = y.size(0);
  at::Tensor buffer = at::empty({std::min(n, kTile) * std::min(m, kTile)}, x.options());
  for (int64_t i0 = 0; i0 < n; i0 += kTile) {
    const int64_t rows = std::min(kTile, n - i0);
    for (int64_t j0 = 0; j0 < m; j0 += kTile) {
      const int64_t cols = std::min(kTile, m - j0);
      at::Tensor dots = buffer.narrow(0, 0, rows * cols).view({rows, cols});
      at::mm_out(dots, x.narrow(0, i0, rows), y.narrow(0, j0, cols).t());
      body(i0, rows, j0, cols, dots);
    }
  }
}

}  // namespace fastloss::cuda
