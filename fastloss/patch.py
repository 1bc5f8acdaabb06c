"""Swap torch's losses for fastloss's drop-ins in place, for code the user does not own.

`patch_torch()` sets attributes of torch.nn.functional and torch.nn; `unpatch_torch()` puts
torch's own objects back. fastloss itself never looks torch's losses up there (see
_torch_losses), so a patched torch cannot send a fallback back into fastloss.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator

import torch
import torch.nn.functional

from . import functional, nn

__all__ = ["PATCHABLE", "patch_torch", "patched_torch", "unpatch_torch"]

# torch.nn.functional name -> torch.nn class name, for each loss fastloss replaces.
PATCHABLE: dict[str, str] = {
    "mse_loss": "MSELoss",
    "l1_loss": "L1Loss",
    "smooth_l1_loss": "SmoothL1Loss",
    "huber_loss": "HuberLoss",
    "binary_cross_entropy_with_logits": "BCEWithLogitsLoss",
    "triplet_margin_loss": "TripletMarginLoss",
    "cosine_embedding_loss": "CosineEmbeddingLoss",
}

_lock = threading.Lock()
# "torch.nn.functional.mse_loss" -> (namespace, attribute, torch's object), while patched.
_replaced: dict[str, tuple[object, str, object]] = {}


def _targets(losses: Iterable[str] | None) -> list[tuple[object, str, object]]:
    """(namespace, attribute, fastloss's object) for each selected loss, function and class."""
    if isinstance(losses, str):
        losses = [losses]
    classes = {cls: fn for fn, cls in PATCHABLE.items()}
    chosen: list[str] = []
    for name in PATCHABLE if losses is None else losses:
        fn = name if name in PATCHABLE else classes.get(name)
        if fn is None:
            raise ValueError(f"fastloss.patch_torch: losses must name losses fastloss replaces, "
                             f"{', '.join(list(PATCHABLE) + list(classes))}; got {name!r}")
        if fn not in chosen:
            chosen.append(fn)
    targets = []
    for fn in chosen:
        targets.append((torch.nn.functional, fn, getattr(functional, fn)))
        targets.append((torch.nn, PATCHABLE[fn], getattr(nn, PATCHABLE[fn])))
    return targets


def _key(namespace: object, attribute: str) -> str:
    return f"{namespace.__name__}.{attribute}"  # type: ignore[attr-defined]


def _settle_compile_rules() -> None:
    """torch.compile sorts functions by identity into torch's own (kept whole in its graph) and
    others (traced into), from a table it builds once, by name, on first use. Built while
    patched, it would file fastloss's drop-ins as torch's own and never trace into them; so it is
    built here first (importing torch._dynamo: about 2 s, once). A torch without that table
    (a private detail) needs nothing."""
    try:
        from torch._dynamo import trace_rules
        trace_rules.get_torch_obj_rule_map()
    except (ImportError, AttributeError):
        pass


def patch_torch(losses: Iterable[str] | None = None) -> dict[str, object]:
    """Replace torch's losses by fastloss's drop-ins in torch.nn.functional and torch.nn.

    After the call, code that looks a loss up there at call time (``F.mse_loss(...)``,
    ``nn.MSELoss()``, and torch's own loss modules, whose forward calls ``F.mse_loss``) runs
    fastloss's kernels; arguments fastloss does not fuse still give torch's results. Names
    imported before the call (``from torch.nn.functional import mse_loss``) keep torch's objects.

    Args:
        losses: the losses to replace, by function or class name ("mse_loss" or "MSELoss": either
            replaces both); None replaces every loss in :data:`PATCHABLE`.

    Returns:
        What this call replaced: ``{"torch.nn.functional.mse_loss": <torch's function>, ...}``.
        Patching again is harmless and replaces nothing more.
    """
    targets = _targets(losses)
    _settle_compile_rules()
    replaced: dict[str, object] = {}
    with _lock:
        for namespace, attribute, ours in targets:
            key = _key(namespace, attribute)
            current = getattr(namespace, attribute)
            if current is ours:
                continue
            _replaced[key] = (namespace, attribute, current)
            setattr(namespace, attribute, ours)
            replaced[key] = current
    return replaced


def unpatch_torch(losses: Iterable[str] | None = None) -> dict[str, object]:
    """Put back the objects :func:`patch_torch` replaced (torch's own: ``F.mse_loss is`` the
    function torch defines again).

    Args:
        losses: as in :func:`patch_torch`; None restores every loss patched.

    Returns:
        What was restored, by name. An attribute someone else has set since the patch is left
        as they set it.
    """
    return _restore(None if losses is None else {_key(ns, attr) for ns, attr, _ in _targets(losses)})


def _restore(keys: set[str] | None) -> dict[str, object]:
    restored: dict[str, object] = {}
    with _lock:
        for key in list(_replaced):
            if keys is not None and key not in keys:
                continue
            namespace, attribute, original = _replaced.pop(key)
            ours = getattr(nn if namespace is torch.nn else functional, attribute)
            if getattr(namespace, attribute) is ours:
                setattr(namespace, attribute, original)
                restored[key] = original
    return restored


@contextlib.contextmanager
def patched_torch(losses: Iterable[str] | None = None) -> Iterator[dict[str, object]]:
    """``with fastloss.patched_torch():`` patches torch (see :func:`patch_torch`) for the block
    and restores what it patched when the block ends, however it ends. Yields what it replaced."""
    replaced = patch_torch(losses)
    try:
        yield replaced
    finally:
        _restore(set(replaced))  # only what this block patched: an outer patch stays
