"""Scaled dot-product attention, tritonn against torch's SDPA (flash / efficient kernels
on GPU), forward and forward+backward.

Sequence lengths 512 to 16k, head dims 64 and 128, causal and not, fp16 and bf16;
batch x heads sized to keep the work comparable (B * H * L = 2^17 query rows).
Both impls get the same q, k, v and grad_out; the group pairs them.

FLOPs (dense count, halved for causal): 4 * B * H * L * S * D forward (QK^T and PV),
3.5x that forward+backward (the backward recomputes QK^T and runs 4 more matmuls).
On the CPU a tiny case runs through the interpreter: a smoke test.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

import tritonn.functional as TF
from timing import on_gpu, step

MODES = ("forward", "forward+backward")
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class Shape:
    seq: int
    head_dim: int
    causal: bool

    @property
    def heads_x_batch(self) -> int:
        return max(1, 2**17 // self.seq) if on_gpu() else 2

    @property
    def name(self) -> str:
        return f"L{self.seq}-d{self.head_dim}{'-causal' if self.causal else ''}"


GPU_SHAPES = [Shape(seq, d, c) for seq in (512, 2048, 8192, 16384) for d in (64, 128) for c in (False, True)]
CPU_SHAPES = [Shape(64, 32, False), Shape(64, 32, True)]
SHAPES, RUN_DTYPES = (GPU_SHAPES, ("fp16", "bf16")) if on_gpu() else (CPU_SHAPES, ("fp16",))
IMPLS = {"torch": F.scaled_dot_product_attention, "tritonn": TF.scaled_dot_product_attention}


@dataclass(frozen=True)
class Case:
    shape: Shape
    dtype: str
    mode: str

    @property
    def id(self) -> str:
        return f"sdpa-{self.shape.name}-{self.dtype}-{self.mode}"

    @property
    def flops(self) -> int:
        s = self.shape
        fwd = 4 * s.heads_x_batch * s.seq * s.seq * s.head_dim // (2 if s.causal else 1)
        return fwd if self.mode == "forward" else int(3.5 * fwd)


CASES = [Case(shape, dtype, mode) for dtype in RUN_DTYPES for shape in SHAPES for mode in MODES]


def step_fn(case: Case, impl: str, device: str):
    s = case.shape
    torch.manual_seed(0)
    heads = min(16, s.heads_x_batch)
    shape = (s.heads_x_batch // heads, heads, s.seq, s.head_dim)
    q, k, v = (torch.randn(shape, device=device, dtype=DTYPES[case.dtype]) for _ in range(3))
    fn = IMPLS[impl]
    grad_out = torch.randn(shape, device=device, dtype=DTYPES[case.dtype])
    return step(case.mode, lambda: fn(q, k, v, is_causal=s.causal), (q, k, v), grad_out)


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=pytest.mark.benchmark(group=c.id)) for c in CASES])
def test_sdpa(measure, device, case, impl):
    measure(step_fn(case, impl, device), flops=case.flops, impl=impl, case="sdpa", shape=case.shape.name,
            dtype=case.dtype, mode=case.mode)
