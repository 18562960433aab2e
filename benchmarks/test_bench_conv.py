"""Conv2d, tritonn against torch (cuDNN on GPU), forward and forward+backward.

The layer suite of the issue: ResNet-50 convolutions (7x7 stem, 3x3, 1x1, strided),
ResNeXt-50 32x4d grouped 3x3, MobileNetV2 depthwise 3x3 (stride 1 and 2) and its 1x1
expansions, batch 32; bf16 channels_last and fp32 (TF32 per cuDNN's default switch,
on for both), NCHW. Both impls share weights (same seed), input and grad_out; the
group pairs them, so their ratio comes from one process and one GPU.

FLOPs: 2 * N * OH * OW * C_out * C_in/groups * KH * KW forward, 3x that forward+backward.
On the CPU the same cases run at tiny sizes through the interpreter: a smoke test.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

import tritonn
from timing import on_gpu, step

MODES = ("forward", "forward+backward")
DTYPES = {"bf16-cl": (torch.bfloat16, torch.channels_last), "tf32": (torch.float32, torch.contiguous_format)}


@dataclass(frozen=True)
class Layer:
    net: str
    c_in: int
    c_out: int
    hw: int
    kernel: int
    stride: int = 1
    groups: int = 1

    @property
    def padding(self) -> int:
        return self.kernel // 2

    @property
    def name(self) -> str:
        g = f"-g{self.groups}" if self.groups > 1 else ""
        return f"{self.net}-{self.c_in}x{self.hw}-k{self.kernel}s{self.stride}{g}-{self.c_out}"


GPU_LAYERS = [
    Layer("resnet50", 3, 64, 224, 7, 2),
    Layer("resnet50", 64, 64, 56, 3),
    Layer("resnet50", 256, 64, 56, 1),
    Layer("resnet50", 128, 128, 56, 3, 2),
    Layer("resnet50", 256, 256, 14, 3),
    Layer("resnet50", 512, 2048, 7, 1),
    Layer("resnext50", 128, 128, 56, 3, 1, 32),
    Layer("resnext50", 512, 512, 28, 3, 2, 32),
    Layer("mobilenetv2", 96, 96, 112, 3, 2, 96),
    Layer("mobilenetv2", 144, 144, 56, 3, 1, 144),
    Layer("mobilenetv2", 576, 576, 14, 3, 1, 576),
    Layer("mobilenetv2", 32, 192, 28, 1),
]
CPU_LAYERS = [
    Layer("resnet50", 8, 8, 8, 3),
    Layer("resnext50", 8, 8, 8, 3, 1, 4),
    Layer("mobilenetv2", 8, 8, 8, 3, 1, 8),
    Layer("mobilenetv2", 8, 16, 8, 1),
]
LAYERS, BATCH, RUN_DTYPES = (GPU_LAYERS, 32, ("bf16-cl", "tf32")) if on_gpu() else (CPU_LAYERS, 2, ("bf16-cl",))
IMPLS = {"torch": torch.nn.Conv2d, "tritonn": tritonn.Conv2d}


@dataclass(frozen=True)
class Case:
    layer: Layer
    dtype: str
    mode: str

    @property
    def id(self) -> str:
        return f"conv2d-{self.layer.name}-{self.dtype}-{self.mode}"

    @property
    def flops(self) -> int:
        out = (self.layer.hw + 2 * self.layer.padding - self.layer.kernel) // self.layer.stride + 1
        fwd = 2 * BATCH * out * out * self.layer.c_out * self.layer.c_in // self.layer.groups * self.layer.kernel ** 2
        return fwd if self.mode == "forward" else 3 * fwd


CASES = [Case(layer, dtype, mode) for dtype in RUN_DTYPES for layer in LAYERS for mode in MODES]


def step_fn(case: Case, impl: str, device: str):
    dtype, fmt = DTYPES[case.dtype]
    L = case.layer
    torch.manual_seed(0)
    conv = IMPLS[impl](L.c_in, L.c_out, L.kernel, L.stride, L.padding, groups=L.groups, device=device, dtype=dtype)
    conv = conv.to(memory_format=fmt)
    x = torch.randn(BATCH, L.c_in, L.hw, L.hw, device=device, dtype=dtype).contiguous(memory_format=fmt)
    return step(case.mode, lambda: conv(x), (x, conv.weight, conv.bias))


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=pytest.mark.benchmark(group=c.id)) for c in CASES])
def test_conv2d(measure, device, case, impl):
    measure(step_fn(case, impl, device), flops=case.flops, impl=impl, case=f"conv2d-{case.layer.net}",
            shape=case.layer.name, dtype=case.dtype, mode=case.mode)
