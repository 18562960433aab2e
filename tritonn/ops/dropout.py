"""Dropout on Triton (Philox): ``dropout`` and ``residual_dropout`` (r + dropout(x)).

The mask comes from ``tritonn.kernels.dropout`` (shared with the LSTM's
between-layer dropout and the fused residual + LayerNorm): keep = Philox uniform(seed, offset) >= p,
with a fresh seed per call drawn from torch's generator (``torch.manual_seed``
reproduces it). The backward re-draws the same mask from the seed: nothing is saved.
"""

from __future__ import annotations

import torch
import triton

from .. import runtime
from .compiled import apply, compilable
from ..kernels.dropout import dropout_kernel, residual_dropout_kernel
from .attention import new_seed
from .autograd import first_order

BLOCK = 1024


def _check_p(p: float) -> None:
    if p < 0.0 or p > 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")


def dropout_scalars(p: float) -> tuple[float, float, float]:
    """(p, scale_hi, scale_lo): the kernels' arguments for drop probability p
    (scale = 1 / (1 - p) as a float pair; 0 for p = 1, where nothing is kept)."""
    return (float(p), *runtime.float_pair(0.0 if p >= 1.0 else 1.0 / (1.0 - p)))


def _dense(x: torch.Tensor) -> bool:
    """Whether x's elements fill its memory span once each, in some order of its dims
    (contiguous, channels_last, any permutation): a flat walk over memory covers it."""
    expected = 1
    for stride, size in sorted((st, sz) for st, sz in zip(x.stride(), x.shape) if sz != 1):
        if stride != expected:
            return False
        expected *= size
    return True


def _strided_like(t: torch.Tensor, strides: tuple) -> torch.Tensor:
    """t with the given (dense) strides: itself, or a copy."""
    if t.stride() == strides or t.numel() == 0:
        return t
    return torch.empty_strided(t.shape, strides, dtype=t.dtype, device=t.device).copy_(t)


def apply_dropout_mask(x: torch.Tensor, p: float, seed: int) -> torch.Tensor:
    """x * keep / (1 - p) with the mask of ``seed``, drawn per memory position: a dense x
    keeps its layout (channels_last in, channels_last out, as torch), anything else is
    made contiguous first. The backward passes its gradient in the forward's layout."""
    if not _dense(x):
        x = x.contiguous()
    out = runtime.empty_like(x)
    n = x.numel()
    if n:
        dropout_kernel[(triton.cdiv(n, BLOCK),)](x, out, n, *dropout_scalars(p), seed, BLOCK=BLOCK)
    return out


@compilable("dropout")
class DropoutFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, p, seed):
        y = apply_dropout_mask(x, p, seed)
        ctx.p, ctx.seed, ctx.strides = p, seed, y.stride()
        return y

    @staticmethod
    @first_order("dropout", linear=True)
    def backward(ctx, dy):
        return apply_dropout_mask(_strided_like(dy, ctx.strides), ctx.p, ctx.seed), None, None


@compilable("residual_dropout")
class ResidualDropoutFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, r, x, p, seed):
        ctx.p, ctx.seed = p, seed
        r, x = r.contiguous(), x.contiguous()
        out = runtime.empty(r.shape, dtype=r.dtype, device=r.device)
        n = r.numel()
        if n:
            residual_dropout_kernel[(triton.cdiv(n, BLOCK),)](
                r, x, out, n, *dropout_scalars(p), seed if p > 0 else 0, DROPOUT=p > 0, BLOCK=BLOCK)
        return out

    @staticmethod
    @first_order("residual_dropout", linear=True)
    def backward(ctx, dy):
        dx = apply_dropout_mask(dy, ctx.p, ctx.seed) if ctx.p > 0 and ctx.needs_input_grad[1] else dy
        return dy, dx, None, None


def dropout(input: torch.Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> torch.Tensor:
    """:func:`torch.nn.functional.dropout` on Triton (``inplace`` computes out of place)."""
    _check_p(p)
    if not input.is_floating_point():  # torch's own error: its result is float
        scalar_type = input.new_empty(0).type().split(".")[-1].replace("Tensor", "")  # Long, Int, Bool, ...
        raise RuntimeError(f"result type Float can't be cast to the desired output type {scalar_type}")
    if not training or p == 0.0:
        return input
    if not runtime.runs_on_triton(input):
        runtime.fallback("dropout", input)
        return torch.nn.functional.dropout(input, p, training, inplace)
    return apply("dropout", input, float(p), new_seed(p))


def residual_dropout(residual: torch.Tensor, x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """residual + dropout(x, p, training), one kernel; shapes and dtypes must match."""
    _check_p(p)
    p = float(p) if training else 0.0
    if x.shape != residual.shape or x.dtype != residual.dtype:
        raise ValueError(f"residual_dropout: expected x like the residual {tuple(residual.shape)} {residual.dtype}, "
                         f"got {tuple(x.shape)} {x.dtype}")
    if not runtime.runs_on_triton(residual, x):
        runtime.fallback("residual_dropout", residual, x)
        return residual + torch.nn.functional.dropout(x, p, p > 0)
    return apply("residual_dropout", residual, x, p, new_seed(p))


def _add(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return ResidualDropoutFunction.forward(_NoCtx(), a, b.to(a.dtype), 0.0, 0)


class _NoCtx:
    pass


class ForkFunction(torch.autograd.Function):
    """Two aliases of x whose gradients are summed by a Triton kernel (autograd would
    sum them natively where x feeds both a residual and a sublayer)."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x), x.view_as(x)

    @staticmethod
    @first_order("fork", linear=True)
    def backward(ctx, ga, gb):
        return _add(ga, gb)


def fork(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, x) for a residual branch point; the backward sums the two gradients in Triton.
    Under torch.compile plain (x, x): the compiler generates (and fuses) that sum."""
    if torch.is_grad_enabled() and x.requires_grad and runtime.runs_on_triton(x) and not torch.compiler.is_compiling():
        return ForkFunction.apply(x)
    return x, x
