// Helpers of the raw-pointer CPU kernels: lanes, half/bfloat16 conversions, block loads and
// stores. Included by one translation unit per instruction set (kernels_<isa>.cpp) with
// FASTLOSS_ISA naming the namespace. Work goes in blocks of kLanes elements accumulated lane
// by lane, so a sum's order is set by the indices alone: the same bits for any thread count
// and any vector width.
#pragma once  // once per translation unit; each unit is one instruction set
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "../common/macros.h"
#include "kernel_api.h"

namespace fastloss::cpu::FASTLOSS_ISA {
namespace {

constexpr int kLanes = 32;

struct Half { uint16_t bits; };
struct BFloat16 { uint16_t bits; };

template <typename T> struct AccOf { using type = float; };
template <> struct AccOf<double> { using type = double; };

FASTLOSS_HD float to_float(BFloat16 v) { return bits_to_float(uint32_t(v.bits) << 16); }
FASTLOSS_HD BFloat16 from_float_bf16(float f) {
  const uint32_t u = float_to_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return BFloat16{0x7fc0};  // NaN stays NaN
  return BFloat16{uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16)};  // round to nearest even
}

FASTLOSS_HD float to_float(Half v) {
  const uint32_t h = v.bits;
  const uint32_t sign = (h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  const uint32_t mantissa = h & 0x3ffu;
  if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24
    const float magnitude = float(mantissa) * 5.9604644775390625e-8f;
    return sign ? -magnitude : magnitude;
  }
  if (exponent == 31) return bits_to_float(sign | 0x7f800000u | (mantissa << 13));
  return bits_to_float(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}
FASTLOSS_HD Half from_float_half(float f) {
  uint32_t u = float_to_bits(f);
  const uint32_t sign = (u >> 16) & 0x8000u;
  u &= 0x7fffffffu;
  uint32_t h;
  if (u >= 0x47800000u) {  // |f| >= 65536: infinity, or NaN
    h = u > 0x7f800000u ? 0x7e00u : 0x7c00u;
  } else if (u < 0x38800000u) {  // below the smallest normal half: let the FPU round
    // Adding 0.5 puts the half-subnormal unit (2^-24) at the last mantissa bit of the sum.
    h = float_to_bits(bits_to_float(u) + 0.5f) - 0x3f000000u;
  } else {  // normal: rebias the exponent, round to nearest even on the 13 dropped bits
    const uint32_t odd = (u >> 13) & 1u;
    h = (u + 0xc8000fffu + odd) >> 13;  // 0xc8000000 = (15 - 127) << 23
  }
  return Half{uint16_t(h | sign)};
}

template <typename Acc> FASTLOSS_HD Acc load(float v) { return Acc(v); }
template <typename Acc> FASTLOSS_HD Acc load(double v) { return Acc(v); }
template <typename Acc> FASTLOSS_HD Acc load(Half v) { return Acc(to_float(v)); }
template <typename Acc> FASTLOSS_HD Acc load(BFloat16 v) { return Acc(to_float(v)); }

template <typename T> struct Store;
template <> struct Store<float> { template <typename A> static FASTLOSS_HD float of(A v) { return float(v); } };
template <> struct Store<double> { template <typename A> static FASTLOSS_HD double of(A v) { return double(v); } };
template <> struct Store<Half> { template <typename A> static FASTLOSS_HD Half of(A v) { return from_float_half(float(v)); } };
template <> struct Store<BFloat16> { template <typename A> static FASTLOSS_HD BFloat16 of(A v) { return from_float_bf16(float(v)); } };

// Loads n <= kLanes elements into registers of the accumulation type.
template <typename T, typename Acc>
FASTLOSS_HD void load_block(const T* __restrict src, int n, Acc* __restrict dst) {
#if defined(FASTLOSS_HAVE_F16C)
  if constexpr (std::is_same_v<T, Half>) {
    if (n == kLanes) {
      for (int j = 0; j < kLanes; j += 8) {
        const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + j));
        _mm256_storeu_ps(dst + j, _mm256_cvtph_ps(h));
      }
      return;
    }
  }
#endif
  for (int j = 0; j < n; ++j) dst[j] = load<Acc>(src[j]);
  for (int j = n; j < kLanes; ++j) dst[j] = Acc(0);  // defined lanes past a tail
}

template <typename T, typename Acc>
FASTLOSS_HD void store_block(const Acc* __restrict src, int n, T* __restrict dst) {
#if defined(FASTLOSS_HAVE_F16C)
  if constexpr (std::is_same_v<T, Half>) {
    if (n == kLanes) {
      for (int j = 0; j < kLanes; j += 8) {
        const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(src + j), _MM_FROUND_TO_NEAREST_INT);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + j), h);
      }
      return;
    }
  }
#endif
  for (int j = 0; j < n; ++j) dst[j] = Store<T>::of(src[j]);
}

// store_block with streaming (non-temporal) stores where they apply: a full block of float or
// double data at a 64-byte boundary (whole cache lines) on x86. Anywhere else, store_block.
// The values are the same; a kernel that streamed calls finish_streaming() before it returns.
template <typename T, typename Acc, typename N>
FASTLOSS_HD void store_block_streaming(const Acc* __restrict src, N n, T* __restrict dst) {
#if defined(__SSE2__)
  if constexpr (std::is_same_v<T, Acc> && std::is_same_v<N, std::integral_constant<int, kLanes>>) {
    if ((reinterpret_cast<uintptr_t>(dst) & 63) == 0) {
      // As wide as the instruction set goes: a whole cache line per store where it can. Written
      // 16 bytes at a time, a line held its write-combining buffer four times as long, and the
      // loads of the next row waited for buffers (the cosine losses' gradient pass ran at a
      // third of the copy's speed).
#if defined(FASTLOSS_HAVE_AVX512)  // (set by the unit: #pragma GCC target defines no __AVX512F__)
      if constexpr (std::is_same_v<T, float>) {
        for (int j = 0; j < kLanes; j += 16) _mm512_stream_ps(dst + j, _mm512_loadu_ps(src + j));
      } else {
        for (int j = 0; j < kLanes; j += 8) _mm512_stream_pd(dst + j, _mm512_loadu_pd(src + j));
      }
#elif defined(FASTLOSS_HAVE_AVX)
      if constexpr (std::is_same_v<T, float>) {
        for (int j = 0; j < kLanes; j += 8) _mm256_stream_ps(dst + j, _mm256_loadu_ps(src + j));
      } else {
        for (int j = 0; j < kLanes; j += 4) _mm256_stream_pd(dst + j, _mm256_loadu_pd(src + j));
      }
#else
      if constexpr (std::is_same_v<T, float>) {
        for (int j = 0; j < kLanes; j += 4) _mm_stream_ps(dst + j, _mm_loadu_ps(src + j));
      } else {
        for (int j = 0; j < kLanes; j += 2) _mm_stream_pd(dst + j, _mm_loadu_pd(src + j));
      }
#endif
      return;
    }
  }
#endif
  store_block(src, n, dst);
}

// A gradient block: streaming stores where the kernel was asked for them, else ordinary ones.
template <typename T, typename Acc, typename N>
FASTLOSS_HD void store_gradient_block(bool streaming, const Acc* __restrict src, N n, T* __restrict dst) {
  if (streaming) {
    store_block_streaming(src, n, dst);
  } else {
    store_block(src, n, dst);
  }
}

// Orders the streaming stores before whatever the caller does next (they are weakly ordered).
FASTLOSS_HD void finish_streaming() {
#if defined(__SSE2__)
  _mm_sfence();
#endif
}

// Calls block(j, n) over [0, len) in blocks of kLanes elements: the full blocks with n the
// compile-time constant kLanes (their loads, stores and lane loops become straight vector
// code; a run-time n leaves them as loops with a variable trip count), then one tail block.
template <typename Block>
FASTLOSS_HD void for_each_block(int64_t len, const Block& block) {
  int64_t j = 0;
  for (; j + kLanes <= len; j += kLanes) block(j, std::integral_constant<int, kLanes>{});
  if (j < len) block(j, int(len - j));
}

// Asks for the cache lines of one block of kLanes elements ahead of use, into L2 (prefetcht1:
// on the 2-core EPYC here it beat prefetcht0 and prefetchnta by 10-15% on scattered rows):
// for access patterns the hardware prefetcher cannot guess (rows skipped at random). A hint
// only, it never faults.
template <typename T>
FASTLOSS_HD void prefetch_block(const T* p) {
  constexpr int kBytes = int(kLanes * sizeof(T));
  for (int b = 0; b < kBytes; b += 64) __builtin_prefetch(reinterpret_cast<const char*>(p) + b, 0, 2);
}

// One level of sum_lanes's tree, then the next: each level's trip count a compile-time
// constant, so each is a vector add (a loop over run-time widths stayed scalar, through memory:
// 31 dependent adds, most of a 256-wide row kernel's time per row).
template <int Width, typename Acc>
FASTLOSS_HD void fold_lanes(Acc* s) {
  for (int j = 0; j < Width; ++j) s[j] += s[j + Width];
  if constexpr (Width > 1) fold_lanes<Width / 2>(s);
}

template <typename Acc>
FASTLOSS_HD double sum_lanes(const Acc* lanes) {
  // Pairwise over the lanes, a fixed tree.
  Acc s[kLanes];
  for (int j = 0; j < kLanes; ++j) s[j] = lanes[j];
  fold_lanes<kLanes / 2>(s);
  return double(s[0]);
}

}  // namespace
}  // namespace fastloss::cpu::FASTLOSS_ISA
