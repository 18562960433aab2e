"""LayerNorm and TransformerEncoderLayer, tritonn against torch (eager, and
torch.compile on a GPU), bf16.

* LayerNorm at LLM row sizes (8192 tokens x 2048 / 4096 / 8192 features): memory-bound,
  ``bytes`` = what a fused LayerNorm must move (forward: read x, write y; backward:
  read x and dy, write dx), ``gbps`` to hold against copy bandwidth.
* nn.Transformer at its default (base) size: d_model 512, 8 heads, 6 + 6 layers,
  feed-forward 2048; source and target 512 tokens, batch 32, causal target mask.
* TransformerEncoderLayer d_model 1024, 16 heads, feed-forward 4096, sequence 2048,
  batch 8, batch_first, dropout 0.1, training mode: forward (no grad) and
  forward+backward (grads of the input and every parameter). ``flops`` counts the
  GEMMs (4 d^2 + 2 d ff per token, x2) and attention (4 S d per token), x3 with backward.
On the CPU the same cases run tiny through the interpreter: a smoke test of the code.
"""

from __future__ import annotations

import pytest
import torch

import tritonn
from timing import on_gpu, step

MODES = ("forward", "forward+backward")
IMPLS = ("torch", "torch.compile", "tritonn") if on_gpu() else ("torch", "tritonn")
if on_gpu():
    LN_SHAPES = ((8192, 2048), (8192, 4096), (8192, 8192))
    ENC = dict(d=1024, h=16, ff=4096, seq=2048, batch=8)
    BASE = dict(d=512, h=8, ff=2048, layers=6, src=512, tgt=512, batch=32)  # nn.Transformer's defaults
else:
    LN_SHAPES = ((16, 130),)
    ENC = dict(d=16, h=2, ff=24, seq=7, batch=2)
    BASE = dict(d=16, h=2, ff=24, layers=2, src=7, tgt=5, batch=2)
DTYPE = torch.bfloat16


def _maybe_compile(module, impl):
    return torch.compile(module) if impl == "torch.compile" else module


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", LN_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_layer_norm(measure, device, shape, mode, impl):
    torch.manual_seed(0)
    cls = tritonn.LayerNorm if impl == "tritonn" else torch.nn.LayerNorm
    layer = cls(shape[1], device=device, dtype=DTYPE)
    fn = _maybe_compile(layer, impl)
    x = torch.randn(shape, device=device, dtype=DTYPE)
    n = shape[0] * shape[1] * DTYPE.itemsize
    g = torch.randn(shape, device=device, dtype=DTYPE)
    run = step(mode, lambda: fn(x), (x, layer.weight, layer.bias), g)
    moved = 2 * n if mode == "forward" else 5 * n
    measure(run, impl=impl, case="layer_norm", shape="x".join(map(str, shape)), dtype="bf16", mode=mode,
            bytes=moved)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("mode", MODES)
def test_encoder_layer(measure, device, mode, impl):
    torch.manual_seed(0)
    d, h, ff, seq, batch = (ENC[k] for k in ("d", "h", "ff", "seq", "batch"))
    cls = tritonn.TransformerEncoderLayer if impl == "tritonn" else torch.nn.TransformerEncoderLayer
    layer = cls(d, h, ff, dropout=0.1, batch_first=True, device=device, dtype=DTYPE).train()
    fn = _maybe_compile(layer, impl)
    x = torch.randn(batch, seq, d, device=device, dtype=DTYPE)
    tokens = batch * seq
    flops = tokens * 2 * (4 * d * d + 2 * d * ff) + tokens * 4 * seq * d
    run = step(mode, lambda: fn(x), (x, *layer.parameters()), torch.randn_like(x))
    flops *= 1 if mode == "forward" else 3
    measure(run, impl=impl, case="encoder_layer", shape=f"d{d}-h{h}-ff{ff}-s{seq}-b{batch}", dtype="bf16",
            mode=mode, flops=flops)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("mode", MODES)
def test_transformer_base(measure, device, mode, impl):
    torch.manual_seed(0)
    d, h, ff, n, src, tgt, batch = (BASE[k] for k in ("d", "h", "ff", "layers", "src", "tgt", "batch"))
    cls = tritonn.Transformer if impl == "tritonn" else torch.nn.Transformer
    model = cls(d, h, n, n, ff, dropout=0.1, batch_first=True, device=device, dtype=DTYPE).train()
    fn = _maybe_compile(model, impl)
    x = torch.randn(batch, src, d, device=device, dtype=DTYPE)
    y = torch.randn(batch, tgt, d, device=device, dtype=DTYPE)
    mask = torch.nn.Transformer.generate_square_subsequent_mask(tgt, device=device, dtype=DTYPE)
    # per token: encoder layer 4d^2 + 2 d ff, decoder layer 8d^2 + 2 d ff (x2 flops), plus attention
    flops = 2 * batch * (src * n * (4 * d * d + 2 * d * ff) + tgt * n * (8 * d * d + 2 * d * ff))
    flops += 4 * batch * n * d * (src * src + tgt * tgt + tgt * src)
    g = torch.randn(batch, tgt, d, device=device, dtype=DTYPE)
    run = step(mode, lambda: fn(x, y, tgt_mask=mask), (x, *model.parameters()), g)
    flops *= 1 if mode == "forward" else 3
    measure(run, impl=impl, case="transformer_base", shape=f"d{d}-h{h}-l{n}-s{src}-t{tgt}-b{batch}", dtype="bf16",
            mode=mode, flops=flops)
