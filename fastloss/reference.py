"""Plain-torch formulas of every loss: the test oracle, and the "torch" backend.

Written as the loss is defined, not as a kernel computes it, so that autograd through these
gives the reference gradients.
"""

from __future__ import annotations

import torch


def reduce(loss: torch.Tensor, reduction: str, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Apply a reduction to an elementwise (already weighted) loss; a weighted mean divides by
    the sum of the weights, as torch's weighted losses do."""
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if weight is not None:
        return loss.sum() / weight.sum()  # torch sums the weight as given, not broadcast
    return loss.mean()


def mse_loss(input: torch.Tensor, target: torch.Tensor, reduction: str = "mean",
             weight: torch.Tensor | None = None) -> torch.Tensor:
    """mean/sum/none of weight * (input - target)^2, broadcasting input and target."""
    loss = (input - target) ** 2
    if weight is not None:
        loss = loss * weight
    return reduce(loss, reduction, weight)
