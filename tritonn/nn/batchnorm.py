"""tritonn.BatchNorm2d: torch.nn.BatchNorm2d with its forward and backward on Triton kernels."""

import torch

from .. import functional as TF


class BatchNorm2d(torch.nn.BatchNorm2d):
    """Drop-in for :class:`torch.nn.BatchNorm2d`: same constructor, parameters,
    buffers, state_dict and repr. ``forward`` is torch's ``_BatchNorm.forward`` line
    for line, except that ``num_batches_tracked.add_(1)`` and the cumulative factor
    ``1 / num_batches_tracked`` (``momentum=None``) happen on the device, in the
    statistics kernels, instead of as torch ops. For BN + ReLU fused, use
    :func:`tritonn.functional.batch_norm` with ``activation="relu"``."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(input)

        # torch: exponential_average_factor = 0.0 if momentum is None else momentum
        exponential_average_factor = 0.0 if self.momentum is None else self.momentum
        num_batches_tracked = None
        if self.training and self.track_running_stats:
            if self.num_batches_tracked is not None:
                # torch: num_batches_tracked.add_(1), then 1 / num_batches_tracked for momentum=None;
                # here the kernels do both on the device.
                num_batches_tracked = self.num_batches_tracked
                exponential_average_factor = self.momentum  # None: cumulative moving average

        # Batch statistics in training, and in eval mode when there are no buffers.
        if self.training:
            bn_training = True
        else:
            bn_training = (self.running_mean is None) and (self.running_var is None)

        # Buffers are passed only when they are updated (training, tracked) or used (eval).
        track = not self.training or self.track_running_stats
        return TF.batch_norm(
            input,
            self.running_mean if track else None,
            self.running_var if track else None,
            self.weight,
            self.bias,
            bn_training,
            exponential_average_factor,
            self.eps,
            num_batches_tracked=num_batches_tracked,
        )
