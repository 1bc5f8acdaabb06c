"""The benchmark cases, shared by the pytest-benchmark suite and the report: each provider's
MSE training step (forward + backward) and the bytes that step must move."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

import fastloss

Step = Callable[[torch.Tensor, torch.Tensor], None]


def make_inputs(n: int, dtype: torch.dtype, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(n, dtype=dtype, device=device).requires_grad_()
    t = torch.randn(n, dtype=dtype, device=device)
    return x, t


def mse_bytes(n: int, dtype: torch.dtype) -> int:
    """The least a forward+backward must move: read input and target, write grad_input."""
    return 3 * n * torch.empty((), dtype=dtype).element_size()


def fastloss_step(backend: str) -> Step:
    def step(x, t):
        x.grad = None
        fastloss.mse_loss(x, t, backend=backend).backward()
    return step


def eager_step() -> Step:
    def step(x, t):
        x.grad = None
        F.mse_loss(x, t).backward()
    return step


def compiled_step() -> Step:
    compiled = torch.compile(lambda x, t: F.mse_loss(x, t), dynamic=False)

    def step(x, t):
        x.grad = None
        compiled(x, t).backward()
    return step


def providers(device: str) -> dict[str, Callable[[], Step]]:
    """Provider name -> factory of its step, for the backends that run on `device`."""
    found: dict[str, Callable[[], Step]] = {}
    available = fastloss.available_backends()
    if device == "cpu":
        if available["cpu"]:
            found["fastloss-cpu"] = lambda: fastloss_step("cpu")
    else:
        if available["cuda"]:
            found["fastloss-cuda"] = lambda: fastloss_step("cuda")
        if available["triton"]:
            found["fastloss-triton"] = lambda: fastloss_step("triton")
    found["torch-eager"] = eager_step
    found["torch-compile"] = compiled_step
    return found


def copy_step(n: int, dtype: torch.dtype, device: str) -> tuple[Callable[[], None], int]:
    """A device copy of n elements into memory already touched, and the bytes it moves."""
    src = torch.randn(n, dtype=dtype, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    return (lambda: dst.copy_(src)), 2 * src.numel() * src.element_size()
