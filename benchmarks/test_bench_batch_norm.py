"""BatchNorm2d and fused BatchNorm2d + ReLU, tritonn against torch, training mode.

Each case runs once per impl ("torch", "tritonn") in one pytest-benchmark group, so
the two numbers come from the same process, GPU and inputs. Both impls use a fresh
BatchNorm2d with the same random affine parameters, the same input and the same
grad_out.

* forward: a training-mode forward (batch statistics, running statistics updated)
  under ``torch.no_grad()``.
* forward+backward: forward, then ``torch.autograd.grad`` w.r.t. x, weight and bias.
* bn+relu: torch runs BatchNorm2d then ReLU (two ops, as in torchvision's ResNet);
  tritonn runs ``tritonn.functional.batch_norm(..., activation="relu")`` (one op).
* Batch norm is memory-bound: ``bytes`` is what a two-pass batch norm moves (forward:
  read x twice, write y = 3 tensors; backward: read x and dy twice, write dx = 5
  more), ``gbps`` = bytes / time, to hold against the GPU's copy bandwidth
  (H100 ~3.0 TB/s, H200 ~4.3 TB/s, ../shared/GUIDE.md section 6). ``flops`` is 0: TFLOP/s
  means nothing here.

On a GPU the shapes are ResNet-50's batch-norm layers at batch 64, one per stage
(stem output 64x112x112, then 256x56x56, 512x28x28, 1024x14x14, 2048x7x7), in bf16
channels_last (what mixed-precision ResNet training runs) and fp32 NCHW, bf16 first
so a run cut short still has the main numbers. Every input is 6-400 MB and do_bench
flushes L2 before each call (see timing.py). On the CPU the same cases run with tiny
shapes through the interpreter: a smoke test of the benchmark code, not a measurement.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

import tritonn
import tritonn.functional as TF
from timing import on_gpu, step

MODES = ("forward", "forward+backward")
LAYOUTS = {
    "bf16-cl": (torch.bfloat16, torch.channels_last),
    "fp32": (torch.float32, torch.contiguous_format),
    "fp32-cl": (torch.float32, torch.channels_last),
}

if on_gpu():
    RUN_DTYPES = ("bf16-cl", "fp32")
    SHAPES = ((64, 64, 112, 112), (64, 256, 56, 56), (64, 512, 28, 28), (64, 1024, 14, 14), (64, 2048, 7, 7))
    RELU_SHAPES = ((64, 64, 112, 112), (64, 256, 56, 56))
else:
    RUN_DTYPES = ("bf16-cl", "fp32")
    SHAPES = ((4, 8, 6, 6), (4, 32, 3, 3))
    RELU_SHAPES = ((4, 8, 6, 6),)


@dataclass(frozen=True)
class Case:
    name: str  # "bn" or "bn+relu"
    shape: tuple
    dtype: str  # a key of LAYOUTS
    mode: str  # one of MODES

    @property
    def shape_str(self) -> str:
        return "x".join(map(str, self.shape))

    @property
    def bytes(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        passes = 3 if self.mode == "forward" else 8
        return passes * n * LAYOUTS[self.dtype][0].itemsize

    @property
    def id(self) -> str:
        return f"{self.name}-{self.shape_str}-{self.dtype}-{self.mode}"


CASES = [
    Case(name, shape, dtype, mode)
    for dtype in RUN_DTYPES
    for name, shapes in (("bn", SHAPES), ("bn+relu", RELU_SHAPES))
    for shape in shapes
    for mode in MODES
]

LAYERS = {"torch": torch.nn.BatchNorm2d, "tritonn": tritonn.BatchNorm2d}


def forward_fn(case: Case, impl: str, layer: torch.nn.BatchNorm2d):
    """x -> y: the layer, or the layer then ReLU (torch: two ops; tritonn: fused)."""
    if case.name == "bn":
        return layer
    if impl == "torch":
        return lambda x: F.relu(layer(x))
    return lambda x: TF.batch_norm(x, layer.running_mean, layer.running_var, layer.weight, layer.bias, True,
                                   layer.momentum, layer.eps, activation="relu")


def step_fn(case: Case, impl: str, device: str):
    """The callable to time: one training forward, or one forward and backward."""
    dtype, memory_format = LAYOUTS[case.dtype]
    torch.manual_seed(0)  # the same parameters and inputs for both impls
    layer = LAYERS[impl](case.shape[1], device=device).train()  # float32 parameters, as under autocast
    with torch.no_grad():
        layer.weight.uniform_(0.5, 1.5)
        layer.bias.normal_()
    forward = forward_fn(case, impl, layer)
    x = torch.randn(case.shape, device=device, dtype=dtype).contiguous(memory_format=memory_format)
    grad_out = torch.randn(case.shape, device=device, dtype=dtype).contiguous(memory_format=memory_format)
    return step(case.mode, lambda: forward(x), (x, layer.weight, layer.bias), grad_out)


@pytest.mark.parametrize("impl", list(LAYERS))
@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=pytest.mark.benchmark(group=c.id)) for c in CASES])
def test_batch_norm(measure, device, case, impl):
    measure(
        step_fn(case, impl, device),
        impl=impl,
        case=case.name,
        shape=case.shape_str,
        dtype=case.dtype,
        mode=case.mode,
        bytes=case.bytes,
    )
