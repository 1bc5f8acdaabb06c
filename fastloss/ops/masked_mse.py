"""The masked patch-MSE op family: custom ops per backend, autograd, and the entry point that
functional.py calls.

Contract (csrc/ops.cpp): masked_mse_loss(input, target, mask, norm_target, eps,
need_grad_input) -> (loss, grad_input) on (R, P) rows and an (R,) mask of input's dtype. The
gradient of input is written in the forward pass; backward rescales it (pointwise.py's
scale_grad_ ops), free when grad_output is 1. Autograd, create_graph and the torch.func
transforms: the shared pattern of autograd.py.
"""

from __future__ import annotations

from typing import Callable

import torch

from .. import _args, _backend
from .. import reference as plain_formulas
from .autograd import LossFamily, apply_fused_loss
from .pointwise import rescale


def _fake_masked_mse(input, target, mask, norm_target, eps, need_grad_input):
    grad = torch.empty_like(input) if need_grad_input else input.new_empty(0)
    return input.new_empty(()), grad


if _backend.cpu_built():
    torch.library.register_fake("fastloss::masked_mse_loss")(_fake_masked_mse)


@torch.library.custom_op("fastloss::masked_mse_loss_triton", mutates_args=())
def masked_mse_loss_triton(input: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                           norm_target: bool, eps: float,
                           need_grad_input: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The Triton kernel behind the masked patch-MSE contract."""
    from fastloss.kernels import masked_mse as kernel  # imported late: TRITON_INTERPRET is read then

    return kernel.masked_mse_loss(input, target, mask, norm_target, eps, need_grad_input)


masked_mse_loss_triton.register_fake(_fake_masked_mse)


def _forward_op(backend: str):
    if backend == "triton":
        return torch.ops.fastloss.masked_mse_loss_triton
    return torch.ops.fastloss.masked_mse_loss


def _fused(backend: str, config: tuple, needs: tuple, tensors) -> tuple[torch.Tensor, ...]:
    return _forward_op(backend)(*tensors, *config, *needs)


def _plain(config: tuple, tensors) -> torch.Tensor:
    """The loss of (R, P) rows and an (R,) mask in torch ops: what create_graph and the
    torch.func transforms differentiate."""
    norm_target, eps = config
    return plain_formulas.masked_mse_loss(*tensors, norm_target, eps)


FAMILY = LossFamily("masked_mse", _fused, rescale, _plain, n_fused_grads=1)


def masked_mse_loss(input: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                    norm_target: bool, eps: float, backend: str | None,
                    reference: Callable[[], torch.Tensor]) -> torch.Tensor:
    """Checks the patch layout, then runs the row kernel of the chosen backend (or
    `reference`, the plain formula, where the kernels do not apply)."""
    fn = "masked_mse_loss"
    _args.check_tensor(fn, "input", input)
    _args.check_tensor(fn, "target", target)
    _args.check_tensor(fn, "mask", mask)
    _args.check_same_device(fn, "input", input, target=target, mask=mask)
    if input.dim() < 2:
        raise ValueError(f"fastloss.{fn}: input must be (N, L, P) patches (at least 2-d), got {tuple(input.shape)}")
    if target.shape != input.shape:
        raise ValueError(f"fastloss.{fn}: target must have input's shape {tuple(input.shape)}, got {tuple(target.shape)}")
    if mask.shape != input.shape[:-1]:
        raise ValueError(f"fastloss.{fn}: mask must have input's shape without the last dimension "
                         f"{tuple(input.shape[:-1])}, got {tuple(mask.shape)}")
    if mask.dtype.is_complex:
        raise TypeError(f"fastloss.{fn}: mask must be bool, integer or floating point, got {mask.dtype}")
    dtype = _args.result_dtype(fn, input=input, target=target)
    chosen = _backend.resolve(backend, input.device)
    # Gradients for target or a float mask are not fused: the plain formula gives them.
    if chosen == "torch" or target.requires_grad or mask.requires_grad:
        return reference()
    p = input.shape[-1]
    x = input.to(dtype).reshape(-1, p).contiguous()
    t = target.to(dtype).reshape(-1, p).contiguous()
    m = mask.to(dtype).reshape(-1).contiguous()
    return apply_fused_loss(FAMILY, (bool(norm_target), float(eps)), chosen, [x, t, m])
