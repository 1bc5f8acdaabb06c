// The CPU kernels built for AVX-512 (F, BW, VL, DQ) with F16C, 512-bit vectors preferred: the
// compute-heavy formulas (BCE's exp and log1p) run twice as wide as on AVX2. Chosen at run
// time by kernels_for_this_cpu(); the summation order is the same as every other build's.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
// Standard headers first: GCC refuses to inline their always_inline parts into a function
// compiled for another target.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,f16c,fma,prefer-vector-width=512")
#include <immintrin.h>
#define FASTLOSS_HAVE_F16C 1
#define FASTLOSS_HAVE_AVX512 1
#define FASTLOSS_ISA isa_avx512
#define FASTLOSS_ISA_NAME "avx512"
#include "kernel_helpers.h"
#include "pointwise_kernels.h"
#include "masked_mse_kernels.h"
#include "row_loss_kernels.h"
#include "batch_pair_kernels.h"
#include "info_nce_kernels.h"
#include "kernel_table.h"

namespace fastloss::cpu {
bool have_avx512() {
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("fma");
}
const KernelTable& kernels_avx512() { return isa_avx512::table(); }
}  // namespace fastloss::cpu
#else
#include "kernel_api.h"
namespace fastloss::cpu {
bool have_avx512() { return false; }
const KernelTable& kernels_avx512() { return kernels_default(); }
}  // namespace fastloss::cpu
#endif
