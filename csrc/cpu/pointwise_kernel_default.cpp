// The pointwise kernels for any x86-64 (or other) CPU: the compiler's baseline target.
#define FASTLOSS_ISA isa_default
#define FASTLOSS_ISA_NAME "baseline"
#include "pointwise_kernel_impl.h"

namespace fastloss::cpu {
const KernelTable& kernels_default() { return isa_default::table(); }
}  // namespace fastloss::cpu
