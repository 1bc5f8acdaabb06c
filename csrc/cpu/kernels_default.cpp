// The CPU kernels for any x86-64 (or other) CPU: the compiler's baseline target.
#define FASTLOSS_ISA isa_default
#define FASTLOSS_ISA_NAME "baseline"
#include "kernel_helpers.h"
#include "pointwise_kernels.h"
#include "masked_mse_kernels.h"
#include "row_loss_kernels.h"
#include "batch_pair_kernels.h"
#include "info_nce_kernels.h"
#include "kernel_table.h"

namespace fastloss::cpu {
const KernelTable& kernels_default() { return isa_default::table(); }
}  // namespace fastloss::cpu
