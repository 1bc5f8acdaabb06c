"""The pointwise-loss op family: custom ops per backend, autograd, and the entry point that
functional.py calls.

Contract (csrc/ops.cpp): pointwise_loss(input, target, weight?, loss, reduction, param,
need_grad_input, need_grad_target) -> (loss, grad_input, grad_target), on same-shape
contiguous tensors of one float dtype. The gradients are written in the forward pass as if
grad_output were 1; backward rescales them in place with scale_grad_, which moves no memory
when grad_output is 1 (decided on the device). Autograd, create_graph and the torch.func
transforms: the shared pattern of autograd.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .. import _args, _backend
from .. import reference as plain_formulas
from .autograd import LossFamily, apply_fused_loss


@dataclass(frozen=True)
class PointwiseLoss:
    """How one loss maps onto the pointwise-loss contract."""

    name: str                 # the public function, for error messages
    loss_id: int              # fastloss::PointwiseLoss in csrc/formulas/pointwise.h
    mean_by_weight_sum: bool  # torch's weighted "mean" divides by sum(weight) (MSE, L1), else by N
    weight_in_dtype: bool     # weight takes part in the dtype promotion (not for BCE)
    # The dtype torch returns, where it is not the promotion of the operands: torch's Huber
    # keeps input's dtype (promoted with a weight's), its BCE target's.
    result_dtype: str = "promoted"


MSE = PointwiseLoss("mse_loss", 0, mean_by_weight_sum=True, weight_in_dtype=True)
L1 = PointwiseLoss("l1_loss", 1, mean_by_weight_sum=True, weight_in_dtype=True)
SMOOTH_L1 = PointwiseLoss("smooth_l1_loss", 2, mean_by_weight_sum=False, weight_in_dtype=True)
HUBER = PointwiseLoss("huber_loss", 3, mean_by_weight_sum=False, weight_in_dtype=True, result_dtype="input")
BCE_WITH_LOGITS = PointwiseLoss("binary_cross_entropy_with_logits", 4, mean_by_weight_sum=False,
                                weight_in_dtype=False, result_dtype="target")


def _result_dtype(spec: PointwiseLoss, input: torch.Tensor, target: torch.Tensor,
                  weight: torch.Tensor | None, promoted: torch.dtype) -> torch.dtype:
    if spec.result_dtype == "input":
        return input.dtype if weight is None else torch.promote_types(input.dtype, weight.dtype)
    if spec.result_dtype == "target":
        return target.dtype
    return promoted


def _fake_pointwise_loss(input, target, weight, pos_weight, loss, reduction, param,
                         mean_by_weight_sum, need_grad_input, need_grad_target):
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
                          pos_weight: torch.Tensor | None, loss: int, reduction: int, param: float,
                          mean_by_weight_sum: bool, need_grad_input: bool,
                          need_grad_target: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The Triton kernel behind the pointwise-loss contract."""
    from fastloss.kernels import pointwise_loss as kernel  # imported late: TRITON_INTERPRET is read then

    return kernel.pointwise_loss(input, target, weight, pos_weight, loss, reduction, param,
                                 mean_by_weight_sum, need_grad_input, need_grad_target)


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


def rescale(backend: str, grad: torch.Tensor, grad_output: torch.Tensor) -> None:
    """grad *= grad_output in place (free when a 0-d grad_output is 1): every family's backward."""
    _scale_op(backend)(grad, grad_output)


def _fused(backend: str, config: tuple, needs: tuple, tensors) -> tuple[torch.Tensor, ...]:
    return _forward_op(backend)(*tensors, *config, *needs)


REDUCTION_NAMES = {v: k for k, v in _args.REDUCTIONS.items()}


def _plain(config: tuple, tensors) -> torch.Tensor:
    """The loss of the kernel's operands (same shape, one dtype; weight and pos_weight
    broadcast) in torch ops: what create_graph and the torch.func transforms differentiate."""
    loss_id, reduction_id, param, _ = config
    x, t, w, pw = tensors
    reduction = REDUCTION_NAMES[reduction_id]
    if loss_id == MSE.loss_id:
        return plain_formulas.mse_loss(x, t, reduction, w)
    if loss_id == L1.loss_id:
        return plain_formulas.l1_loss(x, t, reduction, w)
    if loss_id == SMOOTH_L1.loss_id:
        return plain_formulas.smooth_l1_loss(x, t, reduction, param)
    if loss_id == HUBER.loss_id:
        return plain_formulas.huber_loss(x, t, reduction, param, w)
    return plain_formulas.binary_cross_entropy_with_logits(x, t, w, reduction, pw)


FAMILY = LossFamily("pointwise", _fused, rescale, _plain, n_fused_grads=2)


def _operand(t: torch.Tensor, shape: torch.Size, dtype: torch.dtype) -> torch.Tensor:
    """t in the kernels' layout: input-sized and contiguous, or - when t only broadcasts over
    leading dimensions, like a per-class pos_weight - its contiguous trailing block, which the
    kernels repeat (no input-sized copy)."""
    t = t.to(dtype)
    if t.shape == shape:
        return t.contiguous()
    dims = (1,) * (len(shape) - t.dim()) + tuple(t.shape)
    for k in range(len(shape) + 1):
        if all(d == 1 for d in dims[:k]) and dims[k:] == tuple(shape[k:]):
            return t.reshape(shape[k:]).contiguous()
    return t.expand(shape).contiguous()


def pointwise_loss(spec: PointwiseLoss, input: torch.Tensor, target: torch.Tensor,
                   weight: torch.Tensor | None, pos_weight: torch.Tensor | None, reduction: str,
                   param: float, backend: str | None, reference: Callable[[], torch.Tensor],
                   torch_function: Callable[[], torch.Tensor]) -> torch.Tensor:
    """Checks, broadcasts and casts as torch does, then runs the loss on the chosen backend.

    `reference` computes the same loss with the plain formula (for the "torch" backend and
    the cases the kernels do not fuse); `torch_function` is torch's own function, for operands
    the kernels do not take (integer, bool or complex): its result, or its error, is torch's.
    """
    fn = spec.name
    _args.check_tensor(fn, "input", input)
    _args.check_tensor(fn, "target", target)
    for name, t in (("weight", weight), ("pos_weight", pos_weight)):
        if t is not None:
            _args.check_tensor(fn, name, t)
    reduction_id = _args.check_reduction(fn, reduction)
    _args.check_same_device(fn, "input", input, target=target, weight=weight, pos_weight=pos_weight)
    if torch._C._is_any_autocast_enabled() and not (weight is not None and spec.mean_by_weight_sum):
        # (torch's weighted MSE and L1 are plain Python arithmetic, which autocast leaves in the half type)
        cast = _args.autocast_float32(input.device, input, target, weight, pos_weight)
        if cast[0] is not input or cast[1] is not target:
            reference = torch_function  # torch's own function, under autocast as torch's
            input, target, weight, pos_weight = cast
    # The common call (same shape, same float dtype) skips the general promotion and
    # broadcasting rules, which cost more host time than a small kernel.
    shape, dtype = input.shape, input.dtype
    result_dtype = dtype
    same = target.shape == shape and target.dtype == dtype and (
        weight is None or (weight.shape == shape and weight.dtype == dtype)) and pos_weight is None
    if not same or dtype not in _args.KERNEL_DTYPES:
        operands = {"input": input, "target": target, "weight": weight, "pos_weight": pos_weight}
        if not _args.kernel_dtypes(*operands.values()):
            return _args.run_torch(fn, torch_function, **operands)
        promoted = {"input": input, "target": target}
        if spec.weight_in_dtype:
            promoted["weight"] = weight
        dtype = _args.result_dtype(fn, **promoted)
        result_dtype = _result_dtype(spec, input, target, weight, dtype)
        shape = _args.broadcast_shape(input=input, target=target, weight=weight, pos_weight=pos_weight)
        if shape is None:  # torch's error, in torch's words
            return _args.run_torch(fn, torch_function, **operands)
    chosen = _backend.resolve(backend, input.device)

    # The plain formula serves the "torch" backend, a weight or pos_weight that needs its own
    # gradient (not fused), and torch's quirk of a weighted mean over a broadcast shape (it
    # divides by the sum of the weight as given).
    if (chosen == "torch"
            or (weight is not None and weight.requires_grad)
            or (pos_weight is not None and pos_weight.requires_grad)
            or (weight is not None and spec.mean_by_weight_sum and reduction == "mean"
                and weight.shape != shape)):
        return reference()

    operands = []
    for t in (input, target):
        if t.shape != shape:
            t = t.expand(shape)
        operands.append(t.to(dtype).contiguous())
    for t in (weight, pos_weight):
        # not detached: a forward-mode tangent of a weight reaches the jvp rule (one requiring
        # grad took the plain formula above)
        operands.append(None if t is None else _operand(t, shape, dtype))
    config = (spec.loss_id, reduction_id, float(param), spec.mean_by_weight_sum)
    out = apply_fused_loss(FAMILY, config, chosen, operands)
    return out if result_dtype == dtype else out.to(result_dtype)
