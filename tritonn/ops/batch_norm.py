"""Batch norm: y = act((x - mean) / sqrt(var + eps) * weight + bias), per channel.

Training (batch statistics), forward, three kernels (``tritonn.kernels.norm``):
    partial statistics per (channel block, chunk)  ->  merge + running-stat update
    ->  normalize (+ affine, + activation)
Evaluation (running statistics): a per-channel kernel turns the running statistics
into (mean, invstd), then the same normalize kernel.
Backward:
    partial sums of dz and dz * (x - mean) per (channel block, chunk)  ->  merge:
    grad_weight, grad_bias  ->  grad_input (elementwise)
with dz = dy * act'(z), z recomputed from x (a fused activation saves nothing extra).
The reduction is skipped when only grad_input is asked for in eval mode.

Only the gradients autograd asks for are computed, and only what they need is saved:
(mean, invstd) always, x for grad_weight / the batch-statistics grad_input / a fused
activation, weight for grad_input / the activation, bias for the activation.

Tensors reach the kernels as (N, C, L) views given by strides (``_view3d``); inputs
whose spatial dims cannot be flattened into one stride are copied first. Tiles and
the chunking of the grid come from ``plan``.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
import triton

from .. import runtime
from .compiled import apply, compilable
from ..kernels.norm import (
    batch_norm_backward_kernel,
    batch_norm_finalize_grads_kernel,
    batch_norm_finalize_stats_kernel,
    batch_norm_forward_kernel,
    batch_norm_partial_grads_kernel,
    batch_norm_partial_stats_kernel,
)
from .autograd import first_order
from .linear import activation_name, torch_activation

# ---------------------------------------------------------------- tiles and chunks

GPU_TILE = 2048  # elements per (BLOCK_N, BLOCK_C, BLOCK_L) tile on a GPU
GPU_MAX_BLOCK_C = 128  # channels per row of a channels_last tile
GPU_MIN_ROW = 64  # NCHW: at least this many contiguous elements per tile row
GPU_PROGRAMS_PER_SM = 8  # the reduction grids aim at this many programs per SM
GPU_WARPS = 4
FINALIZE_BLOCKS_GPU = {"BLOCK_K": 128, "BLOCK_C": 32}  # per-channel merges: few, wide iterations
FINALIZE_WARPS = 8
# Under the interpreter: few programs with big tiles (its cost is programs x ops).
# Tests shrink these to walk the multi-tile, multi-chunk paths on small shapes.
INTERPRETER_TILE = 16384
INTERPRETER_CHUNKS = 1  # chunks per channel block
INTERPRETER_FINALIZE_K = 64  # chunks merged per step
MAX_CHUNKS = 32768  # grid axis 1 is limited to 65535


def _block_l(L: int) -> int:
    """The NCHW row length: rows of at least GPU_MIN_ROW elements, least padding, longest."""
    if L <= GPU_MIN_ROW:
        return runtime.next_pow2(L)
    best = None
    for b in (64, 128, 256, 512, 1024):
        padded = triton.cdiv(L, b) * b
        if best is None or padded <= best[0]:
            best = (padded, b)
    return best[1]


def tile_shape(N: int, C: int, L: int, channel_fast: bool, interpreting: bool) -> tuple[int, int, int]:
    """(BLOCK_N, BLOCK_C, BLOCK_L) for an (N, C, L) view whose fastest axis is C
    (``channel_fast``) or L. On a GPU the tile is GPU_TILE elements (a fixed set of
    shapes, see ``gpu_tile_shapes``); under the interpreter it shrinks to the data."""
    if interpreting:
        tile = INTERPRETER_TILE
        if channel_fast:
            bc = min(runtime.next_pow2(C), tile)
            bl = min(runtime.next_pow2(L), max(tile // bc, 1))
        else:
            bl = min(runtime.next_pow2(L), tile)
            bc = min(runtime.next_pow2(C), max(tile // bl, 1))
        bn = min(runtime.next_pow2(N), max(tile // (bc * bl), 1))
        return bn, bc, bl
    if channel_fast:
        bc, bl = min(runtime.next_pow2(C), GPU_MAX_BLOCK_C), 1
    else:
        bl = _block_l(L)
        bc = max(GPU_MIN_ROW // bl, 1)
    return GPU_TILE // (bc * bl), bc, bl


def gpu_tile_shapes() -> list[tuple[int, int, int]]:
    """Every tile shape ``tile_shape`` can pick on a GPU (for the compile tier)."""
    shapes = set()
    for L in range(1, 2049):
        shapes.add(tile_shape(64, 64, L, False, False))
    for C in range(1, 257):
        shapes.add(tile_shape(64, C, 1, True, False))
    return sorted(shapes)


_sm_counts: dict = {}


def _sm_count(device: torch.device) -> int:
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _sm_counts:
        _sm_counts[index] = torch.cuda.get_device_properties(index).multi_processor_count
    return _sm_counts[index]


def _merge_rows(N: int, L: int, strides: list) -> tuple[int, int, list] | None:
    """(N * L, C, 1) views of (N, C, L) views when every tensor's (n, l) pairs are rows
    of one stride (channels_last), else None."""
    if L == 1:
        return N, 1, tuple((sn, sc, 0) for sn, sc, _ in strides)
    if all(N == 1 or sn == L * sl for sn, _, sl in strides):
        return N * L, 1, tuple((sl, sc, 0) for _, sc, sl in strides)
    return None


def plan(N: int, C: int, L: int, strides: list, device: torch.device, *, gpu: bool | None = None,
         sm_count: int | None = None) -> dict:
    """How the big kernels walk an (N, C, L) problem whose tensors have the given (n, c, l)
    strides (the first tensor's layout decides). Returns the (possibly row-merged)
    sizes and strides, the tile, the chunking and the grid."""
    if gpu is None:
        gpu = not runtime.INTERPRETING
    if gpu and sm_count is None:
        sm_count = _sm_count(device)
    knobs = (GPU_TILE, GPU_PROGRAMS_PER_SM) if gpu else (INTERPRETER_TILE, INTERPRETER_CHUNKS)
    args = (N, C, L, tuple(map(tuple, strides)), gpu, sm_count, knobs)
    if any(isinstance(v, torch.SymInt) for v in (N, C, L, *(v for st in strides for v in st))):
        return _plan.__wrapped__(*args)  # torch.compile's shape-only run: symbolic sizes do not hash
    return _plan(*args)


@functools.lru_cache(maxsize=1024)
def _plan(N, C, L, strides, gpu, sm_count, knobs):
    """``plan``, cached: the host work of a call is part of its latency on small layers."""
    sn, sc, sl = strides[0]
    channel_fast = L == 1 or abs(sc) < abs(sl)
    if channel_fast:
        merged = _merge_rows(N, L, strides)
        if merged is not None:
            N, L, strides = merged
    bn, bc, bl = tile_shape(N, C, L, channel_fast, not gpu)
    c_blocks = triton.cdiv(C, bc)
    tiles_n, tiles_l = triton.cdiv(N, bn), triton.cdiv(L, bl)
    if gpu:
        programs = GPU_PROGRAMS_PER_SM * sm_count
        chunks = triton.cdiv(programs, c_blocks)
    else:
        chunks = INTERPRETER_CHUNKS
    chunks = max(1, min(chunks, tiles_n * tiles_l, MAX_CHUNKS))
    if chunks <= tiles_n:  # split the rows only
        chunk_tiles_n, chunk_tiles_l = triton.cdiv(tiles_n, chunks), tiles_l
    else:  # one row tile per chunk, and split the columns too
        chunk_tiles_n, chunk_tiles_l = 1, triton.cdiv(tiles_l, triton.cdiv(chunks, tiles_n))
    nchunk_n, nchunk_l = triton.cdiv(tiles_n, chunk_tiles_n), triton.cdiv(tiles_l, chunk_tiles_l)
    return {
        "N": N, "C": C, "L": L, "strides": strides,
        "blocks": {"BLOCK_N": bn, "BLOCK_C": bc, "BLOCK_L": bl},
        "chunk": (chunk_tiles_n * bn, chunk_tiles_l * bl, nchunk_l),
        "nchunk_n": nchunk_n, "num_chunks": nchunk_n * nchunk_l,
        "grid": (c_blocks, nchunk_n * nchunk_l),
        "num_warps": GPU_WARPS if gpu else 1,
    }


def _finalize_blocks(C: int, num_chunks: int) -> dict:
    if runtime.INTERPRETING:
        return {"BLOCK_K": min(runtime.next_pow2(num_chunks), INTERPRETER_FINALIZE_K), "BLOCK_C": min(runtime.next_pow2(C), 1024)}
    return dict(FINALIZE_BLOCKS_GPU, num_warps=FINALIZE_WARPS)


# ---------------------------------------------------------------- views


def _spatial_stride(x: torch.Tensor) -> int | None:
    """The one stride of x's flattened spatial dims, or None when they do not flatten."""
    dims = [(size, stride) for size, stride in zip(x.shape[2:], x.stride()[2:]) if size != 1]
    for (_, outer), (size, inner) in zip(dims, dims[1:]):
        if outer != inner * size:
            return None
    return dims[-1][1] if dims else 0


def _view3d(x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """x and the (n, c, l) strides of its (N, C, L) view; a copy when the spatial dims
    do not flatten into one stride."""
    sl = _spatial_stride(x)
    if sl is None:
        x = x.contiguous()
        sl = _spatial_stride(x)
    return x, (x.stride(0), x.stride(1), sl)


def _channels_last(x: torch.Tensor) -> bool:
    """torch's suggest_memory_format() == channels_last(_3d) for a 4-D (5-D) tensor."""
    if x.dim() not in (4, 5) or x.is_contiguous():
        return False
    order = (1, 3, 2, 0) if x.dim() == 4 else (1, 4, 3, 2, 0)
    smallest = 0
    for d in order:
        size, stride = x.shape[d], x.stride(d)
        if size == 0 or stride < smallest or (d == 0 and smallest == x.stride(1)):
            return False
        smallest = stride * size if size > 1 else stride
    return True


def _empty_like(x: torch.Tensor, dtype: torch.dtype | None = None, channels_last: bool = False) -> torch.Tensor:
    dtype = dtype or x.dtype
    if channels_last:
        shape = (x.shape[0], *x.shape[2:], x.shape[1])
        return runtime.empty(shape, dtype=dtype, device=x.device).movedim(-1, 1)
    return runtime.empty(x.shape, dtype=dtype, device=x.device)


def _acc_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


_counters: dict = {}


def _no_counter(device: torch.device) -> torch.Tensor:
    """An int64 stand-in for num_batches_tracked where there is none (never read or
    written: the flags are off), so every launch sees an int64 pointer there."""
    if device in _counters:
        return _counters[device]
    counter = torch.zeros(1, dtype=torch.long, device=device)
    if type(counter) is torch.Tensor:  # not a fake tensor of torch.compile's tracing
        _counters[device] = counter
    return counter


def _chunk_args(p: dict) -> tuple:
    return p["chunk"]


# ---------------------------------------------------------------- launchers


def forward_stats(x, x_strides, rmean, rvar, nbt, training, momentum, eps):
    """Per-channel (mean, invstd) as a (2, C) float32 (float64) tensor; updates the
    running statistics and num_batches_tracked in training. x is (N, C, *) with
    flattenable spatial dims."""
    N, C = x.shape[0], x.shape[1]
    L = math.prod(x.shape[2:])
    acc = _acc_dtype(x)
    stats = runtime.empty((2, C), dtype=acc, device=x.device)
    eps_hi, eps_lo = runtime.float_pair(float(eps))
    mom_hi, mom_lo = runtime.float_pair(float(momentum) if momentum is not None else 0.0)
    if x.numel() == 0:
        if training and nbt is not None:  # torch counts the batch and leaves the statistics alone
            dummy = runtime.empty((1, 2, max(C, 1)), dtype=acc, device=x.device)
            batch_norm_partial_stats_kernel[(1, 1)](  # reads nothing (N = 0); x may have no storage
                dummy, dummy, nbt, 0, C, 1, 0, 0, 0, 1, 1, 1, INCREMENT_NBT=True, BLOCK_N=1, BLOCK_C=1, BLOCK_L=1)
        return stats
    rm = rmean if rmean is not None else stats
    rv = rvar if rvar is not None else stats
    if training:
        p = plan(N, C, L, [x_strides], x.device)
        fin = _finalize_blocks(C, p["num_chunks"])
        partial = runtime.empty((p["num_chunks"], 2, C), dtype=acc, device=x.device)
        batch_norm_partial_stats_kernel[p["grid"]](
            x, partial, nbt if nbt is not None else _no_counter(x.device),
            p["N"], C, p["L"], *p["strides"][0], *_chunk_args(p),
            INCREMENT_NBT=nbt is not None, **p["blocks"], num_warps=p["num_warps"],
        )
        batch_norm_finalize_stats_kernel[(triton.cdiv(C, fin["BLOCK_C"]),)](
            partial, stats, rm, rv, nbt if nbt is not None else _no_counter(x.device),
            p["N"], C, p["L"], p["chunk"][0], p["chunk"][1], p["nchunk_n"], p["chunk"][2],
            mom_hi, mom_lo, eps_hi, eps_lo,
            BATCH_STATS=True, UPDATE_RUNNING=rmean is not None, CUMULATIVE=momentum is None, **fin,
        )
    else:
        fin = _finalize_blocks(C, 1)
        batch_norm_finalize_stats_kernel[(triton.cdiv(C, fin["BLOCK_C"]),)](
            stats, stats, rm, rv, _no_counter(x.device), N, C, L, 1, 1, 1, 1,
            mom_hi, mom_lo, eps_hi, eps_lo,
            BATCH_STATS=False, UPDATE_RUNNING=False, CUMULATIVE=False, **fin,
        )
    return stats


def normalize(x, x_strides, stats, weight, bias, activation, channels_last):
    """y = act((x - mean) * invstd * weight + bias), in x's memory format."""
    N, C = x.shape[0], x.shape[1]
    L = math.prod(x.shape[2:])
    y = _empty_like(x, channels_last=channels_last)
    if x.numel() == 0:
        return y
    _, y_strides = _view3d(y)
    p = plan(N, C, L, [x_strides, y_strides], x.device)
    batch_norm_forward_kernel[p["grid"]](
        x, y, stats, weight if weight is not None else stats, bias if bias is not None else stats,
        p["N"], C, p["L"], *p["strides"][0], *p["strides"][1], *_chunk_args(p),
        HAS_WEIGHT=weight is not None, HAS_BIAS=bias is not None, ACTIVATION=activation,
        **p["blocks"], num_warps=p["num_warps"],
    )
    return y


def backward(grad_y, x, stats, weight, bias, *, batch_stats, activation, need_x, need_w, need_b,
             channels_last, x_shape, param_dtype):
    """(grad_x, grad_weight, grad_bias), each None unless asked for. x is None when
    nothing needs it (eval mode, grad_x only, no activation)."""
    device = grad_y.device
    N, C = x_shape[0], x_shape[1]
    L = math.prod(x_shape[2:])
    acc = stats.dtype
    grad_x = _empty_like(grad_y, channels_last=channels_last) if need_x else None
    grad_w = runtime.empty((C,), dtype=param_dtype, device=device) if need_w else None
    grad_b = runtime.empty((C,), dtype=param_dtype, device=device) if need_b else None
    if N * C * L == 0:  # torch: zero gradients for the parameters
        grad_w = torch.zeros((C,), dtype=param_dtype, device=device) if need_w else None
        grad_b = torch.zeros((C,), dtype=param_dtype, device=device) if need_b else None
        return grad_x, grad_w, grad_b
    grad_y, dy_strides = _view3d(grad_y)
    strides = {"dy": dy_strides}
    if x is not None:
        x, strides["x"] = _view3d(x)
    if need_x:
        strides["dx"] = _view3d(grad_x)[1]
    # the layout of the tensor written (or else x's) decides the tiling
    names = [n for n in ("dx", "x", "dy") if n in strides]
    p = plan(N, C, L, [strides[n] for n in names], device)
    strides = dict(zip(names, p["strides"]))
    if x is None:
        x, strides["x"] = grad_y, strides["dy"]  # never read
    w = weight if weight is not None else stats
    b = bias if bias is not None else stats
    flags = dict(HAS_WEIGHT=weight is not None, HAS_BIAS=bias is not None, ACTIVATION=activation)
    need_sums = need_w or need_b or (need_x and batch_stats)
    sums = None
    if need_sums:
        need_xmu = need_w or (need_x and batch_stats)
        partial = runtime.empty((p["num_chunks"], 2, C), dtype=acc, device=device)
        batch_norm_partial_grads_kernel[p["grid"]](
            grad_y, x, stats, w, b, partial,
            p["N"], C, p["L"], *strides["dy"], *strides["x"], *_chunk_args(p),
            NEED_XMU=need_xmu, **flags, **p["blocks"], num_warps=p["num_warps"],
        )
        store_sums = need_x and batch_stats
        sums = runtime.empty((2, C), dtype=acc, device=device) if store_sums else None
        fin = _finalize_blocks(C, p["num_chunks"])
        batch_norm_finalize_grads_kernel[(triton.cdiv(C, fin["BLOCK_C"]),)](
            partial, stats, sums if sums is not None else stats,
            grad_w if need_w else stats, grad_b if need_b else stats,
            C, p["num_chunks"],
            NEED_W=need_w, NEED_B=need_b, STORE_SUMS=store_sums, **fin,
        )
    if need_x:
        batch_norm_backward_kernel[p["grid"]](
            grad_y, x, grad_x, stats, sums if sums is not None else stats, w, b,
            p["N"], C, p["L"], *strides["dy"], *strides["x"], *strides["dx"], *_chunk_args(p),
            BATCH_STATS=batch_stats, **flags, **p["blocks"], num_warps=p["num_warps"],
        )
    return grad_x, grad_w, grad_b


# ---------------------------------------------------------------- autograd


@compilable("batch_norm", mutates=lambda args: (3, 4, 5) if args[6] else ())  # training: running stats
class BatchNormFunction(torch.autograd.Function):
    """x (N, C, *), weight/bias (C,) or None; running statistics and the batch counter
    are updated in place (not differentiable), like torch's."""

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, num_batches_tracked,
                training, momentum, eps, activation, needs_grad):
        channels_last = _channels_last(x)
        x3, x_strides = _view3d(x)
        stats = forward_stats(x3, x_strides, running_mean, running_var, num_batches_tracked,
                                 training, momentum, eps)
        nbt = num_batches_tracked
        if training and nbt is not None and not nbt.is_inference():
            torch.autograd.graph.increment_version(nbt)  # what torch's num_batches_tracked.add_(1) does
        y = normalize(x3, x_strides, stats, weight, bias, activation, channels_last)
        ctx.training, ctx.activation, ctx.channels_last = training, activation, channels_last
        ctx.x_shape = tuple(x.shape)
        ctx.param_dtype = weight.dtype if weight is not None else (bias.dtype if bias is not None else x.dtype)
        if needs_grad:
            need_x, need_w, need_b = ctx.needs_input_grad[:3]
            act = activation != "none"
            keep_x = need_w or (need_x and training) or (act and (need_x or need_b))
            keep_w = need_x or act
            ctx.save_for_backward(x if keep_x else None, weight if keep_w else None,
                                  bias if act else None, stats)
        return y

    @staticmethod
    @first_order("batch_norm", linear=lambda ctx: not ctx.training and ctx.activation == "none")
    def backward(ctx, grad_y):
        x, weight, bias, stats = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        grad_x, grad_w, grad_b = backward(
            grad_y, x, stats, weight, bias, batch_stats=ctx.training, activation=ctx.activation,
            need_x=need_x, need_w=need_w, need_b=need_b,
            channels_last=ctx.channels_last, x_shape=ctx.x_shape, param_dtype=ctx.param_dtype,
        )
        return grad_x, grad_w, grad_b, None, None, None, None, None, None, None, None


# ---------------------------------------------------------------- the functional API


_FLOATING = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _verify_batch_size(size) -> None:
    """torch's F._verify_batch_size, same message."""
    prod = size[0]
    for s in size[2:]:
        prod *= s
    if prod == 1:
        raise ValueError(f"Expected more than 1 value per channel when training, got input size {size}")


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _check(x, running_mean, running_var, weight, bias, training, momentum, eps, num_batches_tracked):
    """torch's errors for F.batch_norm (types and messages), then tritonn's own."""
    if training:
        _verify_batch_size(x.size())
    if training and eps <= 0.0:
        raise ValueError(f"batch_norm eps must be positive during training, but got {eps}")
    if eps < 0.0:
        raise ValueError(f"batch_norm eps must be non-negative, but got {eps}")
    if x.dim() < 2:  # torch: IndexError in training, a RuntimeError about the statistics' sizes in eval
        raise (IndexError if training else RuntimeError)(
            f"batch_norm: expected an input of at least 2 dimensions (N, C, *), got a {x.dim()}-D input"
        )
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean and running_var must either both be None or neither be None")
    if momentum is None and (num_batches_tracked is None or not training):
        raise TypeError(
            "batch_norm(): argument 'momentum' must be float, not NoneType (None, the cumulative moving "
            "average, needs num_batches_tracked in training)"
        )
    C = x.shape[1]
    for name, t in (("running_mean", running_mean), ("running_var", running_var)):
        if t is None:
            if not training:
                raise RuntimeError(f"{name} must be defined in evaluation mode")
            continue
        if t.requires_grad and torch.is_grad_enabled():
            raise RuntimeError(
                f"The function 'batch_norm' is not differentiable with respect to argument '{name}'. "
                "This input cannot have requires_grad True."
            )
    for name, t in (("weight", weight), ("bias", bias), ("running_mean", running_mean), ("running_var", running_var)):
        if t is not None and t.numel() != C:
            raise RuntimeError(f"{name} should contain {C} elements not {t.numel()}")
        if t is not None and t.dim() != 1:
            raise RuntimeError(f"batch_norm: expected {name} to be 1-D of {C} elements, got shape {tuple(t.shape)}")
    params = [(n, t) for n, t in (("weight", weight), ("bias", bias), ("running_mean", running_mean),
                                  ("running_var", running_var)) if t is not None]
    devices = {t.device for t in [x, *(t for _, t in params)] if t.device.type != "meta"}
    if len(devices) > 1:
        names = ", ".join(sorted(str(d) for d in devices))
        raise RuntimeError(f"Expected all tensors to be on the same device, but found at least two devices: {names}")
    nbt = num_batches_tracked
    if nbt is not None and (nbt.dtype != torch.long or nbt.numel() != 1):
        raise RuntimeError(
            f"batch_norm: num_batches_tracked must be a one-element int64 tensor, got "
            f"{_dtype_name(num_batches_tracked.dtype)} of shape {tuple(num_batches_tracked.shape)}"
        )
    if x.dtype not in _FLOATING:
        scalar_type = x.new_empty(0).type().split(".")[-1].replace("Tensor", "")  # torch's name: Long, Int, ...
        raise NotImplementedError(f'"batch_norm" not implemented for \'{scalar_type}\'')
    dtypes = {t.dtype for _, t in params}
    allowed = {x.dtype} | ({torch.float32} if x.dtype in (torch.float16, torch.bfloat16) else set())
    if len(dtypes) > 1 or not dtypes <= allowed:
        got = ", ".join(f"{_dtype_name(t.dtype)} ({n})" for n, t in params)
        raise RuntimeError(
            f"batch_norm: expected weight, bias, running_mean and running_var to share one dtype, the input's "
            f"({_dtype_name(x.dtype)})" + (" or float32" if len(allowed) > 1 else "") + f"; got {got}"
        )


def batch_norm(
    input: torch.Tensor,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    training: bool = False,
    momentum: float | None = 0.1,
    eps: float = 1e-5,
    activation=None,
    *,
    num_batches_tracked: torch.Tensor | None = None,
) -> torch.Tensor:
    """:func:`torch.nn.functional.batch_norm`, plus ``activation`` fused into the
    normalization, forward and backward ("relu" for the ResNet block; also "gelu",
    "gelu_tanh", "silu", or F.relu / F.gelu / F.silu).

    input (N, C, *), statistics and affine parameters (C,). ``training`` uses batch
    statistics (and updates the running ones, if given, with the unbiased variance);
    otherwise the running statistics. float16/bfloat16 inputs take float32 or
    same-dtype parameters; statistics are computed in float32 (float64 for float64).

    ``num_batches_tracked`` (keyword, what ``tritonn.BatchNorm2d`` passes in training):
    a module's int64 counter, incremented on the device; with ``momentum=None`` the
    running statistics then take the cumulative average, factor 1 / num_batches_tracked.
    """
    act = activation_name(activation)
    _check(input, running_mean, running_var, weight, bias, training, momentum, eps, num_batches_tracked)
    tensors = (input, running_mean, running_var, weight, bias, num_batches_tracked)
    if not runtime.runs_on_triton(*tensors):
        runtime.fallback("batch_norm", *tensors)
        factor = momentum
        if num_batches_tracked is not None and training:
            num_batches_tracked.add_(1)
            if momentum is None:
                factor = 1.0 / float(num_batches_tracked)
        y = F.batch_norm(input, running_mean, running_var, weight, bias, training, factor or 0.0, eps)
        return torch_activation(y, act)
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (input, weight, bias))
    # The kernels read per-channel tensors with unit stride: strided views go through
    # contiguous copies (differentiable for the parameters, copied back for updated statistics).
    weight, bias, mean, var = (t.contiguous() if t is not None else None
                               for t in (weight, bias, running_mean, running_var))
    y = apply("batch_norm", input, weight, bias, mean, var, num_batches_tracked if training else None,
                                training, momentum, eps, act, needs_grad)
    if training:
        for stat, copy in ((running_mean, mean), (running_var, var)):
            if copy is not stat:
                stat.copy_(copy)
    return y
