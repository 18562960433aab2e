"""The functional API, mirroring :mod:`torch.nn.functional` where a tritonn op exists.

Every function takes torch's arguments in torch's order; extras (fused activations)
come after them as keywords with defaults that reproduce torch.
"""

from .ops.linear import linear

__all__ = ["linear"]
