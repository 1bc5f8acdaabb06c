// The CPU kernels built for AVX2 with F16C (half <-> float in hardware). Chosen at run
// time by kernels_for_this_cpu() (kernel_dispatch.cpp); the summation order is the same as the
// default build's.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
// Standard headers first: GCC refuses to inline their always_inline parts into a function
// compiled for another target.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#pragma GCC target("avx2,f16c,fma")
#include <immintrin.h>
#define FASTLOSS_HAVE_F16C 1
#define FASTLOSS_HAVE_AVX 1
#define FASTLOSS_ISA isa_avx2
#define FASTLOSS_ISA_NAME "avx2+f16c"
#include "kernel_helpers.h"
#include "pointwise_kernels.h"
#include "masked_mse_kernels.h"
#include "row_loss_kernels.h"
#include "batch_pair_kernels.h"
#include "info_nce_kernels.h"
#include "kernel_table.h"

namespace fastloss::cpu {
const KernelTable& kernels_avx2() { return isa_avx2::table(); }
}  // namespace fastloss::cpu
#else
#include "kernel_api.h"
namespace fastloss::cpu {
const KernelTable& kernels_avx2() { return kernels_default(); }
}  // namespace fastloss::cpu
#endif
