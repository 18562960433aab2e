"""Layer norm: y = (x - mean) / sqrt(var + eps) * weight + bias over the trailing
``normalized_shape`` dims (``tritonn.kernels.norm.layer_norm_*``).

The input is viewed as (M, N) rows (a contiguous copy when it is not contiguous).
Forward: one kernel, per-row statistics in float32 (float64 for float64) saved as
(2, M) (mean, rstd). Backward: one kernel for grad_input plus per-program partial
sums of dy * xhat and dy, reduced over programs by ``column_sum`` in a fixed order
(deterministic grad_weight / grad_bias).
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F
import triton

from .. import runtime
from .compiled import apply, compilable
from ..kernels.norm import layer_norm_backward_kernel, layer_norm_forward_kernel
from .autograd import first_order
from .dropout import dropout_scalars
from .gemm import column_sum

GPU_MAX_BLOCK_N = 8192  # longer rows are walked in chunks
GPU_TILE = 4096  # elements per (BLOCK_M, BLOCK_N) tile
GPU_PROGRAMS_PER_SM = 4  # backward: programs (and partial-sum rows) per SM
INTERPRETER_TILE = 16384
INTERPRETER_PROGRAMS = 1  # backward programs under the interpreter (tests raise it)
_FLOATING = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def blocks(M: int, N: int, gpu: bool | None = None) -> dict:
    """BLOCK_M, BLOCK_N, ONE_PASS and num_warps for rows of N."""
    if gpu is None:
        gpu = not runtime.INTERPRETING
    if gpu:
        bn = min(runtime.next_pow2(N), GPU_MAX_BLOCK_N)
        bm = max(1, min(GPU_TILE // bn, 16))
        warps = 4 if bn * bm <= 2048 else 8 if bn * bm <= 4096 else 16
    else:
        bn = min(runtime.next_pow2(N), INTERPRETER_TILE)
        bm = min(runtime.next_pow2(M), max(1, INTERPRETER_TILE // bn))
        warps = 1
    return {"BLOCK_M": bm, "BLOCK_N": bn, "ONE_PASS": N <= bn, "num_warps": warps}


def gpu_block_choices() -> list[dict]:
    """Every blocks() a GPU launch can pick (for the compile tier)."""
    seen = {}
    for k in range(0, 15):
        b = blocks(64, 2**k, True)
        seen[(b["BLOCK_M"], b["BLOCK_N"], b["ONE_PASS"])] = b
    b = blocks(64, 3 * GPU_MAX_BLOCK_N, True)
    seen[(b["BLOCK_M"], b["BLOCK_N"], b["ONE_PASS"])] = b
    return list(seen.values())


def _programs(M: int, bm: int, device: torch.device) -> tuple[int, int]:
    """(rows per program, programs) of the backward grid."""
    if runtime.INTERPRETING or device.type != "cuda":
        target = INTERPRETER_PROGRAMS
    else:
        index = device.index if device.index is not None else torch.cuda.current_device()
        target = GPU_PROGRAMS_PER_SM * torch.cuda.get_device_properties(index).multi_processor_count
    rows = triton.cdiv(triton.cdiv(M, target), bm) * bm
    return rows, triton.cdiv(M, rows)


def forward(x2, weight, bias, eps, residual=None, p=0.0, seed=0):
    """(y, stats, h): y = LayerNorm(h), h = x2, or residual + dropout(x2, p) (written out)."""
    M, N = x2.shape
    acc = torch.float64 if x2.dtype == torch.float64 else torch.float32
    y = runtime.empty((M, N), dtype=x2.dtype, device=x2.device)
    stats = runtime.empty((2, M), dtype=acc, device=x2.device)
    h = runtime.empty((M, N), dtype=x2.dtype, device=x2.device) if residual is not None else x2
    if M == 0 or N == 0:
        return y, stats, h
    b = blocks(M, N)
    rows = b["BLOCK_M"] if not runtime.INTERPRETING else b["BLOCK_M"] * triton.cdiv(M, b["BLOCK_M"])
    layer_norm_forward_kernel[(triton.cdiv(M, rows),)](
        x2, residual if residual is not None else x2, h, y,
        weight if weight is not None else stats, bias if bias is not None else stats, stats,
        M, N, rows, *runtime.float_pair(float(eps)), *dropout_scalars(p), seed if p > 0 else 0,
        HAS_WEIGHT=weight is not None, HAS_BIAS=bias is not None, RESIDUAL=residual is not None, DROPOUT=p > 0,
        **b,
    )
    return y, stats, h


def backward(dy2, x2, weight, stats, need_x, need_params, param_dtype, dh=None, p=0.0, seed=0):
    """(dx, dw, db, dd): dx = dL/dx2 (+ dh), dd = dropout(dx) (p > 0, else None)."""
    M, N = x2.shape
    dy2 = dy2.contiguous()
    dh = dh.contiguous() if dh is not None else None
    dx = runtime.empty((M, N), dtype=x2.dtype, device=x2.device) if need_x else None
    dd = runtime.empty((M, N), dtype=x2.dtype, device=x2.device) if need_x and p > 0 else None
    if M == 0 or N == 0:
        z = torch.zeros((N,), dtype=param_dtype, device=x2.device) if need_params else None
        return dx, z, z, dd
    b = blocks(M, N)
    b.pop("ONE_PASS")
    rows, programs = _programs(M, b["BLOCK_M"], x2.device)
    partial = torch.zeros((2, programs if need_params else 1, N), dtype=stats.dtype, device=x2.device)
    layer_norm_backward_kernel[(programs,)](
        dy2, x2, weight if weight is not None else stats, stats, dx if dx is not None else dy2, partial,
        dh if dh is not None else dy2, dd if dd is not None else dy2,
        M, N, rows, programs if need_params else 1, *dropout_scalars(p), seed if p > 0 else 0,
        HAS_WEIGHT=weight is not None, NEED_X=need_x, NEED_PARAMS=need_params, HAS_DH=dh is not None,
        DROPOUT=p > 0, **b,
    )
    if not need_params:
        return dx, None, None, dd
    return dx, column_sum(partial[0], param_dtype), column_sum(partial[1], param_dtype), dd


@compilable("layer_norm")
class LayerNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, M, N, eps):
        x2 = x.contiguous().view(M, N)
        y, stats, _ = forward(x2, weight, bias, eps)
        ctx.save_for_backward(x2, weight, stats)
        ctx.x_shape = x.shape
        ctx.has_bias = bias is not None
        ctx.param_shape = weight.shape if weight is not None else (bias.shape if bias is not None else None)
        ctx.param_dtype = weight.dtype if weight is not None else (bias.dtype if bias is not None else x.dtype)
        return y.view(x.shape)

    @staticmethod
    @first_order("layer_norm")
    def backward(ctx, dy):
        x2, weight, stats = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        dx, dw, db, _ = backward(dy.reshape(x2.shape), x2, weight, stats, need_x, need_w or need_b, ctx.param_dtype)
        return (dx.view(ctx.x_shape) if dx is not None else None, dw.view(ctx.param_shape) if need_w else None,
                db.view(ctx.param_shape) if need_b else None, None, None, None)


def _rows(x: torch.Tensor, normalized_shape: tuple) -> tuple[int, int]:
    """(M, N): x as M rows of N = prod(normalized_shape) (either may be 0)."""
    return math.prod(x.shape[:x.dim() - len(normalized_shape)]), math.prod(normalized_shape)


def _check(input, normalized_shape, weight, bias):
    shape = tuple(normalized_shape)
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and tuple(t.shape) != shape:
            raise RuntimeError(f"Expected {name} to be of same shape as normalized_shape, but got {name} of shape "
                               f"{list(t.shape)} and normalized_shape = {list(shape)}")
    n = len(shape)
    if input.dim() < n or tuple(input.shape[input.dim() - n:]) != shape:
        raise RuntimeError(f"Given normalized_shape={list(shape)}, expected input with shape "
                           f"[*, {', '.join(str(s) for s in shape)}], but got input of size{list(input.shape)}")
    if input.dtype not in _FLOATING:
        scalar_type = input.new_empty(0).type().split(".")[-1].replace("Tensor", "")  # torch's name: Long, Int, ...
        raise NotImplementedError(f'"LayerNormKernelImpl" not implemented for \'{scalar_type}\'')


def layer_norm(input: torch.Tensor, normalized_shape, weight: torch.Tensor | None = None,
               bias: torch.Tensor | None = None, eps: float = 1e-5) -> torch.Tensor:
    """:func:`torch.nn.functional.layer_norm` on Triton kernels, forward and backward."""
    if isinstance(normalized_shape, numbers.Integral):
        normalized_shape = (int(normalized_shape),)
    normalized_shape = tuple(int(s) for s in normalized_shape)
    triton_path = runtime.runs_on_triton(input, weight, bias)
    if triton_path:  # torch's CUDA autocast runs layer_norm in float32
        input, weight, bias = runtime.autocast_float32(input, weight, bias)
    _check(input, normalized_shape, weight, bias)
    if not triton_path:
        runtime.fallback("layer_norm", input, weight, bias)
        return F.layer_norm(input, normalized_shape, weight, bias, eps)
    weight = weight.contiguous() if weight is not None else None
    bias = bias.contiguous() if bias is not None else None
    return apply("layer_norm", input, weight, bias, *_rows(input, normalized_shape), eps)


@compilable("add_dropout_layer_norm")
class AddDropoutLayerNormFunction(torch.autograd.Function):
    """(h, y) = (r + dropout(x), LayerNorm(h)): one kernel forward, one (+ column sums) backward."""

    @staticmethod
    def forward(ctx, r, x, weight, bias, M, N, eps, p, seed):
        ctx.set_materialize_grads(False)
        r2, x2 = r.contiguous().view(M, N), x.contiguous().view(M, N)
        y, stats, h = forward(x2, weight, bias, eps, residual=r2, p=p, seed=seed)
        ctx.save_for_backward(h, weight, stats)
        ctx.shape, ctx.p, ctx.seed = r.shape, p, seed
        ctx.param_shape = weight.shape if weight is not None else (bias.shape if bias is not None else None)
        ctx.param_dtype = weight.dtype if weight is not None else (bias.dtype if bias is not None else r.dtype)
        return h.view(r.shape), y.view(r.shape)

    @staticmethod
    @first_order("add_dropout_layer_norm")
    def backward(ctx, dh, dy):
        h2, weight, stats = ctx.saved_tensors
        need_r, need_x, need_w, need_b = ctx.needs_input_grad[:4]
        M, N = h2.shape
        if dy is None:  # only h was used
            dy = torch.zeros(h2.shape, dtype=h2.dtype, device=h2.device)
        dr, dw, db, dd = backward(dy.reshape(M, N), h2, weight, stats, need_r or need_x, need_w or need_b,
                                  ctx.param_dtype, dh=dh.reshape(M, N) if dh is not None else None,
                                  p=ctx.p, seed=ctx.seed)
        dx = (dd if dd is not None else dr) if need_x else None
        return (dr.view(ctx.shape) if need_r else None, dx.view(ctx.shape) if dx is not None else None,
                dw.view(ctx.param_shape) if need_w else None, db.view(ctx.param_shape) if need_b else None,
                None, None, None, None, None)


def add_dropout_layer_norm(residual: torch.Tensor, x: torch.Tensor, normalized_shape, weight=None, bias=None,
                           eps: float = 1e-5, p: float = 0.0, training: bool = True):
    """(h, y) with h = residual + dropout(x, p, training) and y = layer_norm(h): the
    transformer's residual add, dropout and LayerNorm in one kernel (post-norm uses y,
    pre-norm both). Same Philox mask as ``tritonn.functional.dropout`` would draw."""
    from .attention import new_seed

    if isinstance(normalized_shape, numbers.Integral):
        normalized_shape = (int(normalized_shape),)
    normalized_shape = tuple(int(s) for s in normalized_shape)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if x.shape != residual.shape or x.dtype != residual.dtype:
        raise ValueError(f"add_dropout_layer_norm: expected x like the residual {tuple(residual.shape)} "
                         f"{residual.dtype}, got {tuple(x.shape)} {x.dtype}")
    _check(residual, normalized_shape, weight, bias)
    p = float(p) if training else 0.0
    if not runtime.runs_on_triton(residual, x, weight, bias):
        runtime.fallback("add_dropout_layer_norm", residual, x, weight, bias)
        h = residual + F.dropout(x, p, p > 0)
        return h, F.layer_norm(h, normalized_shape, weight, bias, eps)
    weight = weight.contiguous() if weight is not None else None
    bias = bias.contiguous() if bias is not None else None
    return apply("add_dropout_layer_norm", residual, x, weight, bias, *_rows(residual, normalized_shape), eps, p,
                                             new_seed(p))
