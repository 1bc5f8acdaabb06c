"""fastloss: fused Triton and C++/CUDA kernels for PyTorch losses, as drop-ins.

    import fastloss
    loss = fastloss.mse_loss(pred, target)          # same as F.mse_loss, one fused pass
    criterion = fastloss.MSELoss(reduction="sum")   # same as nn.MSELoss
    fastloss.patch_torch()                          # F.mse_loss, nn.MSELoss, ... are fastloss's now
"""

from ._backend import available as available_backends
from .cache import CacheInfo, cache_info, empty_cache
from .functional import (batch_contrastive_loss, batch_hard_triplet_loss, binary_cross_entropy_with_logits,
                         contrastive_loss, cosine_embedding_loss, huber_loss, info_nce_loss, l1_loss, masked_mse_loss,
                         mse_loss, nt_xent_loss, smooth_l1_loss, triplet_margin_loss)
from .nn import (BatchContrastiveLoss, BatchHardTripletLoss, BCEWithLogitsLoss, ContrastiveLoss, CosineEmbeddingLoss,
                 HuberLoss, InfoNCELoss, L1Loss, MaskedMSELoss, MSELoss, NTXentLoss, SmoothL1Loss, TripletMarginLoss)
from .patch import patch_torch, patched_torch, unpatch_torch

__version__ = "0.1.0"

__all__ = [
    "BatchContrastiveLoss", "BatchHardTripletLoss", "BCEWithLogitsLoss", "CacheInfo", "ContrastiveLoss",
    "CosineEmbeddingLoss", "HuberLoss", "InfoNCELoss", "L1Loss", "MSELoss", "MaskedMSELoss", "NTXentLoss",
    "SmoothL1Loss", "TripletMarginLoss", "available_backends", "batch_contrastive_loss", "batch_hard_triplet_loss",
    "binary_cross_entropy_with_logits", "cache_info", "contrastive_loss", "cosine_embedding_loss", "empty_cache",
    "huber_loss", "info_nce_loss", "l1_loss", "masked_mse_loss", "mse_loss", "nt_xent_loss", "patch_torch",
    "patched_torch", "smooth_l1_loss", "triplet_margin_loss", "unpatch_torch", "__version__",
]
