"""Dropout's mask, and the elementwise kernels that apply it.

``keep_mask``: element ``offs`` of a tensor is kept when Philox's uniform draw for
(seed, offs) is >= p. Every dropout in tritonn outside attention (the LSTM between
layers, nn.Dropout, the Transformer's residual dropout fused with LayerNorm) draws its
mask here, so a backward re-draws exactly the forward's mask from the seed. Offsets
are taken modulo 2^32 by Philox's 32-bit counter: past 2^32 elements the mask repeats.

dropout_kernel            out = x * (keep / (1 - p)); program pid: BLOCK contiguous elements
residual_dropout_kernel   out = r + x * keep / (1 - p) (r + x without DROPOUT)
"""

import triton
import triton.language as tl

from .common import cast_to


@triton.jit
def keep_mask(seed, offs, p):
    return tl.rand(seed, offs.to(tl.int32)) >= p


@triton.jit
def dropped(x, seed, offs, p, scale_hi, scale_lo):
    """x * (keep / (1 - p)): a multiplication, as torch's dropout, so a dropped NaN or
    inf stays NaN. The scale comes as a float32 pair (hi + lo): a lone float argument is
    float32, too coarse for float64 tensors."""
    scale = tl.cast(scale_hi, x.dtype) + tl.cast(scale_lo, x.dtype)
    return x * tl.where(keep_mask(seed, offs, p), scale, 0.0)


@triton.jit
def dropout_kernel(x_ptr, out_ptr, n, p, scale_hi, scale_lo, seed, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    ACC: tl.constexpr = tl.float64 if x_ptr.dtype.element_ty == tl.float64 else tl.float32
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(ACC)
    y = dropped(x, seed, offs, p, scale_hi, scale_lo)
    tl.store(out_ptr + offs, cast_to(y, out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def residual_dropout_kernel(r_ptr, x_ptr, out_ptr, n, p, scale_hi, scale_lo, seed, DROPOUT: tl.constexpr,
                            BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    ACC: tl.constexpr = tl.float64 if out_ptr.dtype.element_ty == tl.float64 else tl.float32
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(ACC)
    if DROPOUT:
        x = dropped(x, seed, offs, p, scale_hi, scale_lo)
    r = tl.load(r_ptr + offs, mask=mask, other=0.0).to(ACC)
    tl.store(out_ptr + offs, cast_to(r + x, out_ptr.dtype.element_ty), mask=mask)
