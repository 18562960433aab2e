"""``python -m tritonn check``: every tritonn layer next to its torch twin.

Each case builds the tritonn layer and the torch layer with the same weights, runs
forward and backward on random inputs on the current device (CUDA when present,
else the interpreter on small shapes), and applies the test suite's rule
(:func:`tritonn.testing.compare`) to the output and every gradient. Layers add a
case to ``CASES``.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Callable

import torch

from . import nn as tnn
from .testing import compare


@dataclass
class Case:
    name: str
    build: Callable  # (device, small) -> (ours, theirs, leaves, reductions)
    dtypes: tuple = (torch.float32, torch.float16, torch.bfloat16)


def _module_fn(module):
    """The module as a function of its input and its parameters (dots in names -> _)."""
    names = [n for n, _ in module.named_parameters()]

    def fn(x, **params):
        return torch.func.functional_call(module, {n: params[n.replace(".", "_")] for n in names}, (x,))

    return fn


def _module_case(theirs, ours, input_shape, reductions):
    """Same weights in both modules (float64 masters); the input and every parameter are leaves."""
    theirs, ours = theirs.double(), ours.double()
    ours.load_state_dict(theirs.state_dict())
    leaves = {"x": torch.randn(*input_shape, dtype=torch.float64, requires_grad=True)}
    for n, p in theirs.named_parameters():
        leaves[n.replace(".", "_")] = p.detach().clone().requires_grad_()
    return _module_fn(ours), _module_fn(theirs), leaves, reductions


def _linear(device, small):
    in_f, out_f, rows = (96, 80, 64) if small else (1024, 1024, 4096)
    return _module_case(torch.nn.Linear(in_f, out_f), tnn.Linear(in_f, out_f), (rows, in_f),
                        {"out0": in_f, "x": out_f, "weight": rows, "bias": rows})


def _conv2d(device, small):
    """A grouped, strided, padded 3x3 convolution on channels_last input."""
    c, hw, n = (8, 9, 2) if small else (128, 56, 32)
    groups = 2
    case = _module_case(torch.nn.Conv2d(c, c, 3, 2, 1, groups=groups), tnn.Conv2d(c, c, 3, 2, 1, groups=groups),
                        (n, c, hw, hw), {"out0": c // groups * 9, "x": c // groups * 9, "weight": n * hw * hw,
                                         "bias": n * hw * hw})
    ours, theirs, leaves, reductions = case
    channels_last = lambda fn: lambda x, **p: fn(x.contiguous(memory_format=torch.channels_last), **p)  # noqa: E731
    return channels_last(ours), channels_last(theirs), leaves, reductions


def _batch_norm2d(device, small):
    """Training mode: output, grads of input, weight and bias, and the running
    statistics after the step (extra outputs), from fresh buffers in the dtype under test."""
    shape = (8, 16, 12, 12) if small else (64, 256, 28, 28)
    count = shape[0] * shape[2] * shape[3]
    ours, theirs = tnn.BatchNorm2d(shape[1], dtype=torch.float64), torch.nn.BatchNorm2d(shape[1], dtype=torch.float64)
    with torch.no_grad():
        theirs.running_mean.normal_()
        theirs.running_var.uniform_(0.5, 1.5)
    ours.load_state_dict(theirs.state_dict())

    def as_fn(module):
        def fn(x, weight, bias):
            m = copy.deepcopy(module).to(device=x.device, dtype=x.dtype).train()
            y = torch.func.functional_call(m, {"weight": weight, "bias": bias}, (x,))
            return y, m.running_mean.clone(), m.running_var.clone()
        return fn

    leaves = {"x": (torch.randn(*shape, dtype=torch.float64) * 2 + 1).requires_grad_(),
              "weight": (torch.rand(shape[1], dtype=torch.float64) + 0.5).requires_grad_(),
              "bias": torch.randn(shape[1], dtype=torch.float64).requires_grad_()}
    reductions = dict.fromkeys(("out0", "out1", "out2", "x", "weight", "bias"), count)
    return as_fn(ours), as_fn(theirs), leaves, reductions


def _max_pool2d(device, small):
    """ResNet's stem pool (3x3, stride 2, padding 1) on channels_last input. (Indices are
    checked exactly by the tests; here bfloat16 ties would report index distances as errors.)"""
    n, c, hw = (2, 8, 17) if small else (32, 64, 112)
    ours, theirs = tnn.MaxPool2d(3, 2, 1), torch.nn.MaxPool2d(3, 2, 1)
    channels_last = lambda fn: lambda x: fn(x.contiguous(memory_format=torch.channels_last))  # noqa: E731
    leaves = {"x": torch.randn(n, c, hw, hw, dtype=torch.float64, requires_grad=True)}
    return channels_last(ours), channels_last(theirs), leaves, {"x": 4}


def _lstm(device, small):
    """A two-layer bidirectional LSTM: output, h_n, c_n, grads of the input and every weight."""
    i, h, seq, n = (6, 8, 4, 2) if small else (256, 512, 64, 32)
    options = dict(num_layers=2, bidirectional=True)
    steps = seq * (i + 3 * h) * 2
    reductions = {"out0": steps, "out1": steps, "out2": steps, "x": steps}
    ours, theirs, leaves, _ = _module_case(torch.nn.LSTM(i, h, **options), tnn.LSTM(i, h, **options), (seq, n, i), {})
    reductions.update({k: steps * n for k in leaves if k != "x"})
    return ours, theirs, leaves, reductions


def _multihead_attention(device, small):
    """Causal self-attention (batch_first, the SDPA path), output and every gradient."""
    e, h, length, n = (32, 2, 17, 2) if small else (1024, 16, 1024, 8)
    ours, theirs = tnn.MultiheadAttention(e, h, batch_first=True), torch.nn.MultiheadAttention(e, h, batch_first=True)
    ours_fn, theirs_fn, leaves, _ = _module_case(theirs, ours, (n, length, e), {})

    def causal(fn):
        def run(x, **params):
            mask = torch.nn.Transformer.generate_square_subsequent_mask(length, device=x.device, dtype=x.dtype)
            names = {k.replace(".", "_"): k for k, _ in theirs.named_parameters()}
            module = ours if fn is ours_fn else theirs
            return torch.func.functional_call(module, {names[k]: v for k, v in params.items()}, (x, x, x),
                                              dict(attn_mask=mask, need_weights=False, is_causal=True))[0]
        return run

    reductions = {"out0": length + e, **dict.fromkeys(leaves, n * length)}
    return causal(ours_fn), causal(theirs_fn), leaves, reductions


def _layer_norm(device, small):
    e, rows = (130, 24) if small else (4096, 8192)
    return _module_case(torch.nn.LayerNorm(e), tnn.LayerNorm(e), (rows, e),
                        {"out0": e, "x": e, "weight": rows, "bias": rows})


def _transformer_encoder_layer(device, small):
    """Pre-norm GELU encoder layer (batch_first, dropout off): output and every gradient."""
    e, h, ff, length, n = (16, 2, 24, 7, 2) if small else (1024, 16, 4096, 512, 8)
    options = dict(dropout=0.0, activation="gelu", batch_first=True, norm_first=True)
    ours, theirs, leaves, _ = _module_case(torch.nn.TransformerEncoderLayer(e, h, ff, **options),
                                           tnn.TransformerEncoderLayer(e, h, ff, **options), (n, length, e), {})
    return ours, theirs, leaves, dict.fromkeys(["out0", *leaves], n * length + ff)


CASES = [Case("Linear", _linear), Case("Conv2d", _conv2d), Case("BatchNorm2d", _batch_norm2d),
         Case("MaxPool2d", _max_pool2d), Case("MultiheadAttention", _multihead_attention), Case("LSTM", _lstm),
         Case("LayerNorm", _layer_norm), Case("TransformerEncoderLayer", _transformer_encoder_layer)]


def run(device: str, small: bool) -> list[dict]:
    rows = []
    for case in CASES:
        for dtype in case.dtypes:
            torch.manual_seed(0)
            ours, theirs, leaves, reductions = case.build(device, small)
            start = time.perf_counter()
            try:
                errors = compare(ours, theirs, leaves, dtype, device, reductions)
                ok, detail = True, ""
            except AssertionError as e:
                errors, ok, detail = {}, False, str(e)
            if device == "cuda":
                torch.cuda.synchronize()
            rows.append({
                "layer": case.name, "dtype": str(dtype).replace("torch.", ""), "ok": ok,
                "max_error": max((e for e, _ in errors.values()), default=float("nan")),
                "worst_margin": max((e / b for e, b in errors.values() if b > 0), default=float("nan")),
                "seconds": time.perf_counter() - start, "detail": detail,
            })
    return rows
