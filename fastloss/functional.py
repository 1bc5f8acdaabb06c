"""Drop-in replacements for torch.nn.functional losses: same signatures, same results.

Every function also takes a keyword-only `backend`: "auto" (default; env FASTLOSS_BACKEND),
"cpu" (C++ kernel), "cuda" (CUDA kernel), "triton" or "torch" (the plain formula).
"""

from __future__ import annotations

import warnings

import torch

from . import _args
from .ops.pointwise import pointwise_loss

__all__ = ["mse_loss"]


def mse_loss(input: torch.Tensor, target: torch.Tensor, size_average: bool | None = None,
             reduce: bool | None = None, reduction: str = "mean",
             weight: torch.Tensor | None = None, *, backend: str = "auto") -> torch.Tensor:
    """Mean squared error, optionally weighted: torch.nn.functional.mse_loss, fused.

    Args:
        input: predictions, any shape, floating point.
        target: broadcastable with input (torch warns when the sizes differ; so does this).
        size_average, reduce: deprecated, as in torch (they override ``reduction``).
        reduction: "mean" | "sum" | "none".
        weight: per-element weights of input's size; "mean" then divides by their sum.
        backend: "auto" | "cpu" | "cuda" | "triton" | "torch".

    Returns:
        A 0-d tensor for "mean"/"sum", the broadcast shape for "none", in the promoted dtype.
    """
    _args.check_tensor("mse_loss", "input", input)
    _args.check_tensor("mse_loss", "target", target)
    if target.size() != input.size():
        warnings.warn(
            f"Using a target size ({target.size()}) that is different to the input size "
            f"({input.size()}). This will likely lead to incorrect results due to broadcasting. "
            "Please ensure they have the same size.", stacklevel=2)
    reduction = _args.legacy_reduction(size_average, reduce, reduction)
    if weight is not None:
        _args.check_tensor("mse_loss", "weight", weight)
        if weight.size() != input.size():
            raise ValueError(f"fastloss.mse_loss: weight must have input's size {tuple(input.shape)}, "
                             f"got {tuple(weight.shape)} (torch: Weights and input must have the same size.)")
    return pointwise_loss("mse_loss", "mse_loss", input, target, weight, reduction, 0.0, backend)
