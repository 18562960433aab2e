"""Modules: subclasses of the torch.nn classes they replace."""

from .activation import MultiheadAttention
from .batchnorm import BatchNorm2d
from .conv import Conv2d
from .linear import Linear
from .pooling import MaxPool2d
from .rnn import LSTM

__all__ = ["BatchNorm2d", "Conv2d", "LSTM", "Linear", "MaxPool2d", "MultiheadAttention"]
