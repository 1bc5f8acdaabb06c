"""The row-loss op family (contrastive, triplet margin, cosine embedding): custom ops per
backend, autograd, and the entry point that functional.py calls.

Contract (csrc/ops.cpp): row_loss(a, b, c?, label?, loss, reduction, margin, eps, p, swap,
need_grad_a, need_grad_b, need_grad_c) -> (loss, grad_a, grad_b, grad_c) on (N, D) rows of one
float dtype and an (N,) label of that dtype. Gradients are written in the forward pass;
backward rescales them with pointwise.py's scale_grad_ ops (free when grad_output is 1).
Autograd, create_graph and the torch.func transforms: the shared pattern of autograd.py.
"""

from __future__ import annotations

from typing import Callable

import torch

from .. import _args, _backend
from .. import reference as plain_formulas
from .autograd import LossFamily, apply_fused_loss
from .pointwise import REDUCTION_NAMES, rescale

# Same numbers as fastloss::row::RowLoss (csrc/formulas/row.h) and kernels/row_loss.py.
CONTRASTIVE = {"euclidean": 0, "manhattan": 1, "cosine": 2}
TRIPLET_L2, TRIPLET_L1, TRIPLET_LP, COSINE_EMBEDDING = 3, 4, 5, 6


def _fake_row_loss(a, b, c, label, loss, reduction, margin, eps, p, swap, need_a, need_b, need_c):
    out = a.new_empty(a.shape[0]) if reduction == 0 else a.new_empty(())
    grads = [torch.empty_like(a) if need else a.new_empty(0) for need in (need_a, need_b, need_c and c is not None)]
    return (out, *grads)


if _backend.cpu_built() and hasattr(torch.ops.fastloss, "row_loss"):
    torch.library.register_fake("fastloss::row_loss")(_fake_row_loss)


@torch.library.custom_op("fastloss::row_loss_triton", mutates_args=())
def row_loss_triton(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor | None, label: torch.Tensor | None,
                    loss: int, reduction: int, margin: float, eps: float, p: float, swap: bool,
                    need_grad_a: bool, need_grad_b: bool,
                    need_grad_c: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The Triton kernel behind the row-loss contract."""
    from fastloss.kernels import row_loss as kernel  # imported late: TRITON_INTERPRET is read then

    return kernel.row_loss(a, b, c, label, loss, reduction, margin, eps, p, swap, need_grad_a, need_grad_b,
                           need_grad_c)


row_loss_triton.register_fake(_fake_row_loss)


def _forward_op(backend: str):
    if backend == "triton":
        return torch.ops.fastloss.row_loss_triton
    return torch.ops.fastloss.row_loss


def _fused(backend: str, config: tuple, needs: tuple, tensors) -> tuple[torch.Tensor, ...]:
    return _forward_op(backend)(*tensors, *config, *needs)


def _rescale(backend: str, grad: torch.Tensor, grad_output: torch.Tensor) -> None:
    # reduction "none": one grad_output per row, for each of its D values
    rescale(backend, grad, grad_output if grad_output.dim() == 0 else grad_output.unsqueeze(-1))


DISTANCE_NAMES = {v: k for k, v in CONTRASTIVE.items()}
NORM_ORDERS = {TRIPLET_L2: 2.0, TRIPLET_L1: 1.0}


def _plain(config: tuple, tensors) -> torch.Tensor:
    """The row loss of (N, D) rows in torch ops: what create_graph and the torch.func
    transforms differentiate."""
    loss, reduction_id, margin, eps, p, swap = config
    a, b, c, label = tensors
    reduction = REDUCTION_NAMES[reduction_id]
    if loss in DISTANCE_NAMES:
        return plain_formulas.contrastive_loss(a, b, label, margin, DISTANCE_NAMES[loss], reduction, eps)
    if loss == COSINE_EMBEDDING:
        return plain_formulas.cosine_embedding_loss(a, b, label, margin, reduction)
    return plain_formulas.triplet_margin_loss(a, b, c, margin, NORM_ORDERS.get(loss, p), eps, swap, reduction)


FAMILY = LossFamily("row", _fused, _rescale, _plain, n_fused_grads=3)


def row_loss(fn: str, loss: int, rows: list[tuple[str, torch.Tensor]], label: torch.Tensor | None,
             reduction: str, margin: float, eps: float, p: float, swap: bool, backend: str | None,
             reference: Callable[[], torch.Tensor],
             torch_function: Callable[[], torch.Tensor] | None = None,
             max_dim: int | None = None) -> torch.Tensor:
    """Checks rows (..., D) of one shape and the label (one per row), then runs the row kernel
    of the chosen backend (or `reference`, the plain formula, where the kernels do not apply).

    `torch_function`, for the losses torch has: torch's own function, which takes every call
    outside the kernels' layout (other shapes, integer or complex dtypes), so that what torch
    accepts gives torch's result and what it rejects raises torch's error. `max_dim`: the most
    dimensions torch takes (cosine embedding: 2).
    """
    for name, t in rows:
        _args.check_tensor(fn, name, t)
    reduction_id = _args.check_reduction(fn, reduction)
    first_name, first = rows[0]
    _args.check_same_device(fn, first_name, first, **dict(rows[1:]), **({"target": label} if label is not None else {}))
    if torch_function is not None and torch._C._is_any_autocast_enabled():
        # torch's own losses: autocast computes them in float32
        cast = _args.autocast_float32(first.device, *(t for _, t in rows))
        if any(c is not t for c, (_, t) in zip(cast, rows)):
            reference = torch_function  # torch's own function, under autocast as torch's
            rows = list(zip([n for n, _ in rows], cast))
            first = rows[0][1]
    batch = first.shape[:-1]
    in_layout = (1 <= first.dim() <= (max_dim or first.dim()) and all(t.shape == first.shape for _, t in rows)
                 and (label is None or label.shape == batch))
    if torch_function is not None:
        label_ok = label is None or not label.dtype.is_complex
        if not (in_layout and label_ok and _args.kernel_dtypes(*(t for _, t in rows))):
            return _args.run_torch(fn, torch_function, **dict(rows), target=label)
    elif not in_layout:
        if first.dim() == 0:
            raise ValueError(f"fastloss.{fn}: {first_name} must be (..., D) rows, got a 0-d tensor")
        for name, t in rows[1:]:
            if t.shape != first.shape:
                raise ValueError(f"fastloss.{fn}: {name} must have {first_name}'s shape {tuple(first.shape)}, "
                                 f"got {tuple(t.shape)}")
        raise ValueError(f"fastloss.{fn}: target must have shape {tuple(batch)} (one per row), "
                         f"got {tuple(label.shape)}")
    dtype = first.dtype
    if dtype not in _args.KERNEL_DTYPES or any(t.dtype != dtype for _, t in rows):
        dtype = _args.result_dtype(fn, **dict(rows))
    chosen = _backend.resolve(backend, first.device)
    if chosen == "torch" or (label is not None and label.requires_grad):
        return reference()
    d = first.shape[-1]
    tensors = [t.to(dtype).reshape(-1, d).contiguous() for _, t in rows]
    lab = None if label is None else label.to(dtype).reshape(-1).contiguous()  # its tangent reaches jvp
    while len(tensors) < 3:
        tensors.append(None)
    config = (loss, reduction_id, float(margin), float(eps), float(p), bool(swap))
    tensors.append(lab)
    out = apply_fused_loss(FAMILY, config, chosen, tensors)
    return out.reshape(batch) if reduction == "none" else out
