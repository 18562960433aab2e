"""tritonn.MaxPool2d: torch.nn.MaxPool2d with its forward and backward on Triton kernels."""

import torch

from .. import functional as TF


class MaxPool2d(torch.nn.MaxPool2d):
    """Drop-in for :class:`torch.nn.MaxPool2d`: same constructor, defaults, attributes
    and repr (no parameters); forward and backward run the tritonn pooling kernels
    (see :func:`tritonn.functional.max_pool2d`)."""

    def forward(self, input: torch.Tensor):
        return TF.max_pool2d(input, self.kernel_size, self.stride, self.padding, self.dilation,
                             ceil_mode=self.ceil_mode, return_indices=self.return_indices)
