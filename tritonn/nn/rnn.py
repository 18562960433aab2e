"""tritonn.LSTM: torch.nn.LSTM with its forward and backward on Triton kernels."""

import torch
from torch.nn.utils.rnn import PackedSequence

from .. import functional as TF
from .. import runtime


class LSTM(torch.nn.LSTM):
    """Drop-in for :class:`torch.nn.LSTM`: same constructor, parameters (``weight_ih_l0``,
    ..., ``_reverse``), init, state_dict and repr; every option (num_layers, bias,
    batch_first, dropout, bidirectional, proj_size), unbatched input and
    PackedSequence. The recurrence, forward and backward, runs on tritonn's kernels
    (see :func:`tritonn.functional.lstm`)."""

    def forward(self, input, hx=None):
        self._update_flat_weights()
        data = input.data if isinstance(input, PackedSequence) else input
        tensors = [data, *(hx if hx is not None else ()), *self._flat_weights]
        if not runtime.runs_on_triton(*tensors):
            runtime.fallback("lstm", *tensors)
            return super().forward(input, hx)
        if isinstance(input, PackedSequence):
            data, batch_sizes, sorted_indices, _ = input
            if hx is not None:
                self.check_forward_args(data, hx, batch_sizes)
            else:
                self.check_input(data, batch_sizes)
            out, hn, cn = TF.lstm(data, hx, self._flat_weights, self.bias, self.num_layers, self.dropout,
                                  self.training, self.bidirectional, False,
                                  batch_sizes=batch_sizes, sorted_indices=sorted_indices)
            return PackedSequence(out, batch_sizes, sorted_indices, input.unsorted_indices), (hn, cn)
        if input.dim() not in (2, 3):
            raise ValueError(f"LSTM: Expected input to be 2D or 3D, got {input.dim()}D instead")
        batched = input.dim() == 3
        batch_dim = 0 if self.batch_first else 1
        if not batched:
            input = input.unsqueeze(batch_dim)
        if hx is not None:
            want = 3 if batched else 2
            if hx[0].dim() != want or hx[1].dim() != want:
                kind = "batched 3-D" if batched else "unbatched 2-D"
                raise RuntimeError(
                    f"For {kind} input, hx and cx should also be {want}-D but got "
                    f"({hx[0].dim()}-D, {hx[1].dim()}-D) tensors")
            if not batched:
                hx = (hx[0].unsqueeze(1), hx[1].unsqueeze(1))
            self.check_forward_args(input, hx, None)
        else:
            self.check_input(input, None)
        out, hn, cn = TF.lstm(input, hx, self._flat_weights, self.bias, self.num_layers, self.dropout,
                              self.training, self.bidirectional, self.batch_first)
        if not batched:
            out = out.squeeze(batch_dim)
            hn, cn = hn.squeeze(1), cn.squeeze(1)
        return out, (hn, cn)
