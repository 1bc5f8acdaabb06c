// The kernel table of one instruction set: included last by kernels_<isa>.cpp.
namespace fastloss::cpu::FASTLOSS_ISA {

const KernelTable& table() {
  static const KernelTable t{FASTLOSS_ISA_NAME, &pointwise_for, &sum_for, &masked_mse_for, &row_loss_for,
                             &pair_tile_for, &info_nce_tile_for};
  return t;
}

}  // namespace fastloss::cpu::FASTLOSS_ISA
