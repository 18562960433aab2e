"""The functional API, mirroring :mod:`torch.nn.functional` where a tritonn op exists.

Every function takes torch's arguments in torch's order; extras (fused activations)
come after them as keywords with defaults that reproduce torch.
"""

from .ops.batch_norm import batch_norm
from .ops.conv import conv2d
from .ops.linear import linear
from .ops.max_pool import max_pool2d

__all__ = ["batch_norm", "conv2d", "linear", "max_pool2d"]
