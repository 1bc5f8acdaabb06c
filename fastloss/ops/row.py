"""The row-loss op family (contrastive, triplet margin, cosine embedding): custom ops per
backend, autograd, and the entry point that functional.py calls.

Contract (csrc/ops.cpp): row_loss(a, b, c?, label?, loss, reduction, margin, eps, p, swap,
need_grad_a, need_grad_b, need_grad_c) -> (loss, grad_a, grad_b, grad_c) on (N, D) rows of one
float dtype and an (N,) label of that dtype. Gradients are written in the forward pass;
backward rescales them with pointwise.py's scale_grad_ ops (free when grad_output is 1).
"""

from __future__ import annotations

from typing import Callable

import torch

from .. import _args, _backend
from .pointwise import _scale_op

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


class RowLossFunction(torch.autograd.Function):
    """Forward runs the fused row kernel (gradients included when needed); backward rescales
    them (per row for reduction "none"). As PointwiseLossFunction: gradients are handed over
    without a copy, and a second backward (retain_graph=True) recomputes them."""

    @staticmethod
    def forward(ctx, a, b, c, label, config, backend):
        needs = ctx.needs_input_grad[:3]
        out, *grads = _forward_op(backend)(a, b, c, label, *config, *needs)
        if any(needs):
            ctx.save_for_backward(a, b, c, label)
        ctx.grads = grads
        ctx.config = (config, backend)
        return out

    @staticmethod
    def backward(ctx, grad_output):
        needs = ctx.needs_input_grad[:3]
        config, backend = ctx.config
        if ctx.grads is None:
            a, b, c, label = ctx.saved_tensors
            _, *grads = _forward_op(backend)(a, b, c, label, *config, *needs)
        else:
            grads, ctx.grads = ctx.grads, None
        scale = grad_output if grad_output.dim() == 0 else grad_output.unsqueeze(-1)
        result = []
        for need, grad in zip(needs, grads):
            if need:
                _scale_op(backend)(grad, scale)
            result.append(grad if need else None)
        return (*result, None, None, None)


def row_loss(fn: str, loss: int, rows: list[tuple[str, torch.Tensor]], label: torch.Tensor | None,
             reduction: str, margin: float, eps: float, p: float, swap: bool, backend: str | None,
             reference: Callable[[], torch.Tensor]) -> torch.Tensor:
    """Checks rows (N, D) or (D,) and the label (N,) or 0-d, then runs the row kernel of the
    chosen backend (or `reference`, the plain formula, where the kernels do not apply)."""
    for name, t in rows:
        _args.check_tensor(fn, name, t)
    reduction_id = _args.check_reduction(fn, reduction)
    first_name, first = rows[0]
    _args.check_same_device(fn, first_name, first, **{n: t for n, t in rows[1:]},
                            **({"target": label} if label is not None else {}))
    if first.dim() not in (1, 2):
        raise ValueError(f"fastloss.{fn}: {first_name} must be (N, D) or (D,), got {tuple(first.shape)}")
    for name, t in rows[1:]:
        if t.shape != first.shape:
            raise ValueError(f"fastloss.{fn}: {name} must have {first_name}'s shape {tuple(first.shape)}, "
                             f"got {tuple(t.shape)}")
    batch = () if first.dim() == 1 else (first.shape[0],)
    if label is not None and label.shape != batch:
        raise ValueError(f"fastloss.{fn}: target must have shape {batch} (one per row), got {tuple(label.shape)}")
    dtype = _args.result_dtype(fn, **dict(rows))
    chosen = _backend.resolve(backend, first.device)
    if chosen == "torch" or (label is not None and label.requires_grad):
        return reference()
    tensors = [t.to(dtype).reshape(-1, first.shape[-1]).contiguous() for _, t in rows]
    lab = None if label is None else label.detach().to(dtype).reshape(-1).contiguous()
    while len(tensors) < 3:
        tensors.append(None)
    config = (loss, reduction_id, float(margin), float(eps), float(p), bool(swap))
    out = RowLossFunction.apply(*tensors, lab, config, chosen)
    return out.reshape(()) if first.dim() == 1 and reduction == "none" else out
