"""The benchmark cases, shared by the pytest-benchmark suite and the report: each loss's
training step (forward + backward) per provider, and the bytes that step must move."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

import fastloss
from fastloss import reference

Step = Callable[[], None]
MAE_PATCH = 768       # 16 x 16 x 3 values per patch
MAE_PATCHES = 196     # 14 x 14 patches per image
MAE_MASK_RATIO = 0.75


@dataclass
class Case:
    """Inputs of one loss at one size, and the bytes a fused step must move."""

    loss: str
    inputs: tuple
    kwargs: dict
    nbytes: int


def _element_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


ROW_D = 256  # embedding width of the pair and triplet losses when a size is given in elements


def size_label(size: int | tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}" if isinstance(size, tuple) else f"2^{size.bit_length() - 1}"


def make_case(loss: str, size: int | tuple[int, int], dtype: torch.dtype, device: str) -> Case:
    """The inputs of `loss` at `size`: about `size` elements of input, or for the pair and
    triplet losses (rows, D) (an element count gives rows of ROW_D)."""
    if loss in ROW_LOSSES:
        rows, d = size if isinstance(size, tuple) else (max(1, size // ROW_D), ROW_D)
        count = 3 if loss == "triplet" else 2
        xs = [torch.randn(rows, d, dtype=dtype, device=device).requires_grad_() for _ in range(count)]
        extra = ()
        if loss == "contrastive":
            extra = ((torch.rand(rows, device=device) < 0.5).to(dtype),)
        elif loss == "cosine_embedding":
            extra = ((torch.rand(rows, device=device) < 0.5).to(dtype) * 2 - 1,)
        # read every row once, write the gradient of every input once
        return Case(loss, (*xs, *extra), {}, 2 * count * rows * d * _element_size(dtype))
    n = size[0] * size[1] if isinstance(size, tuple) else size
    if loss == "masked_mse":
        images = max(1, round(n / (MAE_PATCHES * MAE_PATCH)))
        shape = (images, MAE_PATCHES, MAE_PATCH)
        x = torch.randn(shape, dtype=dtype, device=device).requires_grad_()
        t = torch.randn(shape, dtype=dtype, device=device)
        mask = torch.rand(shape[:2], device=device) < MAE_MASK_RATIO
        counted = int(mask.sum())
        # read input and target of the counted patches, write the whole gradient, read the mask
        nbytes = (2 * counted * MAE_PATCH + x.numel()) * _element_size(dtype) + mask.numel()
        return Case(loss, (x, t, mask), {"norm_target": True}, nbytes)
    x = torch.randn(n, dtype=dtype, device=device).requires_grad_()
    t = torch.rand(n, dtype=dtype, device=device) if loss == "bce" else torch.randn(n, dtype=dtype, device=device)
    kwargs = {"smooth_l1": {"beta": 0.5}, "huber": {"delta": 0.5}}.get(loss, {})
    return Case(loss, (x, t), kwargs, 3 * n * _element_size(dtype))  # read x, t; write grad


ROW_LOSSES = ("contrastive", "triplet", "cosine_embedding")

FASTLOSS_FN = {
    "mse": fastloss.mse_loss, "l1": fastloss.l1_loss, "smooth_l1": fastloss.smooth_l1_loss,
    "huber": fastloss.huber_loss, "bce": fastloss.binary_cross_entropy_with_logits,
    "masked_mse": fastloss.masked_mse_loss,
    "contrastive": fastloss.contrastive_loss, "triplet": fastloss.triplet_margin_loss,
    "cosine_embedding": fastloss.cosine_embedding_loss,
}
# One lambda per loss: each has its own code object, so torch.compile keeps one compiled frame
# per loss (compiling the torch functions directly funnels them all through one wrapper frame,
# whose recompile limit then silently sends the later losses to eager).
TORCH_FN = {
    "mse": lambda x, t: F.mse_loss(x, t),
    "l1": lambda x, t: F.l1_loss(x, t),
    "smooth_l1": lambda x, t, beta: F.smooth_l1_loss(x, t, beta=beta),
    "huber": lambda x, t, delta: F.huber_loss(x, t, delta=delta),
    "bce": lambda x, t: F.binary_cross_entropy_with_logits(x, t),
    "masked_mse": lambda x, t, m, norm_target: reference.masked_mse_loss(x, t, m, norm_target),
    "contrastive": lambda a, b, y: reference.contrastive_loss(a, b, y),
    "triplet": lambda a, p, n: F.triplet_margin_loss(a, p, n),
    "cosine_embedding": lambda a, b, y: F.cosine_embedding_loss(a, b, y),
}
LOSSES = list(FASTLOSS_FN)


def _step(fn, case: Case) -> Step:
    leaves = [t for t in case.inputs if t.requires_grad]

    def step():
        for t in leaves:
            t.grad = None
        fn(*case.inputs, **case.kwargs).backward()
    return step


def providers(device: str) -> dict[str, Callable[[Case], Step]]:
    """Provider name -> maker of its step for a case, for the backends that run on `device`."""
    found: dict[str, Callable[[Case], Step]] = {}
    available = fastloss.available_backends()

    def fastloss_maker(backend):
        return lambda case: _step(lambda *a, **k: FASTLOSS_FN[case.loss](*a, **k, backend=backend), case)

    if device == "cpu":
        if available["cpu"]:
            found["fastloss-cpu"] = fastloss_maker("cpu")
    else:
        if available["cuda"]:
            found["fastloss-cuda"] = fastloss_maker("cuda")
        if available["triton"]:
            found["fastloss-triton"] = fastloss_maker("triton")
    found["torch-eager"] = lambda case: _step(TORCH_FN[case.loss], case)
    compiled: dict[str, Callable] = {}

    def compiled_maker(case):
        if case.loss not in compiled:  # one compilation per loss, for every size
            compiled[case.loss] = torch.compile(TORCH_FN[case.loss], dynamic=True)
        return _step(compiled[case.loss], case)

    found["torch-compile"] = compiled_maker
    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    setattr(config, name, max(getattr(config, name), 64))
    return found


def copy_step(n: int, dtype: torch.dtype, device: str) -> tuple[Callable[[], None], int]:
    """A device copy of n elements into memory already touched, and the bytes it moves."""
    src = torch.randn(n, dtype=dtype, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    return (lambda: dst.copy_(src)), 2 * src.numel() * src.element_size()
