"""Linear and fused Linear+GELU, tritonn against torch, forward and forward+backward.

Each case runs once per impl ("torch", "tritonn") in one pytest-benchmark group, so
the two numbers come from the same process, GPU and inputs, and their ratio means
something. Both impls use the same layer weights (same seed), the same input and
the same fixed grad_out.

* forward: inference, under ``torch.no_grad()`` (no tensors saved for backward).
* forward+backward: forward, then ``torch.autograd.grad`` w.r.t. x, W and b, which
  returns fresh grads every call instead of accumulating into ``.grad``.
* FLOPs: 2*M*N*K forward, 6*M*N*K forward+backward (the GELU is not counted).
* tf32: float32 tensors with ``torch.backends.cuda.matmul.allow_tf32 = True`` for
  both impls (tritonn follows torch's switch), restored afterwards.

On a GPU the shapes are a square Linear (8192 x 4096 -> 4096) and the two GEMMs of a
transformer MLP (8192 x 1024 -> 4096 and back); GELU is fused on the up-projection.
Every input there is 16-128 MB, and do_bench flushes L2 before each call anyway
(see timing.py), so nothing is rotated. The first tritonn call per GEMM shape and
dtype autotunes (up to 9 configs); that happens in the untimed warm-up call.
Cases run bf16 first, so a run cut short by a timeout still has the main numbers.

On the CPU the same cases run with tiny shapes through the interpreter, fp32 and
bf16 only: a smoke test of the benchmark code, not a measurement.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

import tritonn
import tritonn.functional as TF
from timing import on_gpu, step

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "tf32": torch.float32, "fp32": torch.float32}
MODES = ("forward", "forward+backward")

if on_gpu():
    RUN_DTYPES = ("bf16", "fp16", "tf32")
    LINEAR_SHAPES = ((8192, 4096, 4096), (8192, 1024, 4096), (8192, 4096, 1024))  # (M, K, N)
    GELU_SHAPES = ((8192, 1024, 4096),)
else:
    RUN_DTYPES = ("fp32", "bf16")
    LINEAR_SHAPES = ((64, 32, 32), (64, 16, 64), (64, 64, 16))
    GELU_SHAPES = ((64, 16, 64),)


@dataclass(frozen=True)
class Case:
    name: str  # "linear" or "linear+gelu"
    m: int
    k: int
    n: int
    dtype: str  # a key of DTYPES
    mode: str  # one of MODES

    @property
    def shape(self) -> str:
        return f"{self.m}x{self.k}->{self.n}"

    @property
    def flops(self) -> int:
        return (2 if self.mode == "forward" else 6) * self.m * self.n * self.k

    @property
    def id(self) -> str:
        return f"{self.name}-{self.shape}-{self.dtype}-{self.mode}"


CASES = [
    Case(name, m, k, n, dtype, mode)
    for dtype in RUN_DTYPES
    for name, shapes in (("linear", LINEAR_SHAPES), ("linear+gelu", GELU_SHAPES))
    for m, k, n in shapes
    for mode in MODES
]

LAYERS = {"torch": torch.nn.Linear, "tritonn": tritonn.Linear}


def forward_fn(case: Case, impl: str, layer: torch.nn.Linear):
    """x -> y for this case: the layer itself, or linear followed by GELU
    (torch: two ops; tritonn: GELU fused in the GEMM epilogue)."""
    if case.name == "linear":
        return layer
    if impl == "torch":
        return lambda x: F.gelu(F.linear(x, layer.weight, layer.bias))
    return lambda x: TF.linear(x, layer.weight, layer.bias, activation="gelu")


@contextlib.contextmanager
def matmul_precision(dtype: str):
    """TF32 on for the "tf32" cases, and torch's previous setting restored after.

    Only the legacy ``allow_tf32`` switch is used, both ways: its setter keeps torch's
    legacy and new (``fp32_precision``) states in step, while mixing the two APIs
    can make torch raise on the next matmul."""
    if dtype != "tf32":
        yield
        return
    matmul = torch.backends.cuda.matmul
    saved = matmul.allow_tf32
    matmul.allow_tf32 = True
    try:
        yield
    finally:
        matmul.allow_tf32 = saved


def step_fn(case: Case, impl: str, device: str):
    """The callable to time: one forward, or one forward and backward."""
    dtype = DTYPES[case.dtype]
    torch.manual_seed(0)  # the same weights for both impls
    layer = LAYERS[impl](case.k, case.n, device=device, dtype=dtype)
    forward = forward_fn(case, impl, layer)
    x = torch.randn(case.m, case.k, device=device, dtype=dtype)
    grad_out = torch.randn(case.m, case.n, device=device, dtype=dtype)
    return step(case.mode, lambda: forward(x), (x, layer.weight, layer.bias), grad_out)


@pytest.mark.parametrize("impl", list(LAYERS))
@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=pytest.mark.benchmark(group=c.id)) for c in CASES])
def test_linear(measure, device, case, impl):
    with matmul_precision(case.dtype):
        measure(
            step_fn(case, impl, device),
            flops=case.flops,
            impl=impl,
            case=case.name,
            shape=case.shape,
            dtype=case.dtype,
            mode=case.mode,
        )
