"""tritonn: drop-in replacements for torch.nn layers, forward and backward in Triton.

Layers stack one way: ``tritonn.kernels`` (``@triton.jit`` code) -> ``tritonn.ops``
(launchers, autograd Functions) -> ``tritonn.functional`` -> ``tritonn.nn`` (modules).
``tritonn.runtime`` decides where a call runs.
"""

from . import functional, runtime
from .nn import (LSTM, BatchNorm2d, Conv2d, Dropout, LayerNorm, Linear, MaxPool2d, MultiheadAttention, Transformer,
                 TransformerDecoder, TransformerDecoderLayer, TransformerEncoder, TransformerEncoderLayer)
from .runtime import FallbackError
from .convert import convert

__version__ = "0.1.0"

__all__ = ["BatchNorm2d", "Conv2d", "Dropout", "FallbackError", "convert", "LSTM", "LayerNorm", "Linear",
           "Transformer", "TransformerDecoder", "TransformerDecoderLayer", "TransformerEncoder", "TransformerEncoderLayer", "MaxPool2d", "MultiheadAttention", "functional", "runtime", "__version__"]
