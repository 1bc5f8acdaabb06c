"""The memory-bound benchmark cases, shared by the report and the pytest-benchmark suite: each
loss's inputs at a size, its providers (fastloss's backends, torch eager, torch.compile), the
step each provider runs in each mode, and the bytes that step must move.

Modes: "forward" (no grad: evaluation), "train" (forward+backward), "backward" (the backward
alone, timed on a graph kept from one forward; only where it is a separate pass: fastloss's
fused losses compute their gradients in the forward, so theirs is not timed apart).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

import fastloss
from fastloss import reference

Step = Callable[[], None]
FUSED_BACKWARD = "fused: the gradient is computed in the forward pass (see forward+backward)"
MAE_PATCH = 768       # 16 x 16 x 3 values per patch
MAE_PATCHES = 196     # 14 x 14 patches per image
MAE_MASK_RATIO = 0.75
ROW_D = 256  # embedding width of the pair and triplet losses when a size is given in elements
ROW_LOSSES = ("contrastive", "contrastive_manhattan", "contrastive_cosine", "triplet", "cosine_embedding")


@dataclass
class Case:
    """One loss at one size: `sets` holds copies of the inputs, rotated call by call so that no
    provider finds its inputs in the last-level cache; the first set is the one checked."""

    loss: str
    size: str
    dtype: torch.dtype
    sets: list[tuple]
    kwargs: dict
    read_bytes: int   # the inputs, read once: what a forward must move
    grad_bytes: int   # the gradients, written once: a training step moves both

    def nbytes(self, mode: str) -> int:
        return self.read_bytes + (0 if mode == "forward" else self.grad_bytes)

    @property
    def n(self) -> int:
        """Elements of the first input."""
        return self.sets[0][0].numel()


def size_label(size: int | tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}" if isinstance(size, tuple) else f"2^{size.bit_length() - 1}"


def _inputs(loss: str, size: int | tuple[int, int], dtype: torch.dtype, device: str):
    """One set of inputs, the bytes read and the bytes of gradient written."""
    es = torch.empty((), dtype=dtype).element_size()
    if loss in ROW_LOSSES:
        rows, d = size if isinstance(size, tuple) else (max(1, size // ROW_D), ROW_D)
        count = 3 if loss == "triplet" else 2
        xs = [torch.randn(rows, d, dtype=dtype, device=device).requires_grad_() for _ in range(count)]
        extra = ()
        if loss.startswith("contrastive"):
            extra = ((torch.rand(rows, device=device) < 0.5).to(dtype),)
        elif loss == "cosine_embedding":
            extra = ((torch.rand(rows, device=device) < 0.5).to(dtype) * 2 - 1,)
        label_bytes = rows * es if extra else 0
        return (*xs, *extra), {}, count * rows * d * es + label_bytes, count * rows * d * es
    n = size[0] * size[1] if isinstance(size, tuple) else size
    if loss == "masked_mse":
        images = max(1, round(n / (MAE_PATCHES * MAE_PATCH)))
        shape = (images, MAE_PATCHES, MAE_PATCH)
        x = torch.randn(shape, dtype=dtype, device=device).requires_grad_()
        t = torch.randn(shape, dtype=dtype, device=device)
        mask = torch.rand(shape[:2], device=device) < MAE_MASK_RATIO
        counted = int(mask.sum())
        # input and target of the counted patches and the mask are read; the whole gradient written
        return (x, t, mask), {"norm_target": True}, 2 * counted * MAE_PATCH * es + mask.numel(), x.numel() * es
    x = torch.randn(n, dtype=dtype, device=device).requires_grad_()
    t = torch.rand(n, dtype=dtype, device=device) if loss == "bce" else torch.randn(n, dtype=dtype, device=device)
    kwargs = {"smooth_l1": {"beta": 0.5}, "huber": {"delta": 0.5}}.get(loss, {})
    return (x, t), kwargs, 2 * n * es, n * es


def make_case(loss: str, size: int | tuple[int, int], dtype: torch.dtype, device: str,
              rotate_bytes: int = 0) -> Case:
    """The inputs of `loss` at `size` (elements, or (rows, D) for the pair and triplet losses; an
    element count gives rows of ROW_D), with as many copies as make `rotate_bytes` (at most 32)."""
    first, kwargs, read, grad = _inputs(loss, size, dtype, device)
    copies = min(32, max(1, math.ceil(rotate_bytes / (read + grad))))
    sets = [first] + [_inputs(loss, size, dtype, device)[0] for _ in range(copies - 1)]
    return Case(loss, size_label(size), dtype, sets, kwargs, read, grad)


FASTLOSS_FN = {
    "mse": fastloss.mse_loss, "l1": fastloss.l1_loss, "smooth_l1": fastloss.smooth_l1_loss,
    "huber": fastloss.huber_loss, "bce": fastloss.binary_cross_entropy_with_logits,
    "masked_mse": fastloss.masked_mse_loss,
    "contrastive": fastloss.contrastive_loss,
    "contrastive_manhattan": lambda a, b, y, **kw: fastloss.contrastive_loss(a, b, y, distance="manhattan", **kw),
    "contrastive_cosine": lambda a, b, y, **kw: fastloss.contrastive_loss(a, b, y, distance="cosine", **kw),
    "triplet": fastloss.triplet_margin_loss,
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
    "contrastive_manhattan": lambda a, b, y: reference.contrastive_loss(a, b, y, distance="manhattan"),
    "contrastive_cosine": lambda a, b, y: reference.contrastive_loss(a, b, y, distance="cosine"),
    "triplet": lambda a, p, n: F.triplet_margin_loss(a, p, n),
    "cosine_embedding": lambda a, b, y: F.cosine_embedding_loss(a, b, y),
}
LOSSES = list(FASTLOSS_FN)


def leaves(inputs: tuple) -> list[torch.Tensor]:
    return [t for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad]


def make_step(fn: Callable, case: Case, mode: str) -> Step:
    """The step of `mode` calling fn(*inputs, **kwargs), one input set after the other."""
    sets, kwargs, turn = case.sets, case.kwargs, [0]

    def next_set():
        turn[0] = (turn[0] + 1) % len(sets)
        return turn[0]

    if mode == "forward":
        def step():
            with torch.no_grad():
                fn(*sets[next_set()], **kwargs)
        return step
    if mode == "train":
        def step():
            inputs = sets[next_set()]
            for t in leaves(inputs):
                t.grad = None
            fn(*inputs, **kwargs).backward()
        return step
    # backward alone: one forward per set, kept, and each step differentiates it again
    graphs = [(fn(*inputs, **kwargs), leaves(inputs)) for inputs in sets]

    def step():
        loss, wrt = graphs[next_set()]
        torch.autograd.grad(loss, wrt, retain_graph=True)
    return step


@dataclass
class Provider:
    """A way to compute the losses: `fn(loss)` gives its function of (inputs, kwargs)."""

    name: str
    fn: Callable[[str], Callable]
    fused_backward: bool = False  # its backward is not a separate pass

    def step(self, case: Case, mode: str) -> Step | None:
        if mode == "backward" and self.fused_backward:
            return None
        return make_step(self.fn(case.loss), case, mode)


def providers(device: str) -> list[Provider]:
    """fastloss's backends that run on `device`, torch eager and torch.compile."""
    available = fastloss.available_backends()
    found = []

    def fastloss_fn(backend):
        return lambda loss: (lambda *a, **k: FASTLOSS_FN[loss](*a, **k, backend=backend))

    for backend in (("cpu",) if device == "cpu" else ("cuda", "triton")):
        if available[backend]:
            found.append(Provider(f"fastloss-{backend}", fastloss_fn(backend), fused_backward=True))
    found.append(Provider("torch-eager", lambda loss: TORCH_FN[loss]))
    compiled: dict[str, Callable] = {}

    def compiled_fn(loss):
        if loss not in compiled:  # one compilation per loss (per grad mode and dtype), every size
            compiled[loss] = torch.compile(TORCH_FN[loss], dynamic=True)
        return compiled[loss]

    found.append(Provider("torch-compile", compiled_fn))
    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    setattr(config, name, max(getattr(config, name), 64))
    return found


def copy_step(nbytes: int, device: str, rotate_bytes: int = 0) -> tuple[Step, int]:
    """A copy that moves `nbytes` (half read, half written) into memory already touched,
    rotating over buffers as the cases rotate their inputs; and the bytes it moves."""
    n = max(1, nbytes // 8)  # float32 elements
    copies = min(32, max(1, math.ceil(rotate_bytes / (8 * n))))
    pairs = [(torch.randn(n, device=device), torch.empty(n, device=device)) for _ in range(copies)]
    for src, dst in pairs:
        dst.copy_(src)
    turn = [0]

    def step():
        turn[0] = (turn[0] + 1) % copies
        src, dst = pairs[turn[0]]
        dst.copy_(src)
    return step, 8 * n
