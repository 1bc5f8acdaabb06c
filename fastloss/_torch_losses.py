"""torch's own loss functions, as they were when fastloss was imported.

fastloss falls back to them (and its reference formulas call them); it must not look them up in
torch.nn.functional at call time, where `fastloss.patch_torch()` may have put fastloss's own
drop-ins: the fallback would call itself.
"""

import torch.nn.functional as _F

mse_loss = _F.mse_loss
l1_loss = _F.l1_loss
smooth_l1_loss = _F.smooth_l1_loss
huber_loss = _F.huber_loss
binary_cross_entropy_with_logits = _F.binary_cross_entropy_with_logits
triplet_margin_loss = _F.triplet_margin_loss
cosine_embedding_loss = _F.cosine_embedding_loss
