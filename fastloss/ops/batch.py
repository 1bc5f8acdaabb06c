"""The in-batch op family (all-pairs contrastive, batch-hard triplet): custom ops per backend,
autograd, and the entry points that functional.py calls.

Contract (csrc/ops.cpp): batch_pair_loss(q, r?, q_labels, r_labels?, loss, reduction, margin_a,
margin_b, normalize, need_grad_q, need_grad_r, self_offset=-1) -> (loss, grad_q, grad_r, stats),
computed tile by tile without the N x M matrix (csrc/formulas/batch_pair.h); self_offset: q is
r's rows from there on (a rank's rows against the gathered batch), stats the sums the reductions
divide (the distributed losses all-reduce them). The kernels normalise the rows themselves
(a scale per row applied to the tiles, and F.normalize's backward in the gradient), so no
normalised copy of the embeddings is made. Gradients are written in the forward pass; backward
rescales them (pointwise.py's scale_grad_ ops). Autograd, create_graph and the torch.func
transforms: the shared pattern of autograd.py.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from .. import _args, _backend, distributed
from .. import reference as plain_formulas
from .autograd import LossFamily, apply_fused_loss
from .pointwise import rescale

# Same numbers as fastloss::batch::BatchLoss and BatchReduction (csrc/formulas/batch_pair.h).
CONTRASTIVE, HARD_TRIPLET, HARD_SOFT_TRIPLET = 0, 1, 2
REDUCTIONS = {"avg_nonzero": 3, "mean": 1, "sum": 2}
REDUCTION_NAMES = {v: k for k, v in REDUCTIONS.items()}


def _fake_batch_pair_loss(q, r, q_labels, r_labels, loss, reduction, margin_a, margin_b, normalize, need_q, need_r,
                          self_offset=-1):
    grad_q = torch.empty_like(q) if need_q else q.new_empty(0)
    grad_r = torch.empty_like(r) if (need_r and r is not None) else q.new_empty(0)
    return q.new_empty(()), grad_q, grad_r, q.new_empty(5, dtype=torch.float64)


if _backend.cpu_built() and hasattr(torch.ops.fastloss, "batch_pair_loss"):
    torch.library.register_fake("fastloss::batch_pair_loss")(_fake_batch_pair_loss)


@torch.library.custom_op("fastloss::batch_pair_loss_triton", mutates_args=())
def batch_pair_loss_triton(q: torch.Tensor, r: torch.Tensor | None, q_labels: torch.Tensor,
                           r_labels: torch.Tensor | None, loss: int, reduction: int, margin_a: float,
                           margin_b: float, normalize: bool, need_grad_q: bool, need_grad_r: bool,
                           self_offset: int = -1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The Triton kernels behind the in-batch contract."""
    from fastloss.kernels import batch_pair_loss as kernel  # imported late: TRITON_INTERPRET is read then

    return kernel.batch_pair_loss(q, r, q_labels, r_labels, loss, reduction, margin_a, margin_b, normalize,
                                  need_grad_q, need_grad_r, self_offset)


batch_pair_loss_triton.register_fake(_fake_batch_pair_loss)


def _forward_op(backend: str):
    if backend == "triton":
        return torch.ops.fastloss.batch_pair_loss_triton
    return torch.ops.fastloss.batch_pair_loss


def _fused(backend: str, config: tuple, needs: tuple, tensors) -> tuple[torch.Tensor, ...]:
    q, r, q_labels, r_labels = tensors
    loss, reduction_id, margin_a, margin_b, normalize, self_offset = config
    value, grad_q, grad_r, _ = _forward_op(backend)(q, r, q_labels, r_labels, loss, reduction_id, margin_a, margin_b,
                                                    normalize, *needs, self_offset)
    return value, grad_q, grad_r


def _plain(config: tuple, tensors) -> torch.Tensor:
    """The same loss on the materialised distance matrix: what create_graph and the torch.func
    transforms differentiate."""
    loss, reduction_id, margin_a, margin_b, normalize, self_offset = config
    q, r, q_labels, r_labels = tensors
    reduction = REDUCTION_NAMES[reduction_id]
    if loss == CONTRASTIVE:
        return plain_formulas.batch_contrastive_loss(q, q_labels, margin_a, margin_b, normalize, r, r_labels,
                                                     reduction, None if self_offset < 0 else self_offset)
    return plain_formulas.batch_hard_triplet_loss(q, q_labels, margin_a, normalize, loss == HARD_SOFT_TRIPLET,
                                                  reduction, r, r_labels, max(self_offset, 0))


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
                           reference: Callable[[], torch.Tensor], all_gather: bool = False,
                           group=None) -> torch.Tensor:
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
    if all_gather and distributed.active(group):
        if ref_embeddings is not None:
            raise ValueError(f"fastloss.{fn}: all_gather=True gathers the batch as the reference set: pass no "
                             f"ref_embeddings/ref_labels with it")
        return _global_contrastive(fn, embeddings.contiguous(), labels.to(torch.int64).contiguous(), pos_margin,
                                   neg_margin, bool(normalize), reduction_id, chosen, group)
    if chosen == "torch":
        return reference()
    dtype = embeddings.dtype if ref_embeddings is None else _args.result_dtype(
        fn, embeddings=embeddings, ref_embeddings=ref_embeddings)
    q = embeddings.to(dtype).contiguous()
    r = None if ref_embeddings is None else ref_embeddings.to(dtype).contiguous()
    rl = None if ref_labels is None else ref_labels.to(torch.int64).contiguous()
    config = (CONTRASTIVE, reduction_id, pos_margin, neg_margin, bool(normalize), -1)
    return apply_fused_loss(FAMILY, config, chosen, [q, r, labels.to(torch.int64).contiguous(), rl])


def batch_hard_triplet_loss(embeddings: torch.Tensor, labels: torch.Tensor, margin: float, normalize: bool,
                            soft: bool, reduction: str, backend: str | None,
                            reference: Callable[[], torch.Tensor], all_gather: bool = False,
                            group=None) -> torch.Tensor:
    fn = "batch_hard_triplet_loss"
    _check_embeddings(fn, "embeddings", embeddings)
    _check_labels(fn, "labels", labels, embeddings.shape[0], "embeddings")
    margin = _check_margin(fn, "margin", margin)
    reduction_id = _args.check_reduction(fn, reduction, REDUCTIONS)
    _args.check_same_device(fn, "embeddings", embeddings, labels=labels)
    chosen = _backend.resolve(backend, embeddings.device)
    if all_gather and distributed.active(group):
        return _global_hard_triplet(fn, embeddings.contiguous(), labels.to(torch.int64).contiguous(), margin,
                                    bool(soft), bool(normalize), reduction_id, chosen, group)
    if chosen == "torch":
        return reference()
    config = (HARD_SOFT_TRIPLET if soft else HARD_TRIPLET, reduction_id, margin, 0.0, bool(normalize), -1)
    return apply_fused_loss(FAMILY, config, chosen, [embeddings.contiguous(), None,
                                                     labels.to(torch.int64).contiguous(), None])


# ---- global negatives across processes (fastloss/distributed.py states the contract) ----

def _global_contrastive(fn, x, labels, pos_margin, neg_margin, normalize, reduction_id, backend, group):
    """This rank's rows against the whole gathered batch as the reference set, their own pairs
    dropped (they are rows offset.. of it). "sum" and "mean" scale the rank's sum (the global
    number of pairs for "mean"); AvgNonZero divides the rank's positive and negative sums (each
    alone: the other part's margin turns it off) by the global counts of costs > 0, all-reduced
    from a counting sweep (no gradient) - the counts are known only over the whole batch."""
    counts = distributed.row_counts(fn, "embeddings", x, group)
    offset, total = distributed.offset_of(counts, group), sum(counts)
    everything = distributed.gather_rows(x, counts, group)
    all_labels = distributed.gather_labels(labels, counts, group)
    world = float(distributed.world_size(group))

    def rank_sum(pos_m, neg_m):
        if backend == "torch":
            return plain_formulas.batch_contrastive_loss(x, labels, pos_m, neg_m, normalize, everything, all_labels,
                                                         "sum", offset)
        config = (CONTRASTIVE, REDUCTIONS["sum"], pos_m, neg_m, normalize, offset)
        return apply_fused_loss(FAMILY, config, backend, [x, everything, labels, all_labels])

    if reduction_id == REDUCTIONS["sum"]:
        return rank_sum(pos_margin, neg_margin) * world
    if reduction_id == REDUCTIONS["mean"]:
        pairs = total * (total - 1)
        return rank_sum(pos_margin, neg_margin) * (world / pairs if pairs else 0.0)
    with torch.no_grad():
        if backend == "torch":
            nonzero = _plain_nonzero_counts(x, labels, everything, all_labels, pos_margin, neg_margin, normalize, offset)
        else:
            stats = _forward_op(backend)(x.detach(), everything.detach(), labels, all_labels, CONTRASTIVE,
                                         REDUCTIONS["sum"], pos_margin, neg_margin, normalize, False, False, offset)[3]
            nonzero = stats[[1, 3]]
        pos_count, neg_count = distributed.all_reduce_sum(nonzero, group).tolist()
    loss = rank_sum(pos_margin, 0.0) * (world / pos_count if pos_count else 0.0)  # positives alone
    return loss + rank_sum(float("inf"), neg_margin) * (world / neg_count if neg_count else 0.0)  # negatives alone


def _plain_pairs(x, labels, ref, ref_labels, normalize, offset):
    """The materialised distances of x's rows to ref's (rows offset.. of ref being x's own), and
    the positive (same label, not the own row) and negative pairs: the torch backend's counting."""
    q, r = (F.normalize(x, dim=1), F.normalize(ref, dim=1)) if normalize else (x, ref)
    d = plain_formulas.pairwise_distances(q, r)
    same = labels[:, None] == ref_labels[None, :]
    return d, same & ~plain_formulas.own_pairs(x.shape[0], ref.shape[0], offset, x.device), ~same


def _plain_nonzero_counts(x, labels, ref, ref_labels, pos_margin, neg_margin, normalize, offset):
    """The numbers of positive and negative costs > 0 of x's rows against ref."""
    d, pos_pairs, neg_pairs = _plain_pairs(x, labels, ref, ref_labels, normalize, offset)
    pos = ((d - pos_margin > 0) & pos_pairs).sum()
    neg = ((neg_margin - d > 0) & neg_pairs).sum()
    return torch.stack([pos, neg]).double()


def _global_hard_triplet(fn, x, labels, margin, soft, normalize, reduction_id, backend, group):
    """This rank's anchors mined against the whole gathered batch (their own rows, offset.. of it,
    left out); the rank's sum of costs scaled by the world size over the global number of kept
    anchors ("mean") or of costs > 0 (AvgNonZero: the other anchors add nothing, to the value or
    the gradient), all-reduced from a mining sweep without gradient."""
    counts = distributed.row_counts(fn, "embeddings", x, group)
    offset = distributed.offset_of(counts, group)
    everything = distributed.gather_rows(x, counts, group)
    all_labels = distributed.gather_labels(labels, counts, group)
    world = float(distributed.world_size(group))
    loss_id = HARD_SOFT_TRIPLET if soft else HARD_TRIPLET
    scale = world
    if reduction_id != REDUCTIONS["sum"]:
        with torch.no_grad():
            if backend == "torch":
                kept, nonzero = _plain_hard_counts(x, labels, everything, all_labels, margin, soft, normalize, offset)
                local = torch.stack([kept, nonzero]).double()
            else:
                stats = _forward_op(backend)(x.detach(), everything.detach(), labels, all_labels, loss_id,
                                             REDUCTIONS["sum"], margin, 0.0, normalize, False, False, offset)[3]
                local = stats[[1, 3]]
            kept, nonzero = distributed.all_reduce_sum(local, group).tolist()
        count = kept if reduction_id == REDUCTIONS["mean"] else nonzero
        scale = world / count if count else 0.0
    if backend == "torch":  # (+ 0 * the gathered rows: a rank without anchors still joins their backward)
        rank_sum = plain_formulas.batch_hard_triplet_loss(x, labels, margin, normalize, soft, "sum", everything,
                                                          all_labels, offset) + everything.sum() * 0
    else:
        config = (loss_id, REDUCTIONS["sum"], margin, 0.0, normalize, offset)
        rank_sum = apply_fused_loss(FAMILY, config, backend, [x, everything, labels, all_labels])
    return rank_sum * scale


def _plain_hard_counts(x, labels, ref, ref_labels, margin, soft, normalize, offset):
    """The numbers of kept anchors and of costs > 0 of x's anchors against ref, materialised."""
    d, pos, neg = _plain_pairs(x, labels, ref, ref_labels, normalize, offset)
    kept = pos.any(1) & neg.any(1)
    d_ap = torch.where(pos, d, -torch.inf).max(1).values
    d_an = torch.where(neg, d, torch.inf).min(1).values
    costs = F.softplus(d_ap - d_an) if soft else F.relu(d_ap - d_an + margin)
    return kept.sum(), (kept & (costs > 0)).sum()
