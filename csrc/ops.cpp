// The op schemas: the one contract every backend implements (CPU in cpu/, CUDA in cuda/).
#include <torch/library.h>

TORCH_LIBRARY(fastloss, m) {
  // Evaluates a pointwise loss over same-shape contiguous tensors in one pass. Returns
  // (loss, grad_input, grad_target): loss is 0-d for mean/sum and input-shaped for none; each
  // gradient is d loss / d tensor as if grad_output were 1, or an empty tensor when not asked.
  m.def(
      "pointwise_loss(Tensor input, Tensor target, Tensor? weight, int loss, int reduction, "
      "float param, bool need_grad_input, bool need_grad_target) -> (Tensor, Tensor, Tensor)");
  // grad *= grad_output, in place; a no-op (decided on the device) when a 0-d grad_output is 1.
  m.def("scale_grad_(Tensor(a!) grad, Tensor grad_output) -> ()");
}
