"""MaxPool2d, tritonn against torch, forward and forward+backward.

Each case runs once per impl ("torch", "tritonn") in one pytest-benchmark group, so
the two numbers come from the same process, GPU and inputs. Both impls pool the
same input with the same fixed grad_out.

* forward: inference, under ``torch.no_grad()`` (tritonn then writes no indices).
* forward+backward: a forward that keeps what backward needs, then
  ``torch.autograd.grad`` w.r.t. the input.
* Max pooling is memory-bound: ``bytes`` is the least a pooling layer must move,
  input read and output written (forward), plus grad_out read and grad_input
  written and one index byte per output written and read back (forward+backward;
  torch moves 8 index bytes instead, tritonn 1). ``gbps`` = bytes / time, to hold
  against the GPU's copy bandwidth (H100 ~3.0 TB/s, H200 ~4.3 TB/s, ../shared/GUIDE.md
  section 6). ``flops`` is 0: TFLOP/s means nothing here.

On a GPU the shape is ResNet-50's stem pool: 3x3, stride 2, padding 1 on
64x64x112x112 (205 MB in fp32), in bf16 and fp32, channels_last (what
mixed-precision training runs) and NCHW, bf16 channels_last first so a run cut
short still has the main number. do_bench flushes L2 before each call (see
timing.py). On the CPU the same cases run with tiny shapes through the
interpreter: a smoke test of the benchmark code, not a measurement.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

import tritonn
from timing import on_gpu, step

MODES = ("forward", "forward+backward")
LAYOUTS = {
    "bf16-cl": (torch.bfloat16, torch.channels_last),
    "bf16": (torch.bfloat16, torch.contiguous_format),
    "fp32-cl": (torch.float32, torch.channels_last),
    "fp32": (torch.float32, torch.contiguous_format),
}
POOL = dict(kernel_size=3, stride=2, padding=1)  # ResNet's stem

if on_gpu():
    RUN_DTYPES = ("bf16-cl", "bf16", "fp32-cl", "fp32")
    SHAPES = ((64, 64, 112, 112),)
else:
    RUN_DTYPES = ("bf16-cl", "fp32")
    SHAPES = ((2, 8, 9, 9),)


@dataclass(frozen=True)
class Case:
    shape: tuple
    dtype: str  # a key of LAYOUTS
    mode: str  # one of MODES

    @property
    def shape_str(self) -> str:
        return "x".join(map(str, self.shape))

    @property
    def output_shape(self) -> tuple:
        k, s, p = POOL["kernel_size"], POOL["stride"], POOL["padding"]
        n, c, h, w = self.shape
        return n, c, (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1

    @property
    def bytes(self) -> int:
        size = LAYOUTS[self.dtype][0].itemsize
        inputs = outputs = 1
        for a, b in zip(self.shape, self.output_shape):
            inputs, outputs = inputs * a, outputs * b
        if self.mode == "forward":
            return (inputs + outputs) * size
        return 2 * (inputs + outputs) * size + 2 * outputs  # + x grad, y grad; an index byte written and read

    @property
    def id(self) -> str:
        return f"maxpool-{self.shape_str}-{self.dtype}-{self.mode}"


CASES = [Case(shape, dtype, mode) for dtype in RUN_DTYPES for shape in SHAPES for mode in MODES]

LAYERS = {"torch": torch.nn.MaxPool2d, "tritonn": tritonn.MaxPool2d}


def step_fn(case: Case, impl: str, device: str):
    """The callable to time: one forward, or one forward and backward."""
    dtype, memory_format = LAYOUTS[case.dtype]
    torch.manual_seed(0)  # the same input and grad_out for both impls
    layer = LAYERS[impl](**POOL)
    x = torch.randn(case.shape, device=device, dtype=dtype).contiguous(memory_format=memory_format)
    grad_out = torch.randn(case.output_shape, device=device, dtype=dtype).contiguous(memory_format=memory_format)
    return step(case.mode, lambda: layer(x), (x,), grad_out)


@pytest.mark.parametrize("impl", list(LAYERS))
@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=pytest.mark.benchmark(group=c.id)) for c in CASES])
def test_max_pool(measure, device, case, impl):
    measure(
        step_fn(case, impl, device),
        impl=impl,
        case="maxpool2d 3x3/s2/p1",
        shape=case.shape_str,
        dtype=case.dtype,
        mode=case.mode,
        bytes=case.bytes,
    )
