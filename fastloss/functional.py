"""Drop-in replacements for torch.nn.functional losses: same signatures, same results.

Every function also takes a keyword-only `backend`: "auto" (default, and what None means; the
environment variable FASTLOSS_BACKEND, read at import, sets what "auto" stands for), "cpu" (C++
kernel), "cuda" (CUDA kernel), "triton" or "torch" (the plain formula); any case.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from . import _args, reference
from . import _torch_losses as TF
from .ops import batch as batch_ops
from .ops import info_nce as info_nce_ops
from .ops import masked_mse as masked_ops
from .ops import pointwise as ops
from .ops import row as row_ops

__all__ = ["batch_contrastive_loss", "batch_hard_triplet_loss", "binary_cross_entropy_with_logits",
           "contrastive_loss", "cosine_embedding_loss", "huber_loss", "info_nce_loss",
           "l1_loss", "masked_mse_loss", "mse_loss", "nt_xent_loss", "smooth_l1_loss", "triplet_margin_loss"]


def _warn_size_mismatch(input, target) -> None:
    if isinstance(input, torch.Tensor) and isinstance(target, torch.Tensor) and target.size() != input.size():
        warnings.warn(
            f"Using a target size ({target.size()}) that is different to the input size "
            f"({input.size()}). This will likely lead to incorrect results due to broadcasting. "
            "Please ensure they have the same size.", stacklevel=3)


def _torch(function, *args, **kwargs):
    """torch's own function, for arguments the kernels do not take (its size warning was
    already given by ours). Wrapped in a lambda at each call site, so building it costs nothing
    on the kernels' path."""
    with reference._quiet():
        return function(*args, **kwargs)


def _check_weight_size(fn: str, input, weight) -> None:
    if weight is not None and isinstance(weight, torch.Tensor) and isinstance(input, torch.Tensor) \
            and weight.size() != input.size():
        raise ValueError(f"fastloss.{fn}: weight must have input's size {tuple(input.shape)}, "
                         f"got {tuple(weight.shape)} (torch: Weights and input must have the same size.)")


def mse_loss(input: torch.Tensor, target: torch.Tensor, size_average: bool | None = None,
             reduce: bool | None = None, reduction: str = "mean",
             weight: torch.Tensor | None = None, *, backend: str | None = "auto") -> torch.Tensor:
    """Mean squared error, optionally weighted: torch.nn.functional.mse_loss, fused.

    Args:
        input: predictions, any shape, floating point.
        target: broadcastable with input (torch warns when the sizes differ; so does this).
        size_average, reduce: deprecated, as in torch (they override ``reduction``).
        reduction: "mean" | "sum" | "none".
        weight: per-element weights of input's size; "mean" then divides by their sum.
        backend: "auto" | "cpu" | "cuda" | "triton" | "torch".

    Returns:
        A 0-d tensor for "mean"/"sum", the broadcast shape for "none", in the promoted dtype.
    """
    _warn_size_mismatch(input, target)
    reduction = _args.legacy_reduction(size_average, reduce, reduction)
    _check_weight_size("mse_loss", input, weight)
    return ops.pointwise_loss(ops.MSE, input, target, weight, None, reduction, 0.0, backend,
                              lambda: reference.mse_loss(input, target, reduction, weight),
                              lambda: _torch(TF.mse_loss, input, target, reduction=reduction, weight=weight))


def l1_loss(input: torch.Tensor, target: torch.Tensor, size_average: bool | None = None,
            reduce: bool | None = None, reduction: str = "mean",
            weight: torch.Tensor | None = None, *, backend: str | None = "auto") -> torch.Tensor:
    """Mean absolute error, optionally weighted: torch.nn.functional.l1_loss, fused.

    Arguments as :func:`mse_loss`. The gradient at input == target is 0, as torch's.
    """
    _warn_size_mismatch(input, target)
    reduction = _args.legacy_reduction(size_average, reduce, reduction)
    _check_weight_size("l1_loss", input, weight)
    return ops.pointwise_loss(ops.L1, input, target, weight, None, reduction, 0.0, backend,
                              lambda: reference.l1_loss(input, target, reduction, weight),
                              lambda: _torch(TF.l1_loss, input, target, reduction=reduction, weight=weight))


def smooth_l1_loss(input: torch.Tensor, target: torch.Tensor, size_average: bool | None = None,
                   reduce: bool | None = None, reduction: str = "mean", beta: float = 1.0, *,
                   backend: str | None = "auto") -> torch.Tensor:
    """Smooth L1: torch.nn.functional.smooth_l1_loss, fused.

    0.5 d^2 / beta where |d| < beta, else |d| - 0.5 beta (d = input - target); beta = 0 is
    exactly L1, as in torch; a negative beta is an error, as in torch.
    """
    _warn_size_mismatch(input, target)
    reduction = _args.legacy_reduction(size_average, reduce, reduction)
    beta = float(beta)
    if not beta >= 0:  # NaN too, as torch
        raise RuntimeError(f"fastloss.smooth_l1_loss: beta must be >= 0 (torch: smooth_l1_loss does "
                           f"not support negative values for beta.), got {beta}")
    spec = ops.L1 if beta == 0.0 else ops.SMOOTH_L1
    return ops.pointwise_loss(spec, input, target, None, None, reduction, beta, backend,
                              lambda: reference.smooth_l1_loss(input, target, reduction, beta),
                              lambda: _torch(TF.smooth_l1_loss, input, target, reduction=reduction, beta=beta))


def huber_loss(input: torch.Tensor, target: torch.Tensor, reduction: str = "mean",
               delta: float = 1.0, weight: torch.Tensor | None = None, *,
               backend: str | None = "auto") -> torch.Tensor:
    """Huber loss: torch.nn.functional.huber_loss, fused.

    0.5 d^2 where |d| < delta, else delta (|d| - 0.5 delta). delta must be positive. With a
    weight, "mean" divides by the element count (torch's rule for Huber, unlike MSE and L1).
    """
    _warn_size_mismatch(input, target)
    delta = float(delta)
    if not delta > 0:
        raise RuntimeError(f"fastloss.huber_loss: delta must be > 0 (torch: huber_loss does not "
                           f"support non-positive values for delta.), got {delta}")
    _check_weight_size("huber_loss", input, weight)
    return ops.pointwise_loss(ops.HUBER, input, target, weight, None, reduction, delta, backend,
                              lambda: reference.huber_loss(input, target, reduction, delta, weight),
                              lambda: _torch(TF.huber_loss, input, target, reduction=reduction, delta=delta, weight=weight))


def binary_cross_entropy_with_logits(
        input: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
        size_average: bool | None = None, reduce: bool | None = None, reduction: str = "mean",
        pos_weight: torch.Tensor | None = None, *, backend: str | None = "auto") -> torch.Tensor:
    """Binary cross-entropy on logits: torch.nn.functional.binary_cross_entropy_with_logits, fused.

    Stable for logits of any magnitude (one exp of -|x|). target must have input's size and may
    lie outside [0, 1] (torch allows it) and requires grad if you like; weight and pos_weight
    broadcast against input as in torch (a per-class pos_weight of shape (C,) is read, not
    copied); "mean" divides by the element count.
    """
    reduction = _args.legacy_reduction(size_average, reduce, reduction)
    fn = "binary_cross_entropy_with_logits"
    if isinstance(input, torch.Tensor) and isinstance(target, torch.Tensor) and target.size() != input.size():
        raise ValueError(f"fastloss.{fn}: target must have input's size {tuple(input.shape)}, got "
                         f"{tuple(target.shape)} (torch: Target size must be the same as input size)")
    return ops.pointwise_loss(
        ops.BCE_WITH_LOGITS, input, target, weight, pos_weight, reduction, 0.0, backend,
        lambda: reference.binary_cross_entropy_with_logits(input, target, weight, reduction, pos_weight),
        lambda: _torch(TF.binary_cross_entropy_with_logits, input, target, weight, reduction=reduction, pos_weight=pos_weight))


def masked_mse_loss(input: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, *,
                    norm_target: bool = False, eps: float = 1e-6,
                    backend: str | None = "auto") -> torch.Tensor:
    """The masked autoencoder's patch loss, fused: one pass per patch row.

    Args:
        input, target: (N, L, P) patches of P values (any leading dimensions work).
        mask: (N, L), bool or numeric: 1 (or any weight) where the patch counts.
        norm_target: normalise each target patch by its own mean and unbiased variance,
            (t - mean) / sqrt(var + eps), as MAE's norm_pix_loss does.
        eps: added to the variance.

    Returns:
        sum(patch_loss * mask) / sum(mask), patch_loss the mean over P of the squared error
        (an all-zero mask gives NaN, as that formula does).

    Patches whose mask is 0 are not read: a NaN inside a masked-out patch does not reach the
    loss (the plain formula would give NaN, since NaN * 0 is NaN). The gradient of input is
    fused; gradients of target or of a float mask come from the plain formula.
    """
    return masked_ops.masked_mse_loss(
        input, target, mask, norm_target, eps, backend,
        lambda: reference.masked_mse_loss(input, target, mask, norm_target, eps))


DISTANCES = ("euclidean", "manhattan", "cosine")


def contrastive_loss(x1: torch.Tensor, x2: torch.Tensor, target: torch.Tensor, margin: float = 1.0,
                     distance: str = "euclidean", reduction: str = "mean", *, eps: float = 1e-6,
                     backend: str | None = "auto") -> torch.Tensor:
    """The contrastive loss of siamese networks on pairs of embeddings, fused.

    Per pair: 0.5 * (y * d^2 + (1 - y) * max(0, margin - d)^2), with y = target: 1 for a similar
    pair, 0 for a dissimilar one, values in between as soft labels (bool, int or float). This is
    Hadsell, Chopra and LeCun (2006) with the now common convention: their Y is 1 - target.

    Args:
        x1, x2: (N, D) embeddings, (D,) for one pair, or any (..., D).
        target: one per row: (N,), 0-d for one pair, or the leading dimensions (...).
        margin: how far dissimilar pairs are pushed (negative margins are accepted, as torch's).
        distance: "euclidean" = F.pairwise_distance(x1, x2, p=2, eps=eps) (eps added to the
            difference, as torch does), "manhattan" the same with p=1, "cosine" =
            1 - F.cosine_similarity(x1, x2, dim=-1, eps=1e-8).
        reduction: "mean" | "sum" | "none".

    With distance="cosine" and margin=0.5 this is sentence-transformers' ContrastiveLoss with its
    default SiameseDistanceMetric.COSINE_DISTANCE and size_average=True, labels 1 = similar.
    """
    if distance not in DISTANCES:
        raise ValueError(f"fastloss.contrastive_loss: distance must be one of {', '.join(map(repr, DISTANCES))}, "
                         f"got {distance!r}")
    _args.check_tensor("contrastive_loss", "target", target)
    if target.dtype.is_complex:
        raise TypeError(f"fastloss.contrastive_loss: target must be bool, integer or floating point, got {target.dtype}")
    return row_ops.row_loss(
        "contrastive_loss", row_ops.CONTRASTIVE[distance], [("x1", x1), ("x2", x2)], target, reduction,
        margin, eps, 2.0, False, backend,
        lambda: reference.contrastive_loss(x1, x2, target, margin, distance, reduction, eps))


def triplet_margin_loss(anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor,
                        margin: float = 1.0, p: float = 2, eps: float = 1e-6, swap: bool = False,
                        size_average: bool | None = None, reduce: bool | None = None,
                        reduction: str = "mean", *, backend: str | None = "auto") -> torch.Tensor:
    """torch.nn.functional.triplet_margin_loss, fused: max(d(a, p) - d(a, n) + margin, 0) with
    d = pairwise_distance (norm p, eps added to the difference); swap uses min(d(a, n), d(p, n)).
    Fast paths for p = 2 and p = 1; any other positive p works too."""
    reduction = _args.legacy_reduction(size_average, reduce, reduction)
    if margin <= 0:
        raise ValueError(f"fastloss.triplet_margin_loss: margin must be greater than 0, got {margin} "
                         "(as torch)")
    p = float(p)
    kind = row_ops.TRIPLET_L2 if p == 2.0 else row_ops.TRIPLET_L1 if p == 1.0 else row_ops.TRIPLET_LP
    ref = lambda: reference.triplet_margin_loss(anchor, positive, negative, margin, p, eps, swap, reduction)  # noqa: E731
    if not (p > 0 and p != float("inf")):
        return ref()  # torch's own handling of p <= 0 and infinity
    return row_ops.row_loss("triplet_margin_loss", kind, [("anchor", anchor), ("positive", positive),
                                                          ("negative", negative)],
                            None, reduction, margin, eps, p, swap, backend, ref,
                            lambda: _torch(TF.triplet_margin_loss, anchor, positive, negative, margin=margin, p=p, eps=eps,
                                   swap=swap, reduction=reduction))


def cosine_embedding_loss(input1: torch.Tensor, input2: torch.Tensor, target: torch.Tensor,
                          margin: float = 0, size_average: bool | None = None, reduce: bool | None = None,
                          reduction: str = "mean", *, backend: str | None = "auto") -> torch.Tensor:
    """torch.nn.functional.cosine_embedding_loss, fused: 1 - cos for target 1, max(0, cos -
    margin) for target -1, 0 for any other target value (as torch)."""
    reduction = _args.legacy_reduction(size_average, reduce, reduction)
    _args.check_tensor("cosine_embedding_loss", "target", target)
    return row_ops.row_loss(
        "cosine_embedding_loss", row_ops.COSINE_EMBEDDING, [("input1", input1), ("input2", input2)], target,
        reduction, margin, 0.0, 2.0, False, backend,
        lambda: reference.cosine_embedding_loss(input1, input2, target, margin, reduction),
        lambda: _torch(TF.cosine_embedding_loss, input1, input2, target, margin=margin, reduction=reduction), max_dim=2)


def batch_contrastive_loss(embeddings: torch.Tensor, labels: torch.Tensor, pos_margin: float = 0.0,
                           neg_margin: float = 1.0, *, normalize: bool = True,
                           ref_embeddings: torch.Tensor | None = None, ref_labels: torch.Tensor | None = None,
                           reduction: str = "avg_nonzero", backend: str | None = "auto", all_gather: bool = False,
                           group=None) -> torch.Tensor:
    """The all-pairs contrastive loss of a batch, tile by tile: memory O(N), never the N x N matrix.

    pytorch-metric-learning's ``ContrastiveLoss(pos_margin, neg_margin)`` with its default
    distance: the rows L2-normalised first (``normalize``), d the Euclidean distance. Without a
    reference set every ordered pair (i, j), i != j, is positive when the labels are equal and
    negative otherwise; with ``ref_embeddings``/``ref_labels`` the pairs are (query i, reference
    j) for every i and j. A positive costs max(0, d - pos_margin), a negative max(0, neg_margin - d).

    Args:
        embeddings: (N, D) floating point.
        labels: (N,) integer class ids.
        pos_margin, neg_margin: >= 0.
        normalize: L2-normalise the rows (and the reference rows) first.
        ref_embeddings, ref_labels: an (M, D) reference set and its (M,) labels, both or neither.
        reduction: "avg_nonzero" (the mean of the positive costs > 0 plus the mean of the
            negative costs > 0, a term with none counting 0), "mean" (over all pairs), "sum".
        backend: "auto" | "cpu" | "cuda" | "triton" | "torch" (the materialised formula).
        all_gather: in an initialised torch.distributed process group (``group``, default the
            world) of more than one rank: this rank's rows are paired with every rank's (the global
            batch, rank order; ranks may hold different N), and the normalisers (the number of
            pairs, the counts of costs > 0) are those of the global batch. Returns L_r such that
            the mean over the ranks is the single-process loss on the global batch and the
            DDP-averaged gradients are its gradients (see fastloss.distributed). Not with a
            reference set. Outside a group (or with one rank) the plain loss.

    Returns:
        A 0-d tensor in embeddings' dtype; gradients reach embeddings and ref_embeddings.
    """
    return batch_ops.batch_contrastive_loss(
        embeddings, labels, pos_margin, neg_margin, normalize, ref_embeddings, ref_labels, reduction, backend,
        lambda: reference.batch_contrastive_loss(embeddings, labels, pos_margin, neg_margin, normalize,
                                                 ref_embeddings, ref_labels, reduction), all_gather, group)


def batch_hard_triplet_loss(embeddings: torch.Tensor, labels: torch.Tensor, margin: float = 0.05, *,
                            normalize: bool = True, soft: bool = False, reduction: str = "avg_nonzero",
                            backend: str | None = "auto", all_gather: bool = False, group=None) -> torch.Tensor:
    """The batch-hard triplet loss (Hermans, Beyer and Leibe 2017), tile by tile: memory O(N).

    For each anchor i its hardest positive (the largest distance to a j != i with the same
    label) and hardest negative (the smallest distance to another label), ties to the lowest
    index; anchors without a positive or without a negative are left out. An anchor costs
    max(0, d_ap - d_an + margin), or softplus(d_ap - d_an) when ``soft``. At the defaults this is
    pytorch-metric-learning's ``TripletMarginLoss(margin=0.05)`` fed by ``BatchHardMiner()``.

    Args:
        embeddings: (N, D) floating point; labels: (N,) integer class ids.
        margin: >= 0 (not used when soft).
        normalize: L2-normalise the rows first.
        reduction: "avg_nonzero" (the mean of the costs > 0), "mean" (over the kept anchors), "sum".
        all_gather: in an initialised torch.distributed process group (``group``) of more than
            one rank: this rank's anchors are mined against every rank's rows (the global batch),
            the numbers of kept anchors and of costs > 0 are the global ones; the contract of
            :func:`batch_contrastive_loss` (see fastloss.distributed).

    Returns:
        A 0-d tensor in embeddings' dtype. The gradient reaches each anchor, its hardest positive
        and its hardest negative.
    """
    return batch_ops.batch_hard_triplet_loss(
        embeddings, labels, margin, normalize, soft, reduction, backend,
        lambda: reference.batch_hard_triplet_loss(embeddings, labels, margin, normalize, soft, reduction),
        all_gather, group)


def info_nce_loss(query: torch.Tensor, key: torch.Tensor, temperature: float | torch.Tensor = 0.07, *,
                  symmetric: bool = False, normalize: bool = False, reduction: str = "mean",
                  backend: str | None = "auto", all_gather: bool = False, group=None) -> torch.Tensor:
    """InfoNCE (and CLIP's symmetric loss) tile by tile: memory O(B + M), never the B x M logits.

    The logits are ``query @ key.T / temperature``; row i's target is key i, and every other key
    is a negative for it, keys B..M-1 (extra or hard negatives) for every row. The value and the
    gradients are those of ``F.cross_entropy(logits, torch.arange(B), reduction=reduction)`` on
    the materialised logits; ``symmetric=True`` averages it with the key -> query direction,
    ``F.cross_entropy(logits.T, arange(B))``, as CLIP does.

    Args:
        query: (B, D) floating point.
        key: (M, D) with M >= B (M = B when symmetric).
        temperature: a float > 0, or a 0-d floating tensor that may require grad (a learnable
            temperature, or ``1 / logit_scale.exp()``): it receives its exact gradient. A
            tensor's value is checked (> 0) on the CPU only, where that costs no device sync.
        symmetric: average the query -> key and key -> query losses (CLIP).
        normalize: L2-normalise query and key rows first (cosine similarities).
        reduction: "mean" (over the B rows), "sum", or "none": (B,) per-row losses (for
            symmetric, each pair's average of its two directions).
        backend: "auto" | "cpu" | "cuda" | "triton" | "torch" (the materialised formula).
        all_gather: in an initialised torch.distributed process group (``group``, default the
            world) of more than one rank, compare this rank's rows with the keys (and, for
            symmetric, the queries) of every rank: global negatives. The global batch is every
            rank's query rows in rank order (ranks may hold different B), the keys every rank's
            paired keys, then every rank's extra ones. Returns L_r such that the mean over the
            ranks is the single-process loss on the global batch, and the DDP-averaged gradients
            are its gradients (see fastloss.distributed); "none" gives this rank's rows. Outside
            a group (or with one rank) the plain loss.

    Returns:
        The loss in the promoted dtype of query and key; gradients reach query, key and a
        temperature tensor that requires grad.
    """
    return info_nce_ops.info_nce_loss(
        query, key, temperature, symmetric, normalize, reduction, backend,
        lambda: reference.info_nce_loss(query, key, temperature, symmetric, normalize, reduction), all_gather, group)


def nt_xent_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float | torch.Tensor = 0.5, *,
                 reduction: str = "mean", backend: str | None = "auto", all_gather: bool = False,
                 group=None) -> torch.Tensor:
    """SimCLR's NT-Xent loss (Chen et al. 2020) on two views, tile by tile: memory O(B).

    The 2B embeddings ``cat([z1, z2])`` are L2-normalised; each one's positive is its other view
    and its negatives are the other 2B - 2 embeddings; the loss is the cross-entropy of the
    similarities / temperature, averaged over the 2B rows.

    Args:
        z1, z2: (B, D) floating point, row i of each a view of the same sample.
        temperature: a float > 0 or a 0-d floating tensor (may require grad).
        reduction: "mean" (over the 2B rows), "sum", or "none": (2B,), z1's rows first.
        backend: "auto" | "cpu" | "cuda" | "triton" | "torch" (the materialised formula).
        all_gather: across the ranks of ``group`` (see :func:`info_nce_loss`): the global batch
            is cat(every rank's z1, every rank's z2); "none" gives this rank's 2B rows, z1's first.

    Returns:
        The loss in the promoted dtype of z1 and z2.
    """
    return info_nce_ops.nt_xent_loss(z1, z2, temperature, reduction, backend,
                                     lambda: reference.nt_xent_loss(z1, z2, temperature, reduction), all_gather,
                                     group)
