"""tritonn: drop-in replacements for torch.nn layers, forward and backward in Triton.

Layers stack one way: ``tritonn.kernels`` (``@triton.jit`` code) -> ``tritonn.ops``
(launchers, autograd Functions) -> ``tritonn.functional`` -> ``tritonn.nn`` (modules).
``tritonn.runtime`` decides where a call runs.
"""

from . import functional, runtime
from .nn import LSTM, BatchNorm2d, Conv2d, Linear, MaxPool2d, MultiheadAttention
from .runtime import FallbackError

__version__ = "0.1.0"

__all__ = ["BatchNorm2d", "Conv2d", "FallbackError", "LSTM", "Linear", "MaxPool2d", "MultiheadAttention", "functional", "runtime", "__version__"]
