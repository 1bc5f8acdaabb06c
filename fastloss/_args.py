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


def check_reduction(fn: str, reduction: str, choices: dict[str, int] = REDUCTIONS) -> int:
    """The id of `reduction` among `choices` (name -> id; torch's three by default)."""
    if reduction not in choices:
        # torch's words ("... is not a valid value for reduction") with what is expected
        names = [repr(name) for name in choices]
        raise ValueError(f"fastloss.{fn}: {reduction} is not a valid value for reduction: "
                         f"expected {', '.join(names[:-1])} or {names[-1]}, got {reduction!r}")
    return choices[reduction]


def check_tensor(fn: str, name: str, value) -> None:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"fastloss.{fn}: {name} must be a torch.Tensor, got {type(value).__name__}")


def check_same_device(fn: str, reference_name: str, reference: torch.Tensor, **others) -> None:
    for name, t in others.items():
        if t is not None and t.device != reference.device:
            raise RuntimeError(f"fastloss.{fn}: {name} must be on the same device as {reference_name} "
                               f"({reference.device}), got {t.device}")


HALF_DTYPES = (torch.float16, torch.bfloat16)


def autocast_float32(device: torch.device, *tensors):
    """torch.autocast's policy for the losses (they are on its float32 list): inside an
    autocast region of the tensors' device type, float16/bfloat16 operands are cast to float32
    before the loss, so it computes and returns float32 as torch's does."""
    if not (torch._C._is_any_autocast_enabled() and torch.is_autocast_enabled(device.type)):
        return tensors
    return tuple(t.float() if isinstance(t, torch.Tensor) and t.dtype in HALF_DTYPES else t for t in tensors)


def kernel_dtypes(*tensors: torch.Tensor | None) -> bool:
    """Whether every given tensor has a dtype the kernels compute in."""
    return all(t is None or t.dtype in KERNEL_DTYPES for t in tensors)


def describe(**tensors) -> str:
    return ", ".join(f"{k}: {str(v.dtype).replace('torch.', '')} {tuple(v.shape)}"
                     for k, v in tensors.items() if isinstance(v, torch.Tensor))


def run_torch(fn: str, call, **tensors) -> torch.Tensor:
    """torch's own function, for arguments the kernels do not take (integer, bool or complex
    tensors, shapes outside the kernels' layout): its result is torch's, and so is its error,
    of torch's exception type, with the call's arguments named."""
    try:
        return call()
    except (RuntimeError, TypeError, ValueError) as exc:
        try:
            wrapped = type(exc)(f"fastloss.{fn} ({describe(**tensors)}): {exc}")
        except Exception:  # an exception type that takes other arguments: torch's as it is
            raise exc from None
        raise wrapped from exc


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


def broadcast_shape(**tensors) -> torch.Size | None:
    """The shape the tensors broadcast to, or None when they do not."""
    shapes = [v.shape for v in tensors.values() if v is not None]
    try:
        return torch.broadcast_shapes(*shapes)
    except RuntimeError:
        return None
