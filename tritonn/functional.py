"""The functional API, mirroring :mod:`torch.nn.functional` where a tritonn op exists.

Every function takes torch's arguments in torch's order; extras (fused activations)
come after them as keywords with defaults that reproduce torch.
"""

from .ops.attention import scaled_dot_product_attention
from .ops.batch_norm import batch_norm
from .ops.conv import conv2d
from .ops.dropout import dropout
from .ops.layer_norm import layer_norm
from .ops.linear import linear
from .ops.lstm import lstm
from .ops.max_pool import max_pool2d
from .ops.multihead_attention import multi_head_attention_forward

__all__ = ["batch_norm", "conv2d", "dropout", "layer_norm", "linear", "lstm", "max_pool2d", "multi_head_attention_forward",
           "scaled_dot_product_attention"]
