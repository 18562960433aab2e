"""tritonn.LayerNorm and tritonn.Dropout: their torch classes on Triton kernels."""

import torch

from ..ops.dropout import dropout
from ..ops.layer_norm import layer_norm


class LayerNorm(torch.nn.LayerNorm):
    """Drop-in for :class:`torch.nn.LayerNorm` (same constructor, parameters, state_dict):
    forward and backward (input, weight, bias) on Triton kernels, float32 statistics."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)


class Dropout(torch.nn.Dropout):
    """Drop-in for :class:`torch.nn.Dropout` on a Triton Philox kernel (never in place)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return dropout(input, self.p, self.training, self.inplace)
