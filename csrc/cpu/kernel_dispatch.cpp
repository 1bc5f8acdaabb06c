// Chooses the CPU kernel table once per process: AVX-512, else AVX2+F16C, else baseline.
// Compiled without target flags (it only asks the CPU what it has).
#include <cstdlib>
#include <cstring>

#include "kernel_api.h"

namespace fastloss::cpu {
namespace {

bool have_avx2() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

const KernelTable& choose_kernels() {
  // FASTLOSS_CPU_ISA=baseline|avx2 caps the choice (tests compare the builds bit for bit).
  const char* cap = std::getenv("FASTLOSS_CPU_ISA");
  if (cap && std::strcmp(cap, "baseline") == 0) return kernels_default();
  if (cap && std::strcmp(cap, "avx2") == 0) return have_avx2() ? kernels_avx2() : kernels_default();
  if (have_avx512()) return kernels_avx512();
  return have_avx2() ? kernels_avx2() : kernels_default();
}

}  // namespace

const KernelTable& kernels_for_this_cpu() {
  static const KernelTable& best = choose_kernels();
  return best;
}

}  // namespace fastloss::cpu
