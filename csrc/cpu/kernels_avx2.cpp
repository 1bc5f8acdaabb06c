// The CPU kernels built for AVX2 with F16C (half <-> float in hardware). Chosen at run
// time by kernels_for_this_cpu(); the summation order is the same as the default build's.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#pragma GCC target("avx2,f16c")
#include <immintrin.h>

#include <cstdlib>
#include <string>
#define FASTLOSS_HAVE_F16C 1
#define FASTLOSS_ISA isa_avx2
#define FASTLOSS_ISA_NAME "avx2+f16c"
#include "kernel_helpers.h"
#include "pointwise_kernels.h"
#include "masked_mse_kernels.h"
#include "kernel_table.h"

namespace fastloss::cpu {
const KernelTable& kernels_avx2() { return isa_avx2::table(); }
namespace {
const KernelTable& choose_kernels() {
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
  // FASTLOSS_CPU_ISA=baseline|avx2 caps the choice (tests compare the builds bit for bit).
  const char* cap = std::getenv("FASTLOSS_CPU_ISA");
  const std::string want = cap ? cap : "";
  if (want == "baseline") return kernels_default();
  if (want == "avx2") return avx2 ? kernels_avx2() : kernels_default();
  if (have_avx512()) return kernels_avx512();
  return avx2 ? kernels_avx2() : kernels_default();
}
}  // namespace

const KernelTable& kernels_for_this_cpu() {
  static const KernelTable& best = choose_kernels();
  return best;
}
}  // namespace fastloss::cpu
#else
#include "kernel_api.h"
namespace fastloss::cpu {
const KernelTable& kernels_avx2() { return kernels_default(); }
const KernelTable& kernels_for_this_cpu() { return kernels_default(); }
}  // namespace fastloss::cpu
#endif
