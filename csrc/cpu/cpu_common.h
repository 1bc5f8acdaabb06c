// Shared by the CPU ops: the dtype mapping and the deterministic chunked parallel sum.
#pragma once
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

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

// Large outputs (16 MiB and more: gradients of big tensors) come from a small cache of mapped
// blocks with transparent huge pages. A fresh 128 MiB output otherwise costs about 30 ms of
// first-touch page faults here (glibc returns big blocks to the OS on free), several times the
// kernel; huge pages cut the faults 512-fold, and a block freed by its tensor is kept for the
// next output of the same size, so a training loop pays no faults at all. The cache holds up to
// FASTLOSS_OUTPUT_CACHE_MB (default 1024) in all; past that the blocks returned longest ago go
// back to the OS first, so sizes no longer in use make room for the current ones (keeping the
// block just returned instead left a changed workload faulting on every call).
// FASTLOSS_OUTPUT_CACHE_MB=0 turns this off.
class OutputBlockCache {
 public:
  static OutputBlockCache& instance() {
    static OutputBlockCache* cache = new OutputBlockCache();  // never destroyed: tensors may outlive exit
    return *cache;
  }

  void* take(size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      for (size_t i = free_.size(); i-- > 0;) {  // the most recently returned block of that size
        if (free_[i].bytes == bytes) {
          void* p = free_[i].data;
          free_.erase(free_.begin() + std::ptrdiff_t(i));
          cached_ -= bytes;
          return p;
        }
      }
    }
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return nullptr;
    madvise(p, bytes, MADV_HUGEPAGE);  // advice only: small pages where refused
    return p;
#else
    return nullptr;
#endif
  }

  void give_back(void* p, size_t bytes) {
    std::vector<Block> evicted{{p, bytes}};
    if (bytes <= limit_) {
      evicted.clear();
      std::lock_guard<std::mutex> lock(mutex_);
      free_.push_back({p, bytes});
      cached_ += bytes;
      size_t oldest = 0;
      while (cached_ > limit_ && oldest < free_.size()) {
        cached_ -= free_[oldest].bytes;
        evicted.push_back(free_[oldest++]);
      }
      free_.erase(free_.begin(), free_.begin() + std::ptrdiff_t(oldest));
    }
#if defined(__linux__)
    for (const Block& b : evicted) munmap(b.data, b.bytes);  // outside the lock
#endif
  }

  bool enabled() const { return limit_ > 0; }

  // Returns every free block to the OS (fastloss.empty_cache()); blocks held by tensors are not
  // in the cache: they come back when their tensor is freed, and are then kept or not as usual.
  // Returns the bytes released.
  size_t release_free() {
    std::vector<Block> released;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      released.swap(free_);
      cached_ = 0;
    }
    size_t bytes = 0;
    for (const Block& b : released) {
      bytes += b.bytes;
#if defined(__linux__)
      munmap(b.data, b.bytes);  // outside the lock
#endif
    }
    return bytes;
  }

  struct Info {
    size_t blocks, bytes, limit;
  };
  Info info() {
    std::lock_guard<std::mutex> lock(mutex_);
    return {free_.size(), cached_, limit_};
  }

  std::vector<size_t> block_sizes() {
    std::lock_guard<std::mutex> lock(mutex_);
    std::vector<size_t> sizes;
    for (const Block& b : free_) sizes.push_back(b.bytes);
    return sizes;
  }

 private:
  struct Block {
    void* data;
    size_t bytes;
  };
  OutputBlockCache() {
    const char* v = std::getenv("FASTLOSS_OUTPUT_CACHE_MB");
    limit_ = size_t(v ? std::max(0L, std::atol(v)) : 1024L) << 20;
  }
  std::mutex mutex_;
  std::vector<Block> free_;  // in the order returned: the front goes first
  size_t cached_ = 0;
  size_t limit_ = 0;
};

// An uninitialised tensor for a kernel's output (see OutputBlockCache for large ones).
inline at::Tensor empty_output(at::IntArrayRef sizes, const at::TensorOptions& options) {
  int64_t numel = 1;
  for (int64_t s : sizes) numel *= s;
  const size_t bytes = size_t(numel) * c10::elementSize(c10::typeMetaToScalarType(options.dtype()));
  OutputBlockCache& cache = OutputBlockCache::instance();
  if (bytes >= (size_t(16) << 20) && cache.enabled()) {
    if (void* p = cache.take(bytes)) {
      return at::from_blob(p, sizes, [bytes](void* q) { OutputBlockCache::instance().give_back(q, bytes); },
                           options);
    }
  }
  return at::empty(sizes, options);
}

}  // namespace fastloss::cpu
