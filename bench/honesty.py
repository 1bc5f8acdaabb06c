"""The check every provider passes before it is timed: its loss (and, when the mode computes
them, its gradients) against a float64 evaluation of the same inputs. A provider that disagrees
beyond its dtype's tolerance is flagged in the report and never ranked."""

from __future__ import annotations

from typing import Callable

import torch

# relative tolerance of the loss and of the gradients' norm, by the provider's dtype: float32
# sums of 2^25 terms stay within about 1e-6; bfloat16 rounds every value to 2^-9
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 2e-2, torch.float16: 5e-3, torch.float64: 1e-10}


def _as_float64(inputs: tuple) -> tuple:
    out = []
    for t in inputs:
        if isinstance(t, torch.Tensor) and t.is_floating_point():
            t = t.detach().double().requires_grad_(t.requires_grad)
        out.append(t)
    return tuple(out)


def _grad_leaves(inputs: tuple) -> list[torch.Tensor]:
    return [t for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad]


def evaluate(fn: Callable, inputs: tuple, kwargs: dict, with_grads: bool) -> tuple[torch.Tensor, list]:
    """fn's loss on `inputs` and, if asked, the gradients of its inputs that require grad."""
    if not with_grads:
        with torch.no_grad():
            return fn(*inputs, **kwargs).detach(), []
    loss = fn(*inputs, **kwargs)
    return loss.detach(), list(torch.autograd.grad(loss, _grad_leaves(inputs)))


def reference(fn: Callable, inputs: tuple, kwargs: dict) -> tuple[torch.Tensor, list]:
    """The float64 loss and gradients of the same inputs."""
    return evaluate(fn, _as_float64(inputs), kwargs, with_grads=True)


def relative_error(got: tuple[torch.Tensor, list], expected: tuple[torch.Tensor, list]) -> float:
    """The largest relative error: of the loss, and of each gradient in norm (NaN where one has
    a NaN the other has not, inf where a gradient is missing)."""
    (loss, grads), (loss_ref, grads_ref) = got, expected
    pairs = [(loss, loss_ref)] + list(zip(grads, grads_ref[:len(grads)]))
    worst = 0.0
    for value, ref in pairs:
        value, ref = value.double(), ref.double()
        if value.shape != ref.shape:
            return float("inf")
        scale = max(ref.norm().item(), 1e-30)
        err = (value - ref).norm().item() / scale
        if err != err:  # NaN: agreeing NaNs (both at the same places) are not an error
            same = torch.equal(value.isnan(), ref.isnan()) and bool(
                torch.allclose(value.nan_to_num(), ref.nan_to_num(), rtol=1e-3, atol=0))
            if not same:
                return float("nan")
            err = 0.0
        worst = max(worst, err)
    return worst


def agrees(error: float, dtype: torch.dtype) -> bool:
    return error <= TOLERANCE[dtype]  # False for NaN
