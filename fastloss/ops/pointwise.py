"""The pointwise-loss op family: custom ops per backend, autograd, and the entry point that
functional.py calls.

Contract (csrc/ops.cpp): pointwise_loss(input, target, weight?, loss, reduction, param,
need_grad_input, need_grad_target) -> (loss, grad_input, grad_target), on same-shape
contiguous tensors of one float dtype. The gradients are written in the forward pass as if
grad_output were 1; backward rescales them in place with scale_grad_, which moves no memory
when grad_output is 1 (decided on the device).
"""

from __future__ import annotations

import torch

from .. import _args, _backend, reference

# Same numbers as fastloss::PointwiseLoss (csrc/formulas/pointwise.h) and kernels/pointwise_loss.py.
LOSS_IDS = {"mse_loss": 0}


def _fake_pointwise_loss(input, target, weight, loss, reduction, param, need_grad_input, need_grad_target):
    loss_out = torch.empty_like(input) if reduction == 0 else input.new_empty(())
    grad_input = torch.empty_like(input) if need_grad_input else input.new_empty(0)
    grad_target = torch.empty_like(input) if need_grad_target else input.new_empty(0)
    return loss_out, grad_input, grad_target


if _backend.cpu_built():
    torch.library.register_fake("fastloss::pointwise_loss")(_fake_pointwise_loss)

    @torch.library.register_fake("fastloss::scale_grad_")
    def _fake_scale_grad(grad, grad_output):
        return None


@torch.library.custom_op("fastloss::pointwise_loss_triton", mutates_args=())
def pointwise_loss_triton(input: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None,
                          loss: int, reduction: int, param: float, need_grad_input: bool,
                          need_grad_target: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The Triton kernel behind the pointwise-loss contract."""
    from fastloss.kernels import pointwise_loss as kernel  # imported late: TRITON_INTERPRET is read then

    return kernel.pointwise_loss(input, target, weight, loss, reduction, param, need_grad_input,
                                 need_grad_target)


pointwise_loss_triton.register_fake(_fake_pointwise_loss)


@torch.library.custom_op("fastloss::scale_grad_triton_", mutates_args=("grad",))
def scale_grad_triton_(grad: torch.Tensor, grad_output: torch.Tensor) -> None:
    """grad *= grad_output with the Triton kernel; free when a 0-d grad_output is 1."""
    from fastloss.kernels import pointwise_loss as kernel

    kernel.scale_grad_(grad, grad_output)


@scale_grad_triton_.register_fake
def _fake_scale_grad_triton(grad, grad_output):
    return None


def _forward_op(backend: str):
    if backend == "triton":
        return torch.ops.fastloss.pointwise_loss_triton
    return torch.ops.fastloss.pointwise_loss


def _scale_op(backend: str):
    if backend == "triton":
        return torch.ops.fastloss.scale_grad_triton_
    return torch.ops.fastloss.scale_grad_


class PointwiseLossFunction(torch.autograd.Function):
    """Forward runs the fused op (gradients included when needed); backward rescales them.

    The gradients are held on ctx rather than saved: backward hands them to autograd and drops
    its own reference, so autograd can keep them as .grad without a copy. A second backward
    through the same graph (retain_graph=True) finds them gone and recomputes them from the
    saved inputs.
    """

    @staticmethod
    def forward(ctx, input, target, weight, loss_id, reduction, param, backend):
        need_gi, need_gt = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        loss, grad_input, grad_target = _forward_op(backend)(
            input, target, weight, loss_id, reduction, param, need_gi, need_gt)
        if need_gi or need_gt:
            ctx.save_for_backward(input, target, weight)
        ctx.grads = (grad_input, grad_target)
        ctx.config = (loss_id, reduction, param, backend)
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        need_gi, need_gt = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        loss_id, reduction, param, backend = ctx.config
        if ctx.grads is None:  # an earlier backward consumed them: recompute
            input, target, weight = ctx.saved_tensors
            _, grad_input, grad_target = _forward_op(backend)(
                input, target, weight, loss_id, reduction, param, need_gi, need_gt)
        else:
            grad_input, grad_target = ctx.grads
            ctx.grads = None
        scale = _scale_op(backend)
        if need_gi:
            scale(grad_input, grad_output)
        if need_gt:
            scale(grad_target, grad_output)
        return (grad_input if need_gi else None, grad_target if need_gt else None,
                None, None, None, None, None)


def pointwise_loss(fn: str, loss: str, input: torch.Tensor, target: torch.Tensor,
                   weight: torch.Tensor | None, reduction: str, param: float,
                   backend: str | None) -> torch.Tensor:
    """Checks, broadcasts and casts as torch does, then runs `loss` on the chosen backend.

    fn names the public function in error messages.
    """
    _args.check_tensor(fn, "input", input)
    _args.check_tensor(fn, "target", target)
    if weight is not None:
        _args.check_tensor(fn, "weight", weight)
    reduction_id = _args.check_reduction(fn, reduction)
    _args.check_same_device(fn, "input", input, target=target, weight=weight)
    # The common call (same shape, same float dtype) skips the general promotion and
    # broadcasting rules, which cost more host time than a small kernel.
    shape, dtype = input.shape, input.dtype
    same = target.shape == shape and target.dtype == dtype and (
        weight is None or (weight.shape == shape and weight.dtype == dtype))
    if not same or dtype not in _args.KERNEL_DTYPES:
        dtype = _args.result_dtype(fn, input=input, target=target, weight=weight)
        shape = _args.broadcast_shape(fn, input=input, target=target, weight=weight)
    chosen = _backend.resolve(backend, input.device)

    # The plain formula serves the "torch" backend, a weight that needs its own gradient
    # (not fused), and torch's quirk of a weighted mean over a broadcast shape (it divides by
    # the sum of the weight as given).
    if (chosen == "torch" or (weight is not None and weight.requires_grad)
            or (weight is not None and reduction == "mean" and weight.shape != shape)):
        return getattr(reference, loss)(input, target, reduction, weight)

    operands = []
    for t in (input, target, weight):
        if t is None:
            operands.append(None)
            continue
        if t.shape != shape:
            t = t.expand(shape)
        operands.append(t.to(dtype).contiguous())
    return PointwiseLossFunction.apply(*operands, LOSS_IDS[loss], reduction_id, float(param), chosen)
