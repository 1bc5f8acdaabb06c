"""nn.Module drop-ins: subclasses of the torch losses, so constructors and attributes match."""

from __future__ import annotations

import torch

from . import functional

__all__ = ["MSELoss"]


class MSELoss(torch.nn.MSELoss):
    """torch.nn.MSELoss computed by fastloss's fused kernels.

    Same constructor as torch.nn.MSELoss, plus a keyword-only ``backend``
    ("auto" | "cpu" | "cuda" | "triton" | "torch").
    """

    def __init__(self, size_average: bool | None = None, reduce: bool | None = None,
                 reduction: str = "mean", *, backend: str = "auto") -> None:
        super().__init__(size_average, reduce, reduction)
        self.backend = backend

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return functional.mse_loss(input, target, reduction=self.reduction, backend=self.backend)
