"""Modules: subclasses of the torch.nn classes they replace."""

from .activation import MultiheadAttention
from .batchnorm import BatchNorm2d
from .conv import Conv2d
from .linear import Linear
from .normalization import Dropout, LayerNorm
from .pooling import MaxPool2d
from .rnn import LSTM
from .transformer import (Transformer, TransformerDecoder, TransformerDecoderLayer, TransformerEncoder,
                          TransformerEncoderLayer)

__all__ = ["BatchNorm2d", "Conv2d", "Dropout", "LSTM", "LayerNorm", "Linear", "MaxPool2d", "MultiheadAttention",
           "Transformer", "TransformerDecoder", "TransformerDecoderLayer", "TransformerEncoder",
           "TransformerEncoderLayer"]
