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


# A gradient may differ from float64 at a few elements for a good reason: a row within float32's
# resolution of a hinge (margin) or of a tie (hardest candidate) takes the other side in float64,
# and its whole gradient changes. One such row of 65536 x 512 moves the gradient's norm by 5e-3.
# So a gradient's error is the one that all but this fraction of its elements meet; a wrong kernel
# is wrong nearly everywhere, and the test suite checks every element.
OUTLIER_FRACTION = 1e-4


def _gradient_error(value: torch.Tensor, ref: torch.Tensor, outliers: float) -> float:
    """Elementwise |value - ref| / (|ref| + mean |ref|), at its (1 - outliers) quantile."""
    scale = ref.abs().mean().clamp_min(1e-300)
    error = ((value - ref).abs() / (ref.abs() + scale)).flatten()
    skip = int(error.numel() * outliers)
    return error.max().item() if skip == 0 else torch.topk(error, skip + 1).values[-1].item()


def _nan_mismatch(value: torch.Tensor, ref: torch.Tensor) -> bool:
    return not torch.equal(value.isnan(), ref.isnan())


def relative_error(got: tuple[torch.Tensor, list], expected: tuple[torch.Tensor, list],
                   outliers: float = OUTLIER_FRACTION) -> float:
    """The largest of the loss's relative error and the gradients' errors (see _gradient_error):
    NaN where one has a NaN the other has not, inf where a shape differs."""
    (loss, grads), (loss_ref, grads_ref) = got, expected
    worst = 0.0
    for k, (value, ref) in enumerate([(loss, loss_ref)] + list(zip(grads, grads_ref[:len(grads)]))):
        value, ref = value.double(), ref.double()
        if value.shape != ref.shape:
            return float("inf")
        if _nan_mismatch(value, ref):
            return float("nan")
        value, ref = value.nan_to_num(), ref.nan_to_num()  # agreeing NaNs are not an error
        if k == 0:
            err = (value - ref).norm().item() / max(ref.norm().item(), 1e-300)
        else:
            err = _gradient_error(value, ref, outliers)
        worst = max(worst, err)
    return worst


def agrees(error: float, dtype: torch.dtype) -> bool:
    return error <= TOLERANCE[dtype]  # False for NaN
