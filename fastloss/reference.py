"""Plain-torch versions of every loss: the test oracle, and the "torch" backend.

Elementwise terms come from torch's own ops (so values and gradients, NaN cases included, are
torch's); weighting and reduction follow torch.nn.functional. The masked MSE, which torch does
not have, is written out as its definition.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import _torch_losses as TF


def reduce(loss: torch.Tensor, reduction: str, weight: torch.Tensor | None = None,
           mean_by_weight_sum: bool = False) -> torch.Tensor:
    """Apply a reduction to an elementwise (already weighted) loss. A weighted "mean" divides
    by the sum of the weights where torch does (MSE, L1), else by the element count."""
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if weight is not None and mean_by_weight_sum:
        return loss.sum() / weight.sum()  # torch sums the weight as given, not broadcast
    return loss.mean()


def _weighted(loss: torch.Tensor, reduction: str, weight: torch.Tensor | None,
              mean_by_weight_sum: bool) -> torch.Tensor:
    if weight is not None:
        loss = loss * weight
    return reduce(loss, reduction, weight, mean_by_weight_sum)


def mse_loss(input, target, reduction="mean", weight=None):
    """mean/sum/none of weight * (input - target)^2."""
    return _weighted((input - target) ** 2, reduction, weight, True)


def l1_loss(input, target, reduction="mean", weight=None):
    """mean/sum/none of weight * |input - target|."""
    return _weighted((input - target).abs(), reduction, weight, True)


def smooth_l1_loss(input, target, reduction="mean", beta=1.0):
    """Smooth L1 (beta = 0 is L1, as in torch)."""
    with _quiet():
        return reduce(TF.smooth_l1_loss(input, target, reduction="none", beta=beta), reduction)


def huber_loss(input, target, reduction="mean", delta=1.0, weight=None):
    """Huber; a weighted "mean" divides by the element count, as torch does."""
    with _quiet():
        return _weighted(TF.huber_loss(input, target, reduction="none", delta=delta), reduction, weight, False)


def binary_cross_entropy_with_logits(input, target, weight=None, reduction="mean", pos_weight=None):
    """BCE on logits with torch's stable formula; float16/bfloat16 go through float32, as the
    kernels do (torch's composite in half precision loses most digits to cancellation)."""
    dtype = torch.promote_types(input.dtype, target.dtype)
    if dtype in (torch.float16, torch.bfloat16):
        up = [None if t is None else t.float() for t in (input, target, weight, pos_weight)]
        out = TF.binary_cross_entropy_with_logits(up[0], up[1], up[2], reduction=reduction, pos_weight=up[3])
        return out.to(dtype)
    return TF.binary_cross_entropy_with_logits(input, target, weight, reduction=reduction, pos_weight=pos_weight)


def masked_mse_loss(input, target, mask, norm_target=False, eps=1e-6):
    """The masked autoencoder's patch loss: input, target (N, L, P), mask (N, L).

    Per patch: the target optionally normalised by its own mean and unbiased variance,
    (t - mean) / sqrt(var + eps); the mean over P of the squared error; then
    sum(patch_loss * mask) / sum(mask). float16/bfloat16 go through float32, as the kernels do.
    """
    dtype = torch.promote_types(input.dtype, target.dtype)
    if dtype in (torch.float16, torch.bfloat16):
        return masked_mse_loss(input.float(), target.float(), mask, norm_target, eps).to(dtype)
    if norm_target:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + eps) ** 0.5
    patch_loss = ((input - target) ** 2).mean(dim=-1)
    mask = mask.to(patch_loss.dtype)
    return (patch_loss * mask).sum() / mask.sum()


class _quiet:
    """Silences torch's size-mismatch warning (the public function already gave it)."""

    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", UserWarning)

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


def _via_float32(*tensors):
    """float16/bfloat16 operands as float32 (the kernels compute in float32; torch's composite
    formulas in half precision lose most digits), and the dtype to return."""
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    if dtype in (torch.float16, torch.bfloat16):
        return [t.float() for t in tensors], dtype
    return list(tensors), None


def contrastive_loss(x1, x2, target, margin=1.0, distance="euclidean", reduction="mean", eps=1e-6):
    """0.5 (y d^2 + (1 - y) max(0, margin - d)^2), y = 1 for a similar pair (Hadsell, Chopra
    and LeCun 2006 with their Y = 1 - y); d = pairwise_distance (p = 2 or 1, eps added to the
    difference) or 1 - cosine_similarity (eps 1e-8)."""
    (x1, x2), low = _via_float32(x1, x2)
    if low is not None:
        return contrastive_loss(x1, x2, target, margin, distance, reduction, eps).to(low)
    if distance == "euclidean":
        d = F.pairwise_distance(x1, x2, p=2.0, eps=eps)
    elif distance == "manhattan":
        d = F.pairwise_distance(x1, x2, p=1.0, eps=eps)
    else:
        d = 1.0 - F.cosine_similarity(x1, x2, dim=-1, eps=1e-8)
    y = target.to(d.dtype)
    loss = 0.5 * (y * d * d + (1.0 - y) * torch.clamp_min(margin - d, 0.0) ** 2)
    return reduce(loss, reduction)


def triplet_margin_loss(anchor, positive, negative, margin=1.0, p=2.0, eps=1e-6, swap=False, reduction="mean"):
    """torch's triplet margin loss (float16/bfloat16 through float32)."""
    (anchor, positive, negative), low = _via_float32(anchor, positive, negative)
    if low is not None:
        return triplet_margin_loss(anchor, positive, negative, margin, p, eps, swap, reduction).to(low)
    return TF.triplet_margin_loss(anchor, positive, negative, margin=margin, p=p, eps=eps, swap=swap,
                                 reduction=reduction)


def cosine_embedding_loss(input1, input2, target, margin=0.0, reduction="mean"):
    """torch's cosine embedding loss (float16/bfloat16 through float32)."""
    (input1, input2), low = _via_float32(input1, input2)
    if low is not None:
        return cosine_embedding_loss(input1, input2, target.float(), margin, reduction).to(low)
    return TF.cosine_embedding_loss(input1, input2, target, margin=margin, reduction=reduction)


def pairwise_distances(q, r):
    """Every Euclidean distance between rows of q (N, D) and r (M, D), in torch.cdist's matrix
    form sqrt(|q|^2 + |r|^2 - 2 q.r) (float16/bfloat16 through float32), with the in-batch
    kernels' rule (csrc/formulas/batch_pair.h): a d^2 below the form's resolution,
    8 eps (|q|^2 + |r|^2), is 0, so duplicates are at distance 0 and pass no gradient."""
    acc = torch.float32 if q.dtype in (torch.float16, torch.bfloat16) else q.dtype
    q, r = q.to(acc), r.to(acc)
    norms = (q * q).sum(1)[:, None] + (r * r).sum(1)[None, :]
    d2 = norms - 2.0 * (q @ r.T)
    d2 = torch.where(d2 > 8 * torch.finfo(acc).eps * norms, d2, torch.where(d2.isnan(), d2, 0.0))
    return torch.sqrt(d2)


def _in_batch_pairs(labels, ref_labels, self_reference):
    """The positive (same label) and negative pairs of the query x reference matrix; with the
    batch as its own reference set, a row is not paired with itself."""
    same = labels[:, None] == ref_labels[None, :]
    if self_reference:
        same = same & ~torch.eye(labels.shape[0], dtype=torch.bool, device=labels.device)
        return same, labels[:, None] != ref_labels[None, :]
    return same, ~same


def own_pairs(n, m, offset, device):
    """The n x m mask of the pairs (i, i + offset): a query's own row in a reference set holding
    the queries from row offset on (the rows past m have none)."""
    rows = torch.arange(n, device=device)
    inside = rows + offset < m
    mask = torch.zeros(n, m, dtype=torch.bool, device=device)
    mask[rows[inside], rows[inside] + offset] = True
    return mask


def _avg_nonzero(costs):
    """pytorch-metric-learning's AvgNonZero: the mean of the costs > 0, or 0 when there are none."""
    nonzero = costs > 0
    return torch.where(nonzero, costs, 0.0).sum() / nonzero.sum().clamp_min(1)


def batch_contrastive_loss(embeddings, labels, pos_margin=0.0, neg_margin=1.0, normalize=True,
                           ref_embeddings=None, ref_labels=None, reduction="avg_nonzero", self_offset=None):
    """The in-batch contrastive loss on the materialised N x M distance matrix:
    pytorch-metric-learning's ContrastiveLoss with its default Euclidean distance. self_offset
    (with a reference set holding the queries from that row on): the pairs (i, i + self_offset),
    a row with itself, are left out as the batch's own are."""
    q = F.normalize(embeddings, dim=1) if normalize else embeddings
    self_reference = ref_embeddings is None
    if self_reference:
        r, ref_labels = q, labels
    else:
        r = F.normalize(ref_embeddings, dim=1) if normalize else ref_embeddings
    d = pairwise_distances(q, r)
    pos, neg = _in_batch_pairs(labels, ref_labels, self_reference)
    if self_offset is not None and not self_reference:
        pos = pos & ~own_pairs(q.shape[0], r.shape[0], self_offset, q.device)
    pos_costs = torch.where(pos, F.relu(d - pos_margin), 0.0)
    neg_costs = torch.where(neg, F.relu(neg_margin - d), 0.0)
    if reduction == "avg_nonzero":
        loss = _avg_nonzero(pos_costs) + _avg_nonzero(neg_costs)
    else:
        loss = (pos_costs + neg_costs).sum()
        if reduction == "mean":
            loss = loss / (pos.sum() + neg.sum()).clamp_min(1)
    return loss.to(embeddings.dtype)


def batch_hard_triplet_loss(embeddings, labels, margin=0.05, normalize=True, soft=False, reduction="avg_nonzero",
                            ref_embeddings=None, ref_labels=None, self_offset=0):
    """The batch-hard triplet loss (Hermans et al. 2017) on the materialised distance matrix:
    per anchor its farthest positive and nearest negative (ties to the lowest index), anchors
    without either left out; max(0, d_ap - d_an + margin), or softplus(d_ap - d_an) when soft.
    The candidates are the batch itself, or ref_embeddings/ref_labels holding the anchors from row
    self_offset on (an anchor is never its own candidate)."""
    x = F.normalize(embeddings, dim=1) if normalize else embeddings
    if x.shape[0] == 0:
        return x.sum() * 0  # no anchors: 0, with a gradient of zeros
    if ref_embeddings is None:
        y, ref_labels, self_offset = x, labels, 0
    else:
        y = F.normalize(ref_embeddings, dim=1) if normalize else ref_embeddings
    d = pairwise_distances(x, y)
    same = labels[:, None] == ref_labels[None, :]
    pos, neg = same & ~own_pairs(x.shape[0], y.shape[0], self_offset, x.device), ~same
    hardest_pos = torch.argmax(torch.where(pos, d, -torch.inf), dim=1, keepdim=True)  # first of the ties
    hardest_neg = torch.argmin(torch.where(neg, d, torch.inf), dim=1, keepdim=True)
    d_ap, d_an = d.gather(1, hardest_pos)[:, 0], d.gather(1, hardest_neg)[:, 0]
    kept = pos.any(1) & neg.any(1)
    costs = F.softplus(d_ap - d_an) if soft else F.relu(d_ap - d_an + margin)
    costs = torch.where(kept, costs, 0.0)
    if reduction == "avg_nonzero":
        loss = _avg_nonzero(costs)
    else:
        loss = costs.sum()
        if reduction == "mean":
            loss = loss / kept.sum().clamp_min(1)
    return loss.to(embeddings.dtype)


def info_nce_loss(query, key, temperature=0.07, symmetric=False, normalize=False, reduction="mean"):
    """InfoNCE on the materialised B x M logits query key^T / temperature: each query row's
    cross-entropy against every key row, its target its own index (keys B.. are negatives for
    every row); symmetric (M = B) averages it with the key -> query direction (CLIP's loss).
    Mixed dtypes compute in their promotion."""
    dtype = torch.promote_types(query.dtype, key.dtype)
    query, key = query.to(dtype), key.to(dtype)
    if normalize:
        query, key = F.normalize(query, dim=1), F.normalize(key, dim=1)
    logits = query @ key.T / temperature
    target = torch.arange(query.shape[0], device=query.device)
    loss = F.cross_entropy(logits, target, reduction="none")
    if symmetric:
        loss = (loss + F.cross_entropy(logits.T, target, reduction="none")) / 2
    return reduce(loss, reduction)


def nt_xent_loss(z1, z2, temperature=0.5, reduction="mean"):
    """SimCLR's NT-Xent on the materialised 2B x 2B similarities of the L2-normalised views: each
    embedding's cross-entropy with its other view as the target, every other embedding but
    itself a negative; "none" gives the 2B rows' losses, z1's first."""
    dtype = torch.promote_types(z1.dtype, z2.dtype)
    z = torch.cat([F.normalize(z1.to(dtype), dim=1), F.normalize(z2.to(dtype), dim=1)])
    logits = z @ z.T / temperature
    n = z.shape[0]
    logits = logits.masked_fill(torch.eye(n, dtype=torch.bool, device=z.device), float("-inf"))
    target = (torch.arange(n, device=z.device) + n // 2) % max(n, 1)
    return reduce(F.cross_entropy(logits, target, reduction="none"), reduction)


def softmax_rows_against_set(rows, ref, temperature, pos_offset=0, pos_period=None, self_offset=None,
                             normalize=False):
    """Per row of `rows` (n, D): the cross-entropy of its logits against every row of `ref`
    (m, D), rows @ ref.T / temperature, its target ref row (i + pos_offset) mod pos_period
    (default: no wrap), the pair (i, i + self_offset) left out when self_offset is given. The
    common form of InfoNCE and NT-Xent for rows that are a slice of a global batch."""
    dtype = torch.promote_types(rows.dtype, ref.dtype)
    rows, ref = rows.to(dtype), ref.to(dtype)
    if normalize:
        rows, ref = F.normalize(rows, dim=1), F.normalize(ref, dim=1)
    logits = rows @ ref.T / temperature
    index = torch.arange(rows.shape[0], device=rows.device)
    if self_offset is not None:
        dropped = own_pairs(rows.shape[0], ref.shape[0], self_offset, rows.device)
        logits = logits.masked_fill(dropped, float("-inf"))
    target = index + pos_offset
    if pos_period is not None:
        target = target % pos_period
    return F.cross_entropy(logits, target, reduction="none")
