"""tritonn.Conv2d: torch.nn.Conv2d with its forward and backward on Triton kernels."""

import torch

from .. import functional as TF


class Conv2d(torch.nn.Conv2d):
    """Drop-in for :class:`torch.nn.Conv2d`: same constructor, parameters, init,
    state_dict and repr, every option (stride, padding including 'same'/'valid',
    dilation, groups, bias, padding_mode). Padding modes are handled inside the
    kernels instead of by padding a copy of the input."""

    def _conv_forward(self, input, weight, bias):
        return TF.conv2d(input, weight, bias, self.stride, self.padding, self.dilation, self.groups,
                         padding_mode=self.padding_mode)
