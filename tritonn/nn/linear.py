"""tritonn.Linear: torch.nn.Linear with its forward and backward on Triton kernels."""

import torch

from .. import functional as TF


class Linear(torch.nn.Linear):
    """Drop-in for :class:`torch.nn.Linear`: same constructor, parameters, init,
    state_dict and repr; ``y = x W^T + b`` runs on the tritonn GEMM core, forward
    and backward. For a fused activation use :func:`tritonn.functional.linear`."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return TF.linear(input, self.weight, self.bias)
