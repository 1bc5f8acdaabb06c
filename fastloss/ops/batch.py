"""The in-batch op family (all-pairs contrastive, batch-hard triplet): custom ops per backend,
autograd, and the entry points that functional.py calls.

Contract (csrc/ops.cpp): batch_pair_loss(q, r?, q_labels, r_labels?, loss, reduction, margin_a,
margin_b, normalize, need_grad_q, need_grad_r) -> (loss, grad_q, grad_r), computed tile by tile
without the N x M matrix (csrc/formulas/batch_pair.h). The kernels normalise the rows themselves
(a scale per row applied to the tiles, and F.normalize's backward in the gradient), so no
normalised copy of the embeddings is made. Gradients are written in the forward pass; backward
rescales them (pointwise.py's scale_grad_ ops). Autograd, create_graph and the torch.func
transforms: the shared pattern of autograd.py.
"""

from __future__ import annotations

from typing import Callable

import torch

from .. import _args, _backend
from .. import reference as plain_formulas
from .autograd import LossFamily, apply_fused_loss
from .pointwise import rescale

# Same numbers as fastloss::batch::BatchLoss and BatchReduction (csrc/formulas/batch_pair.h).
CONTRASTIVE, HARD_TRIPLET, HARD_SOFT_TRIPLET = 0, 1, 2
REDUCTIONS = {"avg_nonzero": 3, "mean": 1, "sum": 2}
REDUCTION_NAMES = {v: k for k, v in REDUCTIONS.items()}


def _fake_batch_pair_loss(q, r, q_labels, r_labels, loss, reduction, margin_a, margin_b, normalize, need_q, need_r):
    grad_q = torch.empty_like(q) if need_q else q.new_empty(0)
    grad_r = torch.empty_like(r) if (need_r and r is not None) else q.new_empty(0)
    return q.new_empty(()), grad_q, grad_r


if _backend.cpu_built() and hasattr(torch.ops.fastloss, "batch_pair_loss"):
    torch.library.register_fake("fastloss::batch_pair_loss")(_fake_batch_pair_loss)


@torch.library.custom_op("fastloss::batch_pair_loss_triton", mutates_args=())
def batch_pair_loss_triton(q: torch.Tensor, r: torch.Tensor | None, q_labels: torch.Tensor,
                           r_labels: torch.Tensor | None, loss: int, reduction: int, margin_a: float,
                           margin_b: float, normalize: bool, need_grad_q: bool,
                           need_grad_r: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The Triton kernels behind the in-batch contract."""
    from fastloss.kernels import batch_pair_loss as kernel  # imported late: TRITON_INTERPRET is read then

    return kernel.batch_pair_loss(q, r, q_labels, r_labels, loss, reduction, margin_a, margin_b, normalize,
                                  need_grad_q, need_grad_r)


batch_pair_loss_triton.register_fake(_fake_batch_pair_loss)


def _forward_op(backend: str):
    if backend == "triton":
        return torch.ops.fastloss.batch_pair_loss_triton
    return torch.ops.fastloss.batch_pair_loss


def _fused(backend: str, config: tuple, needs: tuple, tensors) -> tuple[torch.Tensor, ...]:
    q, r, q_labels, r_labels = tensors
    return _forward_op(backend)(q, r, q_labels, r_labels, *config, *needs)


def _plain(config: tuple, tensors) -> torch.Tensor:
    """The same loss on the materialised distance matrix: what create_graph and the torch.func
    transforms differentiate."""
    loss, reduction_id, margin_a, margin_b, normalize = config
    q, r, q_labels, r_labels = tensors
    reduction = REDUCTION_NAMES[reduction_id]
    if loss == CONTRASTIVE:
        return plain_formulas.batch_contrastive_loss(q, q_labels, margin_a, margin_b, normalize, r, r_labels,
                                                     reduction)
    return plain_formulas.batch_hard_triplet_loss(q, q_labels, margin_a, normalize, loss == HARD_SOFT_TRIPLET,
                                                  reduction)


# The fused op differentiates q and r, the first two tensors.
FAMILY = LossFamily("batch_pair", _fused, rescale, _plain, n_fused_grads=2)


def _check_embeddings(fn: str, name: str, x) -> None:
    _args.check_tensor(fn, name, x)
    if x.dim() != 2:
        raise ValueError(f"fastloss.{fn}: {name} must be (N, D) rows, got shape {tuple(x.shape)}")
    if x.dtype not in _args.KERNEL_DTYPES:
        raise TypeError(f"fastloss.{fn}: {name} must be float32, float64, float16 or bfloat16, got {x.dtype}")


def _check_labels(fn: str, name: str, labels, rows: int, rows_name: str) -> None:
    _args.check_tensor(fn, name, labels)
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise TypeError(f"fastloss.{fn}: {name} must be an integer tensor (class ids), got {labels.dtype}")
    if labels.dim() != 1 or labels.shape[0] != rows:
        raise ValueError(f"fastloss.{fn}: {name} must be 1-D with one label per row of {rows_name} ({rows},), "
                         f"got shape {tuple(labels.shape)}")


def _check_margin(fn: str, name: str, value: float) -> float:
    value = float(value)
    if not value >= 0:  # NaN too
        raise ValueError(f"fastloss.{fn}: {name} must be >= 0 (distances are >= 0, so a negative margin "
                         f"makes the costs meaningless), got {value}")
    return value


def batch_contrastive_loss(embeddings: torch.Tensor, labels: torch.Tensor, pos_margin: float, neg_margin: float,
                           normalize: bool, ref_embeddings: torch.Tensor | None, ref_labels: torch.Tensor | None,
                           reduction: str, backend: str | None,
                           reference: Callable[[], torch.Tensor]) -> torch.Tensor:
    fn = "batch_contrastive_loss"
    _check_embeddings(fn, "embeddings", embeddings)
    _check_labels(fn, "labels", labels, embeddings.shape[0], "embeddings")
    if (ref_embeddings is None) != (ref_labels is None):
        given, missing = ("ref_embeddings", "ref_labels") if ref_labels is None else ("ref_labels", "ref_embeddings")
        raise ValueError(f"fastloss.{fn}: {given} was given without {missing}: pass both or neither")
    if ref_embeddings is not None:
        _check_embeddings(fn, "ref_embeddings", ref_embeddings)
        if ref_embeddings.shape[1] != embeddings.shape[1]:
            raise ValueError(f"fastloss.{fn}: ref_embeddings must have embeddings' width D = {embeddings.shape[1]}, "
                             f"got shape {tuple(ref_embeddings.shape)}")
        _check_labels(fn, "ref_labels", ref_labels, ref_embeddings.shape[0], "ref_embeddings")
    pos_margin = _check_margin(fn, "pos_margin", pos_margin)
    neg_margin = _check_margin(fn, "neg_margin", neg_margin)
    reduction_id = _args.check_reduction(fn, reduction, REDUCTIONS)
    _args.check_same_device(fn, "embeddings", embeddings, labels=labels, ref_embeddings=ref_embeddings,
                            ref_labels=ref_labels)
    chosen = _backend.resolve(backend, embeddings.device)
    if chosen == "torch":
        return reference()
    dtype = embeddings.dtype if ref_embeddings is None else _args.result_dtype(
        fn, embeddings=embeddings, ref_embeddings=ref_embeddings)
    q = embeddings.to(dtype).contiguous()
    r = None if ref_embeddings is None else ref_embeddings.to(dtype).contiguous()
    rl = None if ref_labels is None else ref_labels.to(torch.int64).contiguous()
    config = (CONTRASTIVE, reduction_id, pos_margin, neg_margin, bool(normalize))
    return apply_fused_loss(FAMILY, config, chosen, [q, r, labels.to(torch.int64).contiguous(), rl])


def batch_hard_triplet_loss(embeddings: torch.Tensor, labels: torch.Tensor, margin: float, normalize: bool,
                            soft: bool, reduction: str, backend: str | None,
                            reference: Callable[[], torch.Tensor]) -> torch.Tensor:
    fn = "batch_hard_triplet_loss"
    _check_embeddings(fn, "embeddings", embeddings)
    _check_labels(fn, "labels", labels, embeddings.shape[0], "embeddings")
    margin = _check_margin(fn, "margin", margin)
    reduction_id = _args.check_reduction(fn, reduction, REDUCTIONS)
    _args.check_same_device(fn, "embeddings", embeddings, labels=labels)
    chosen = _backend.resolve(backend, embeddings.device)
    if chosen == "torch":
        return reference()
    config = (HARD_SOFT_TRIPLET if soft else HARD_TRIPLET, reduction_id, margin, 0.0, bool(normalize))
    return apply_fused_loss(FAMILY, config, chosen, [embeddings.contiguous(), None,
                                                     labels.to(torch.int64).contiguous(), None])
