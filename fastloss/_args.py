"""Argument checks and torch's argument conventions, shared by every loss."""

from __future__ import annotations

import torch

REDUCTIONS = {"none": 0, "mean": 1, "sum": 2}
KERNEL_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def legacy_reduction(size_average: bool | None, reduce: bool | None, reduction: str) -> str:
    """torch's rule for the deprecated size_average/reduce pair (they win over reduction)."""
    if size_average is None and reduce is None:
        return reduction
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    if not reduce:
        return "none"
    return "mean" if size_average else "sum"


def check_reduction(fn: str, reduction: str) -> int:
    if reduction not in REDUCTIONS:
        raise ValueError(f"fastloss.{fn}: reduction must be 'none', 'mean' or 'sum', got {reduction!r}")
    return REDUCTIONS[reduction]


def check_tensor(fn: str, name: str, value) -> None:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"fastloss.{fn}: {name} must be a torch.Tensor, got {type(value).__name__}")


def check_same_device(fn: str, reference_name: str, reference: torch.Tensor, **others) -> None:
    for name, t in others.items():
        if t is not None and t.device != reference.device:
            raise RuntimeError(f"fastloss.{fn}: {name} must be on the same device as {reference_name} "
                               f"({reference.device}), got {t.device}")


def result_dtype(fn: str, **tensors) -> torch.dtype:
    """The dtype torch computes the loss in: the promotion of the operands, which must be
    floating point."""
    dtype = None
    for t in tensors.values():
        if t is not None:
            dtype = t.dtype if dtype is None else torch.promote_types(dtype, t.dtype)
    if dtype not in KERNEL_DTYPES:
        got = ", ".join(f"{k}={v.dtype}" for k, v in tensors.items() if v is not None)
        raise TypeError(f"fastloss.{fn}: expected floating-point tensors (float32, float64, float16 or "
                        f"bfloat16), got {got}")
    return dtype


def broadcast_shape(fn: str, **tensors) -> torch.Size:
    shapes = {k: v.shape for k, v in tensors.items() if v is not None}
    try:
        return torch.broadcast_shapes(*shapes.values())
    except RuntimeError as exc:
        got = ", ".join(f"{k} {tuple(s)}" for k, s in shapes.items())
        raise RuntimeError(f"fastloss.{fn}: shapes do not broadcast: {got}") from exc
