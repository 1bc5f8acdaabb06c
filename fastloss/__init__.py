"""fastloss: fused Triton and C++/CUDA kernels for PyTorch losses, as drop-ins.

    import fastloss
    loss = fastloss.mse_loss(pred, target)          # same as F.mse_loss, one fused pass
    criterion = fastloss.MSELoss(reduction="sum")   # same as nn.MSELoss
"""

from ._backend import available as available_backends
from .functional import mse_loss
from .nn import MSELoss

__version__ = "0.1.0"

__all__ = ["MSELoss", "available_backends", "mse_loss", "__version__"]
