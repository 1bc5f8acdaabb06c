"""nn.Module drop-ins: subclasses of the torch losses, so constructors and attributes match.
Each adds a keyword-only ``backend`` ("auto" | "cpu" | "cuda" | "triton" | "torch", any case;
None is "auto"), checked when the module is built and shown in its repr."""

from __future__ import annotations

import torch

from . import _backend, functional

__all__ = ["BatchContrastiveLoss", "BatchHardTripletLoss", "BCEWithLogitsLoss", "ContrastiveLoss", "CosineEmbeddingLoss", "HuberLoss", "L1Loss", "MSELoss",
           "MaskedMSELoss", "SmoothL1Loss", "TripletMarginLoss"]


class _BackendChoice(torch.nn.Module):
    """The ``backend`` of fastloss's modules: checked when set (a wrong name, or a backend not
    built here, fails at construction, not at the first call) and shown in the repr."""

    @property
    def backend(self) -> str:
        return self._backend

    @backend.setter
    def backend(self, value: str | None) -> None:
        self._backend = _backend.check(value)

    def _settings_repr(self) -> str:
        return super().extra_repr()

    def extra_repr(self) -> str:
        return ", ".join(part for part in (self._settings_repr(), f"backend={self.backend!r}") if part)


class MSELoss(_BackendChoice, torch.nn.MSELoss):
    """torch.nn.MSELoss computed by fastloss's fused kernels."""

    def __init__(self, size_average: bool | None = None, reduce: bool | None = None,
                 reduction: str = "mean", *, backend: str | None = "auto") -> None:
        super().__init__(size_average, reduce, reduction)
        self.backend = backend

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return functional.mse_loss(input, target, reduction=self.reduction, backend=self.backend)


class L1Loss(_BackendChoice, torch.nn.L1Loss):
    """torch.nn.L1Loss computed by fastloss's fused kernels."""

    def __init__(self, size_average: bool | None = None, reduce: bool | None = None,
                 reduction: str = "mean", *, backend: str | None = "auto") -> None:
        super().__init__(size_average, reduce, reduction)
        self.backend = backend

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return functional.l1_loss(input, target, reduction=self.reduction, backend=self.backend)


class SmoothL1Loss(_BackendChoice, torch.nn.SmoothL1Loss):
    """torch.nn.SmoothL1Loss computed by fastloss's fused kernels."""

    def __init__(self, size_average: bool | None = None, reduce: bool | None = None,
                 reduction: str = "mean", beta: float = 1.0, *, backend: str | None = "auto") -> None:
        super().__init__(size_average, reduce, reduction, beta)
        self.backend = backend

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return functional.smooth_l1_loss(input, target, reduction=self.reduction, beta=self.beta,
                                         backend=self.backend)


class HuberLoss(_BackendChoice, torch.nn.HuberLoss):
    """torch.nn.HuberLoss computed by fastloss's fused kernels."""

    def __init__(self, reduction: str = "mean", delta: float = 1.0, *, backend: str | None = "auto") -> None:
        super().__init__(reduction, delta)
        self.backend = backend

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return functional.huber_loss(input, target, reduction=self.reduction, delta=self.delta,
                                     backend=self.backend)


class BCEWithLogitsLoss(_BackendChoice, torch.nn.BCEWithLogitsLoss):
    """torch.nn.BCEWithLogitsLoss computed by fastloss's fused kernels (weight and pos_weight
    are buffers, as in torch)."""

    def __init__(self, weight: torch.Tensor | None = None, size_average: bool | None = None,
                 reduce: bool | None = None, reduction: str = "mean",
                 pos_weight: torch.Tensor | None = None, *, backend: str | None = "auto") -> None:
        super().__init__(weight, size_average, reduce, reduction, pos_weight)
        self.backend = backend

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return functional.binary_cross_entropy_with_logits(
            input, target, self.weight, pos_weight=self.pos_weight, reduction=self.reduction,
            backend=self.backend)


class MaskedMSELoss(_BackendChoice, torch.nn.Module):
    """The masked autoencoder's patch loss as a module: forward(input, target, mask).

    See :func:`fastloss.masked_mse_loss`.
    """

    def __init__(self, norm_target: bool = False, eps: float = 1e-6, *, backend: str | None = "auto") -> None:
        super().__init__()
        self.norm_target = norm_target
        self.eps = eps
        self.backend = backend

    def forward(self, input: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return functional.masked_mse_loss(input, target, mask, norm_target=self.norm_target,
                                          eps=self.eps, backend=self.backend)

    def _settings_repr(self) -> str:
        return f"norm_target={self.norm_target}, eps={self.eps}"


class ContrastiveLoss(_BackendChoice, torch.nn.Module):
    """The contrastive loss of siamese networks: forward(x1, x2, target); see
    :func:`fastloss.contrastive_loss`."""

    def __init__(self, margin: float = 1.0, distance: str = "euclidean", reduction: str = "mean", *,
                 eps: float = 1e-6, backend: str | None = "auto") -> None:
        super().__init__()
        self.margin, self.distance, self.reduction, self.eps, self.backend = margin, distance, reduction, eps, backend

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return functional.contrastive_loss(x1, x2, target, self.margin, self.distance, self.reduction,
                                           eps=self.eps, backend=self.backend)

    def _settings_repr(self) -> str:
        return f"margin={self.margin}, distance={self.distance!r}, reduction={self.reduction!r}"


class TripletMarginLoss(_BackendChoice, torch.nn.TripletMarginLoss):
    """torch.nn.TripletMarginLoss computed by fastloss's fused row kernel."""

    def __init__(self, margin: float = 1.0, p: float = 2.0, eps: float = 1e-6, swap: bool = False,
                 size_average: bool | None = None, reduce: bool | None = None, reduction: str = "mean", *,
                 backend: str | None = "auto") -> None:
        super().__init__(margin, p, eps, swap, size_average, reduce, reduction)
        self.backend = backend

    def forward(self, anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
        return functional.triplet_margin_loss(anchor, positive, negative, margin=self.margin, p=self.p,
                                              eps=self.eps, swap=self.swap, reduction=self.reduction,
                                              backend=self.backend)


class CosineEmbeddingLoss(_BackendChoice, torch.nn.CosineEmbeddingLoss):
    """torch.nn.CosineEmbeddingLoss computed by fastloss's fused row kernel."""

    def __init__(self, margin: float = 0.0, size_average: bool | None = None, reduce: bool | None = None,
                 reduction: str = "mean", *, backend: str | None = "auto") -> None:
        super().__init__(margin, size_average, reduce, reduction)
        self.backend = backend

    def forward(self, input1: torch.Tensor, input2: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return functional.cosine_embedding_loss(input1, input2, target, margin=self.margin,
                                                reduction=self.reduction, backend=self.backend)


class BatchContrastiveLoss(_BackendChoice, torch.nn.Module):
    """The all-pairs contrastive loss of a batch: forward(embeddings, labels, ref_embeddings=None,
    ref_labels=None); see :func:`fastloss.batch_contrastive_loss`."""

    def __init__(self, pos_margin: float = 0.0, neg_margin: float = 1.0, *, normalize: bool = True,
                 reduction: str = "avg_nonzero", backend: str | None = "auto", all_gather: bool = False,
                 group=None) -> None:
        super().__init__()
        self.pos_margin, self.neg_margin, self.normalize = pos_margin, neg_margin, normalize
        self.reduction, self.backend, self.all_gather, self.group = reduction, backend, all_gather, group

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor, ref_embeddings: torch.Tensor | None = None,
                ref_labels: torch.Tensor | None = None) -> torch.Tensor:
        return functional.batch_contrastive_loss(
            embeddings, labels, self.pos_margin, self.neg_margin, normalize=self.normalize,
            ref_embeddings=ref_embeddings, ref_labels=ref_labels, reduction=self.reduction, backend=self.backend,
            all_gather=self.all_gather, group=self.group)

    def _settings_repr(self) -> str:
        return (f"pos_margin={self.pos_margin}, neg_margin={self.neg_margin}, normalize={self.normalize}, "
                f"reduction={self.reduction!r}")


class BatchHardTripletLoss(_BackendChoice, torch.nn.Module):
    """The batch-hard triplet loss: forward(embeddings, labels); see
    :func:`fastloss.batch_hard_triplet_loss`."""

    def __init__(self, margin: float = 0.05, *, normalize: bool = True, soft: bool = False,
                 reduction: str = "avg_nonzero", backend: str | None = "auto", all_gather: bool = False,
                 group=None) -> None:
        super().__init__()
        self.margin, self.normalize, self.soft, self.reduction, self.backend = margin, normalize, soft, reduction, backend
        self.all_gather, self.group = all_gather, group

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return functional.batch_hard_triplet_loss(embeddings, labels, self.margin, normalize=self.normalize,
                                                  soft=self.soft, reduction=self.reduction, backend=self.backend,
                                                  all_gather=self.all_gather, group=self.group)

    def _settings_repr(self) -> str:
        return f"margin={self.margin}, normalize={self.normalize}, soft={self.soft}, reduction={self.reduction!r}"


class InfoNCELoss(_BackendChoice, torch.nn.Module):
    """InfoNCE, or CLIP's loss with ``symmetric=True``: forward(query, key, temperature=None);
    see :func:`fastloss.info_nce_loss`. A tensor ``temperature`` given here (an
    ``nn.Parameter`` is registered and learned with the module) or to forward, which takes
    precedence, receives its gradient."""

    def __init__(self, temperature: float | torch.Tensor = 0.07, *, symmetric: bool = False, normalize: bool = False,
                 reduction: str = "mean", backend: str | None = "auto", all_gather: bool = False, group=None) -> None:
        super().__init__()
        self.temperature = temperature
        self.symmetric, self.normalize, self.reduction, self.backend = symmetric, normalize, reduction, backend
        self.all_gather, self.group = all_gather, group

    def forward(self, query: torch.Tensor, key: torch.Tensor,
                temperature: float | torch.Tensor | None = None) -> torch.Tensor:
        return functional.info_nce_loss(query, key, self.temperature if temperature is None else temperature,
                                        symmetric=self.symmetric, normalize=self.normalize,
                                        reduction=self.reduction, backend=self.backend, all_gather=self.all_gather,
                                        group=self.group)

    def _settings_repr(self) -> str:
        t = self.temperature
        shown = f"tensor({float(t.detach()):.4g})" if isinstance(t, torch.Tensor) else t
        return (f"temperature={shown}, symmetric={self.symmetric}, normalize={self.normalize}, "
                f"reduction={self.reduction!r}")


class NTXentLoss(_BackendChoice, torch.nn.Module):
    """SimCLR's NT-Xent loss on two views: forward(z1, z2); see :func:`fastloss.nt_xent_loss`."""

    def __init__(self, temperature: float | torch.Tensor = 0.5, *, reduction: str = "mean",
                 backend: str | None = "auto", all_gather: bool = False, group=None) -> None:
        super().__init__()
        self.temperature, self.reduction, self.backend = temperature, reduction, backend
        self.all_gather, self.group = all_gather, group

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        return functional.nt_xent_loss(z1, z2, self.temperature, reduction=self.reduction, backend=self.backend,
                                       all_gather=self.all_gather, group=self.group)

    def _settings_repr(self) -> str:
        t = self.temperature
        shown = f"tensor({float(t.detach()):.4g})" if isinstance(t, torch.Tensor) else t
        return f"temperature={shown}, reduction={self.reduction!r}"
