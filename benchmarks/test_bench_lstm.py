"""LSTM, tritonn against torch (cuDNN on GPU), forward and forward+backward.

Language-model shapes: sequence 512, batch 64, input = hidden = 1024, one and two
layers, unidirectional; a bidirectional two-layer encoder with hidden 512; bf16 and
fp32 (TF32 per torch's matmul switch). Both impls share weights (same seed), input
and grad_out; the group pairs them, so their ratio comes from one process and one GPU.

FLOPs: per layer and direction 2 * L * N * 4H * (I + H) forward, 3x that forward+backward.
On the CPU the same cases run at tiny sizes through the interpreter: a smoke test.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

import tritonn
from timing import on_gpu, step

MODES = ("forward", "forward+backward")
DTYPES = {"bf16": torch.bfloat16, "tf32": torch.float32}


@dataclass(frozen=True)
class Shape:
    seq: int
    batch: int
    input: int
    hidden: int
    layers: int = 1
    bidirectional: bool = False

    @property
    def name(self) -> str:
        bi = "-bi" if self.bidirectional else ""
        return f"L{self.seq}-N{self.batch}-I{self.input}-H{self.hidden}-x{self.layers}{bi}"


GPU_SHAPES = [
    Shape(512, 64, 1024, 1024, 1),
    Shape(512, 64, 1024, 1024, 2),
    Shape(256, 32, 512, 512, 2, True),
]
CPU_SHAPES = [Shape(4, 2, 8, 8, 1), Shape(3, 2, 8, 8, 2, True)]
SHAPES, RUN_DTYPES = (GPU_SHAPES, ("bf16", "tf32")) if on_gpu() else (CPU_SHAPES, ("tf32",))
IMPLS = {"torch": torch.nn.LSTM, "tritonn": tritonn.LSTM}


@dataclass(frozen=True)
class Case:
    shape: Shape
    dtype: str
    mode: str

    @property
    def id(self) -> str:
        return f"lstm-{self.shape.name}-{self.dtype}-{self.mode}"

    @property
    def flops(self) -> int:
        s = self.shape
        d = 2 if s.bidirectional else 1
        total = 0
        for layer in range(s.layers):
            inp = s.input if layer == 0 else d * s.hidden
            total += d * 2 * s.seq * s.batch * 4 * s.hidden * (inp + s.hidden)
        return total if self.mode == "forward" else 3 * total


CASES = [Case(shape, dtype, mode) for dtype in RUN_DTYPES for shape in SHAPES for mode in MODES]


def step_fn(case: Case, impl: str, device: str):
    dtype = DTYPES[case.dtype]
    s = case.shape
    torch.manual_seed(0)
    lstm = IMPLS[impl](s.input, s.hidden, s.layers, bidirectional=s.bidirectional, device=device, dtype=dtype)
    x = torch.randn(s.seq, s.batch, s.input, device=device, dtype=dtype)
    return step(case.mode, lambda: lstm(x)[0], (x, *lstm.parameters()))


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=pytest.mark.benchmark(group=c.id)) for c in CASES])
def test_lstm(measure, device, case, impl):
    measure(step_fn(case, impl, device), flops=case.flops, impl=impl, case="lstm", shape=case.shape.name,
            dtype=case.dtype, mode=case.mode)
