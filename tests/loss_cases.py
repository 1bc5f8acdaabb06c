"""Every fastloss loss beside an independent oracle, for the autograd and NaN tests.

The oracle is torch's own function where torch has the loss; for the losses torch lacks it is
the formula written here from its source: Hadsell, Chopra and LeCun (2006) for the contrastive
loss (with torch's pairwise_distance and cosine_similarity conventions), MAE's forward_loss
(He et al. 2022, norm_pix_loss) for the masked patch MSE. Nothing here calls
fastloss.reference.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

import fastloss


def contrastive_oracle(x1, x2, y, margin=1.0, distance="euclidean", reduction="mean", eps=1e-6):
    """0.5 (y d^2 + (1 - y) max(0, margin - d)^2), y = 1 similar (their Y = 1 - y)."""
    if distance == "euclidean":
        d = torch.linalg.vector_norm(x1 - x2 + eps, ord=2, dim=-1)
    elif distance == "manhattan":
        d = torch.linalg.vector_norm(x1 - x2 + eps, ord=1, dim=-1)
    else:
        d = 1 - F.cosine_similarity(x1, x2, dim=-1, eps=1e-8)
    y = y.to(d.dtype)
    loss = 0.5 * (y * d * d + (1 - y) * torch.clamp_min(margin - d, 0) ** 2)
    return {"none": loss, "sum": loss.sum(), "mean": loss.mean()}[reduction]


def mae_patch_loss(pred, target, mask, norm_pix_loss=False, eps=1e-6):
    """MAE's forward_loss: per-patch normalised target (unbiased variance), mean over the patch
    of the squared error, averaged over the patches where mask is 1 (weighted by a float mask)."""
    if norm_pix_loss:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + eps) ** 0.5
    loss = ((pred - target) ** 2).mean(dim=-1)
    mask = mask.to(loss.dtype)
    return (loss * mask).sum() / mask.sum()


@dataclass
class Case:
    """A loss call on `n_tensors` differentiable tensors of one shape (plus fixed extras)."""

    name: str
    fast: Callable  # (*tensors, backend=...) -> loss
    oracle: Callable  # (*tensors) -> loss, in torch ops
    n_tensors: int
    shape: tuple = (4, 6)
    make: Callable | None = None  # (shape, dtype, generator) -> tensors, when not plain normals
    kinks: tuple = ()  # |differences| the inputs keep away from (finite differences)
    fused: bool = True  # whether the fused kernel serves every differentiable argument
    extras: dict = field(default_factory=dict)


def _normal(shape, dtype, gen, n):
    return [torch.randn(shape, dtype=torch.float64, generator=gen).to(dtype) for _ in range(n)]


def _away_from(values, kinks, offset=0.15):
    """Moves input's entries so that input - target stays clear of the loss's kinks."""
    x, t = values[0], values[1]
    for k in kinks:
        close = ((x - t).abs() - k).abs() < 0.05
        x = torch.where(close, x + offset, x)
    return [x, t, *values[2:]]


def _weighted_inputs(shape, dtype, gen):
    x, t, w = _normal(shape, dtype, gen, 3)
    return [x, t, w.abs() + 0.25]


def _bce_inputs(shape, dtype, gen):
    x, t = _normal(shape, dtype, gen, 2)
    return [x, torch.sigmoid(t)]


def _fixed(shape, like, low, high, period=7):
    """Deterministic values in [low, high] in like's dtype and device (no random numbers: these
    are built inside vmap)."""
    n = 1
    for d in shape:
        n *= d
    steps = (torch.arange(n, dtype=torch.float64, device=like.device) * 3) % period / (period - 1)
    return (low + (high - low) * steps).reshape(shape).to(like.dtype)


def pointwise_cases(reduction: str) -> list[Case]:
    def weight(x):
        return _fixed(x.shape, x, 0.25, 1.25)

    def pw(x):
        return _fixed(x.shape[-1:], x, 0.2, 2.2, period=5)

    return [
        Case("mse", lambda x, t, **k: fastloss.mse_loss(x, t, reduction=reduction, **k),
             lambda x, t: F.mse_loss(x, t, reduction=reduction), 2),
        Case("mse-weighted", lambda x, t, **k: fastloss.mse_loss(x, t, reduction=reduction, weight=weight(x), **k),
             lambda x, t: F.mse_loss(x, t, reduction=reduction, weight=weight(x)), 2),
        Case("l1", lambda x, t, **k: fastloss.l1_loss(x, t, reduction=reduction, **k),
             lambda x, t: F.l1_loss(x, t, reduction=reduction), 2, kinks=(0.0,)),
        Case("smooth_l1", lambda x, t, **k: fastloss.smooth_l1_loss(x, t, reduction=reduction, beta=0.5, **k),
             lambda x, t: F.smooth_l1_loss(x, t, reduction=reduction, beta=0.5), 2, kinks=(0.5,)),
        Case("huber-weighted", lambda x, t, **k: fastloss.huber_loss(x, t, reduction=reduction, delta=0.8, weight=weight(x), **k),
             lambda x, t: F.huber_loss(x, t, reduction=reduction, delta=0.8, weight=weight(x)), 2, kinks=(0.8,)),
        # the weight as a third differentiable argument (the plain formula's path)
        Case("mse-weight-grad", lambda x, t, w, **k: fastloss.mse_loss(x, t, reduction=reduction, weight=w, **k),
             lambda x, t, w: F.mse_loss(x, t, reduction=reduction, weight=w), 3, make=_weighted_inputs, fused=False),
        Case("l1-weight-grad", lambda x, t, w, **k: fastloss.l1_loss(x, t, reduction=reduction, weight=w, **k),
             lambda x, t, w: F.l1_loss(x, t, reduction=reduction, weight=w), 3, make=_weighted_inputs, kinks=(0.0,),
             fused=False),
        Case("huber-weight-grad", lambda x, t, w, **k: fastloss.huber_loss(x, t, reduction=reduction, delta=0.8,
                                                                            weight=w, **k),
             lambda x, t, w: F.huber_loss(x, t, reduction=reduction, delta=0.8, weight=w), 3, make=_weighted_inputs,
             kinks=(0.8,), fused=False),
        Case("bce", lambda x, t, **k: fastloss.binary_cross_entropy_with_logits(x, t, reduction=reduction, **k),
             lambda x, t: F.binary_cross_entropy_with_logits(x, t, reduction=reduction), 2, make=_bce_inputs),
        Case("bce-pos_weight", lambda x, t, **k: fastloss.binary_cross_entropy_with_logits(
            x, t, weight=weight(x), pos_weight=pw(x), reduction=reduction, **k),
             lambda x, t: F.binary_cross_entropy_with_logits(
            x, t, weight=weight(x), pos_weight=pw(x), reduction=reduction), 2,
             make=_bce_inputs),
    ]


def _labels(x):
    return _fixed(x.shape[:1], x, 0.0, 1.0, period=5)


def _soft_label_inputs(shape, dtype, gen):
    a, b = _normal(shape, dtype, gen, 2)
    return [a, b, torch.rand(shape[:-1], dtype=torch.float64, generator=gen).to(dtype)]


def _cos_targets(x):
    return torch.tensor([1.0, -1.0, 0.0, -1.0, 1.0, 2.0, -1.0, 1.0], device=x.device)[:x.shape[0]].to(x.dtype)


def row_cases(reduction: str) -> list[Case]:
    cases = []
    for distance, margin in (("euclidean", 3.0), ("manhattan", 8.0), ("cosine", 0.9)):
        cases.append(Case(
            f"contrastive-{distance}",
            lambda a, b, distance=distance, margin=margin, **k: fastloss.contrastive_loss(
                a, b, _labels(a), margin, distance, reduction, **k),
            lambda a, b, distance=distance, margin=margin: contrastive_oracle(
                a, b, _labels(a), margin, distance, reduction), 2))
    cases.append(Case(  # a soft label as a third differentiable argument (the plain formula's path)
        "contrastive-label-grad",
        lambda a, b, y, **k: fastloss.contrastive_loss(a, b, y, 3.0, "euclidean", reduction, **k),
        lambda a, b, y: contrastive_oracle(a, b, y, 3.0, "euclidean", reduction), 3, make=_soft_label_inputs,
        fused=False))
    for p, swap in ((2.0, False), (1.0, True), (3.0, True)):
        cases.append(Case(
            f"triplet-p{p:g}{'-swap' if swap else ''}",
            lambda a, pos, neg, p=p, swap=swap, **k: fastloss.triplet_margin_loss(
                a, pos, neg, margin=2.0, p=p, swap=swap, reduction=reduction, **k),
            lambda a, pos, neg, p=p, swap=swap: F.triplet_margin_loss(
                a, pos, neg, margin=2.0, p=p, swap=swap, reduction=reduction), 3))
    cases.append(Case(
        "cosine_embedding",
        lambda a, b, **k: fastloss.cosine_embedding_loss(a, b, _cos_targets(a), margin=-0.9,
                                                         reduction=reduction, **k),
        lambda a, b: F.cosine_embedding_loss(a, b, _cos_targets(a), margin=-0.9,
                                             reduction=reduction), 2))
    return cases


def _mask(x):
    mask = _fixed(x.shape[:-1], x, 0.0, 1.5, period=4)
    return torch.where(mask > 1.4, 0.0, mask + 0.1)  # a few patches not counted


def _patches(x):
    return _fixed(x.shape, x, -1.5, 2.5, period=11)


def _masked_inputs(shape, dtype, gen):
    """Patches, targets and a float mask in [0.5, 1.5] (differentiable too)."""
    x, t = _normal(shape, dtype, gen, 2)
    m = torch.rand(shape[:-1], dtype=torch.float64, generator=gen).to(dtype) + 0.5
    return [x, t, m]


def masked_cases() -> list[Case]:
    return [
        # the target fixed: the fused kernel's own path (a target that requires grad takes the
        # plain formula)
        Case("masked_mse-input", lambda x, **k: fastloss.masked_mse_loss(
            x, _patches(x), _mask(x), norm_target=True, **k),
             lambda x: mae_patch_loss(x, _patches(x), _mask(x), norm_pix_loss=True),
             1, shape=(2, 3, 5)),
        Case("masked_mse-mask", lambda x, t, m, **k: fastloss.masked_mse_loss(x, t, m, norm_target=True, **k),
             lambda x, t, m: mae_patch_loss(x, t, m, norm_pix_loss=True), 3, shape=(2, 3, 5), make=_masked_inputs,
             fused=False),
        Case("masked_mse", lambda x, t, **k: fastloss.masked_mse_loss(x, t, _mask(x), **k),
             lambda x, t: mae_patch_loss(x, t, _mask(x)), 2, shape=(2, 3, 5), fused=False),
        Case("masked_mse-norm", lambda x, t, **k: fastloss.masked_mse_loss(x, t, _mask(x),
                                                                            norm_target=True, **k),
             lambda x, t: mae_patch_loss(x, t, _mask(x), norm_pix_loss=True), 2, shape=(2, 3, 5),
             fused=False),
    ]


def inputs(case: Case, dtype=torch.float64, seed=0, shape=None, device="cpu"):
    """Fresh inputs of the case (requires_grad), clear of its kinks."""
    gen = torch.Generator().manual_seed(seed)
    shape = shape or case.shape
    values = case.make(shape, dtype, gen) if case.make else _normal(shape, dtype, gen, case.n_tensors)
    if case.kinks:
        values = _away_from(values, case.kinks)
    return [v.detach().to(device).requires_grad_() for v in values]


def _batch_labels(x):
    return torch.arange(x.shape[0], device=x.device) % 3


def _embedding_pair(shape, dtype, gen):
    a, b = _normal(shape, dtype, gen, 2)
    return [a, b[..., :-1, :]]  # a reference set one row shorter


def _direct_distances(q, r):
    """|q_i - r_j| from the differences (not the matrix form the kernels use), differentiable to
    any order away from d = 0: zero distances go through a safe square root."""
    d2 = ((q[:, None, :] - r[None, :, :]) ** 2).sum(-1)
    zero = d2 == 0
    return torch.where(zero, 0.0, torch.where(zero, 1.0, d2).sqrt())


def batch_contrastive_formula(x, y, pos_margin, neg_margin, ref=None, ref_y=None, reduction="avg_nonzero"):
    """pytorch-metric-learning's ContrastiveLoss on unit rows, vectorised (vmap and jvp run it)."""
    q = F.normalize(x, dim=1)
    r, ry = (q, y) if ref is None else (F.normalize(ref, dim=1), ref_y)
    d = _direct_distances(q, r)
    same = y[:, None] == ry[None, :]
    pos = same & ~torch.eye(len(y), dtype=torch.bool, device=x.device) if ref is None else same
    pc = torch.where(pos, (d - pos_margin).clamp_min(0), 0.0)
    nc = torch.where(~same, (neg_margin - d).clamp_min(0), 0.0)
    if reduction == "sum":
        return pc.sum() + nc.sum()
    if reduction == "mean":  # over every pair, positive or negative
        return (pc.sum() + nc.sum()) / (pos.sum() + (~same).sum()).clamp_min(1)
    return pc.sum() / (pc > 0).sum().clamp_min(1) + nc.sum() / (nc > 0).sum().clamp_min(1)


def batch_hard_formula(x, y, margin, soft=False, reduction="avg_nonzero"):
    """The batch-hard triplet loss on unit rows, vectorised: argmax and argmin take the first of
    equal values."""
    q = F.normalize(x, dim=1)
    d = _direct_distances(q, q)
    same = y[:, None] == y[None, :]
    pos = same & ~torch.eye(len(y), dtype=torch.bool, device=x.device)
    d_ap = d.gather(1, torch.where(pos, d, -torch.inf).argmax(1, keepdim=True))[:, 0]
    d_an = d.gather(1, torch.where(~same, d, torch.inf).argmin(1, keepdim=True))[:, 0]
    costs = F.softplus(d_ap - d_an) if soft else (d_ap - d_an + margin).clamp_min(0)
    kept = pos.any(1) & (~same).any(1)
    costs = torch.where(kept, costs, 0.0)
    if reduction == "mean":
        return costs.sum() / kept.sum().clamp_min(1)
    return costs.sum() / (costs > 0).sum().clamp_min(1)


def batch_cases() -> list[Case]:
    """The in-batch losses (their oracle, vectorised, beside test_batch_losses' definitions)."""
    return [
        Case("batch_contrastive", lambda x, **k: fastloss.batch_contrastive_loss(x, _batch_labels(x), 0.1, 1.2, **k),
             lambda x: batch_contrastive_formula(x, _batch_labels(x), 0.1, 1.2), 1, shape=(7, 4)),
        Case("batch_contrastive-ref", lambda x, r, **k: fastloss.batch_contrastive_loss(
            x, _batch_labels(x), 0.1, 1.2, ref_embeddings=r, ref_labels=_batch_labels(r), reduction="sum", **k),
             lambda x, r: batch_contrastive_formula(x, _batch_labels(x), 0.1, 1.2, ref=r, ref_y=_batch_labels(r),
                                                    reduction="sum"), 2, shape=(7, 4), make=_embedding_pair),
        Case("batch_hard_triplet", lambda x, **k: fastloss.batch_hard_triplet_loss(x, _batch_labels(x), 0.4, **k),
             lambda x: batch_hard_formula(x, _batch_labels(x), 0.4), 1, shape=(7, 4)),
        Case("batch_hard_soft", lambda x, **k: fastloss.batch_hard_triplet_loss(x, _batch_labels(x), soft=True,
                                                                                reduction="mean", **k),
             lambda x: batch_hard_formula(x, _batch_labels(x), 0.0, soft=True, reduction="mean"), 1, shape=(7, 4)),
    ]


# ---- the softmax losses, on the whole matrix ----

def oracle_info_nce(q, k, t, symmetric=False, normalize=False, reduction="mean"):
    """torch's cross-entropy on the materialised logits, target i for row i."""
    if normalize:
        q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
    logits = q @ k.T / t
    target = torch.arange(q.shape[0])
    loss = F.cross_entropy(logits, target, reduction="none")
    if symmetric:
        loss = (loss + F.cross_entropy(logits.T, target, reduction="none")) / 2
    return {"none": loss, "sum": loss.sum(), "mean": loss.mean()}[reduction]


def oracle_nt_xent(z1, z2, t, reduction="mean"):
    """Chen et al. (2020), eq. 1: l(i, j) = -log(exp(sim(z_i, z_j)/t) / sum_{k != i} exp(sim(z_i, z_k)/t))
    with sim the cosine similarity, over the 2N ordered positive pairs (2k-1, 2k) and (2k, 2k-1)."""
    z = torch.cat([z1, z2])
    n = z.shape[0]
    sim = (z @ z.T) / (z.norm(dim=1)[:, None] * z.norm(dim=1)[None, :]).clamp_min(1e-12)
    losses = []
    for i in range(n):
        j = (i + n // 2) % n
        others = torch.cat([sim[i, :i], sim[i, i + 1:]]) / t
        losses.append(-(sim[i, j] / t - torch.logsumexp(others, 0)))
    loss = torch.stack(losses) if losses else sim.sum(0)
    return {"none": loss, "sum": loss.sum(), "mean": loss.mean()}[reduction]
