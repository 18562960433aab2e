"""MaxPool2d: argument checks with torch's errors, launchers, and the autograd Function.

Forward runs one of two kernels (``kernels/pool.py``) chosen like torch chooses its
output memory format: channels_last input -> the NHWC kernel and a channels_last
output; anything else (3-D input included) -> the NCHW kernel and a contiguous
output. Inputs of any strides are read in place.

Indices are written only when someone needs them: int64 flat indices for
``return_indices=True`` (torch's ``ih * W + iw``), else, when a gradient is needed,
the winning tap number of each window in one byte (int8; int32 past 127 taps).
Backward saves those indices and nothing else, and gathers: each input-gradient
element sums grad_out over the windows whose index names it. No atomics, so the
result is deterministic with overlapping windows.
"""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
import triton

from .. import runtime
from .compiled import apply, compilable
from ..kernels.pool import (
    max_pool2d_nchw_backward_kernel,
    max_pool2d_nchw_kernel,
    max_pool2d_nhwc_backward_kernel,
    max_pool2d_nhwc_kernel,
)
from .autograd import first_order

_FLOATING = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

# Elements per program: on a GPU a few thousand keeps every SM busy with enough
# loads in flight; the interpreter pays per program, so it gets bigger tiles.
GPU_TILE = 1024
INTERPRETER_TILE = 8192
NUM_WARPS = 4
MAX_BLOCK_W = 128  # NCHW: output columns per tile
MAX_BLOCK_C = 64  # NHWC: channels per tile


# ---------------------------------------------------------------- arguments


def _pair(value, name: str, allow_empty: bool = False) -> tuple:
    """torch's int-or-tuple pooling argument as a pair; () when empty is allowed."""
    if isinstance(value, torch.Tensor) and value.dim() == 0:
        value = value.item()
    if isinstance(value, (list, tuple, torch.Size)):
        items = tuple(value)
    else:
        items = (value,)
    try:
        items = tuple(operator.index(v) for v in items)
    except TypeError:
        got = type(next(v for v in items if not hasattr(v, "__index__"))).__name__
        raise TypeError(f"max_pool2d(): argument '{name}' must be an int or a tuple of ints, not {got}") from None
    if allow_empty and len(items) == 0:
        return ()
    if len(items) == 1:
        return items * 2
    if len(items) == 2:
        return items
    what = {
        "kernel_size": "either be a single int, or a tuple of two ints",
        "stride": "either be omitted, a single int, or a tuple of two ints",
        "padding": "either be a single int, or a tuple of two ints",
        "dilation": "be either a single int, or a tuple of two ints",
    }[name]
    raise RuntimeError(f"max_pool2d: {name} must {what}, got {len(items)} values {items}")


def _div_trunc(a: int, b: int) -> int:
    """C++ integer division (toward zero), as torch's checks compute it."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def output_size(size: int, kernel: int, pad: int, stride: int, dilation: int, ceil_mode: bool) -> int:
    """torch's pooling_output_shape, with its checks."""
    if stride == 0:
        raise RuntimeError("max_pool2d: stride should not be zero")
    if pad < 0:
        raise RuntimeError(f"max_pool2d: pad must be non-negative, but got pad: {pad}")
    if pad > _div_trunc((kernel - 1) * dilation + 1, 2):
        raise RuntimeError(
            "max_pool2d: pad should be at most half of effective kernel size, but got "
            f"pad={pad}, kernel_size={kernel} and dilation={dilation}"
        )
    if kernel > 0 and pad > kernel // 2:  # torch's pool2d_shape_check (a bad kernel is reported later)
        raise RuntimeError(
            "max_pool2d: pad should be smaller than or equal to half of kernel size, but got "
            f"pad={pad}, kernel_size={kernel} and dilation={dilation}"
        )
    numerator = size + 2 * pad - dilation * (kernel - 1) - 1 + (stride - 1 if ceil_mode else 0)
    out = numerator // stride + 1  # floor division, like torch's div_rtn
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1  # the last window would start in the right padding: dropped
    return out


def channels_last(x: torch.Tensor) -> bool:
    """torch's ``suggest_memory_format(x) == channels_last`` for a 4-D tensor
    (c10's is_channels_last_strides_2d, ambiguous cases resolved to NCHW)."""
    if x.dim() != 4:
        return False
    sizes, strides = x.shape, x.stride()
    if strides[1] == 0:
        return False
    smallest = 0
    for d in (1, 3, 2, 0):
        if sizes[d] == 0 or strides[d] < smallest:
            return False
        if d == 0 and smallest == strides[1]:
            return False
        smallest = strides[d] * (sizes[d] if sizes[d] > 1 else 1)
    return True


def check_max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode):
    """torch's argument and shape checks for max_pool2d, in torch's order, with torch's
    exception types. Returns (kernel, stride, padding, dilation, (OH, OW)), each a pair."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"max_pool2d(): argument 'input' must be Tensor, not {type(x).__name__}")
    k = _pair(kernel_size, "kernel_size")
    s = _pair(stride if stride is not None else (), "stride", allow_empty=True) or k
    p = _pair(padding, "padding")
    d = _pair(dilation, "dilation")
    if x.dim() not in (3, 4):
        raise RuntimeError(
            f"max_pool2d: expected a 3D (C, H, W) or 4D (N, C, H, W) input, got a {x.dim()}D tensor "
            f"of shape {tuple(x.shape)}"
        )
    in_h, in_w = x.shape[-2], x.shape[-1]
    out_h = output_size(in_h, k[0], p[0], s[0], d[0], ceil_mode)
    out_w = output_size(in_w, k[1], p[1], s[1], d[1], ceil_mode)
    if k[0] <= 0 or k[1] <= 0:
        raise RuntimeError(f"max_pool2d: kernel size should be greater than zero, but got kH: {k[0]} kW: {k[1]}")
    if s[0] <= 0 or s[1] <= 0:
        raise RuntimeError(f"max_pool2d: stride should be greater than zero, but got dH: {s[0]} dW: {s[1]}")
    if d[0] <= 0 or d[1] <= 0:
        raise RuntimeError(
            f"max_pool2d: dilation should be greater than zero, but got dilationH: {d[0]} dilationW: {d[1]}"
        )
    planes = x.shape[-3]
    if any(size == 0 for size in x.shape[-3:]) or (x.dim() == 3 and x.shape[0] == 0):
        raise RuntimeError(
            "max_pool2d: expected a 3D (C, H, W) or 4D (N, C, H, W) input with non-zero C, H and W "
            f"(only the batch dim may be 0), got shape {tuple(x.shape)}"
        )
    if out_h < 1 or out_w < 1:
        raise RuntimeError(
            f"max_pool2d: Given input size: ({planes}x{in_h}x{in_w}). "
            f"Calculated output size: ({planes}x{out_h}x{out_w}). Output size is too small "
            f"(kernel_size={k}, stride={s}, padding={p}, dilation={d}, ceil_mode={ceil_mode})"
        )
    if x.dtype in (torch.bool, torch.complex32, torch.complex64, torch.complex128):
        raise NotImplementedError(f'"max_pool2d" not implemented for {x.dtype}')
    return k, s, p, d, (out_h, out_w)


# ---------------------------------------------------------------- launchers


def _tile() -> int:
    return INTERPRETER_TILE if runtime.INTERPRETING else GPU_TILE


def nchw_blocks(planes: int, rows: int, cols: int) -> dict:
    """[planes, rows, cols] tile of about ``GPU_TILE`` elements (whole short rows, and
    several small planes per program)."""
    tile = _tile()
    bw = min(runtime.next_pow2(cols), MAX_BLOCK_W)
    fits = [1 << i for i in range(min(runtime.next_pow2(rows), max(tile // bw, 1)).bit_length())]
    if runtime.INTERPRETING:
        bh = fits[-1]  # fewest programs: the interpreter's cost is per program
    else:
        # the largest row block among those that pad the rows least (56 rows: 8, not 32 -> 64)
        bh = min(fits, key=lambda b: (triton.cdiv(rows, b) * b, -b))
    bp = min(runtime.next_pow2(planes), max(tile // (bw * bh), 1))
    return {"BLOCK_P": bp, "BLOCK_H": bh, "BLOCK_W": bw}


def nhwc_blocks(positions: int, channels: int) -> dict:
    """[positions, channels] tile: all channels up to MAX_BLOCK_C, positions fill the rest."""
    tile = _tile()
    bc = min(runtime.next_pow2(channels), MAX_BLOCK_C)
    bp = min(runtime.next_pow2(positions), max(tile // bc, 1))
    return {"BLOCK_P": bp, "BLOCK_C": bc}


def _wide(divisor: int, blocks: dict) -> bool:
    """Whether a kernel must split its flat positions with int64 vector divisions."""
    return divisor + blocks["BLOCK_P"] >= 2**31


def tap_index_dtype(kernel: tuple) -> torch.dtype:
    return torch.int8 if kernel[0] * kernel[1] <= 127 else torch.int32


def _geometry(kernel, stride, padding, dilation) -> dict:
    return dict(KH=kernel[0], KW=kernel[1], SH=stride[0], SW=stride[1],
                PH=padding[0], PW=padding[1], DH=dilation[0], DW=dilation[1])


def _nhwc_empty(n, c, h, w, dtype, device):
    """A channels_last (n, c, h, w) tensor, from runtime.empty."""
    return runtime.empty((n, h, w, c), dtype=dtype, device=device).permute(0, 3, 1, 2)


def max_pool2d_forward(x: torch.Tensor, kernel, stride, padding, dilation, out_hw, index: str, nhwc: bool):
    """x (N, C, H, W), any strides -> (y, idx): y (N, C, OH, OW) contiguous or channels_last
    (``nhwc``); idx alike, int64 flat indices (``index="flat"``), tap numbers ("tap") or None."""
    n, c, h, w = x.shape
    oh, ow = out_hw
    device = x.device
    idx_dtype = torch.int64 if index == "flat" else tap_index_dtype(kernel)
    if nhwc:
        y = _nhwc_empty(n, c, oh, ow, x.dtype, device)
        idx = _nhwc_empty(n, c, oh, ow, idx_dtype, device) if index != "none" else None
    else:
        y = runtime.empty((n, c, oh, ow), dtype=x.dtype, device=device)
        idx = runtime.empty((n, c, oh, ow), dtype=idx_dtype, device=device) if index != "none" else None
    if y.numel() == 0:
        return y, idx
    args = (x, y, idx if idx is not None else y)
    geometry = _geometry(kernel, stride, padding, dilation)
    if nhwc:
        positions = n * oh * ow
        blocks = nhwc_blocks(positions, c)
        grid = (triton.cdiv(positions, blocks["BLOCK_P"]), triton.cdiv(c, blocks["BLOCK_C"]))
        max_pool2d_nhwc_kernel[grid](
            *args, positions, c, h, w, oh, ow, *x.stride(),
            **geometry, INDEX=index, WIDE=_wide(oh * ow, blocks), **blocks, num_warps=NUM_WARPS,
        )
    else:
        blocks = nchw_blocks(n * c, oh, ow)
        grid = (triton.cdiv(n * c, blocks["BLOCK_P"]) * triton.cdiv(oh, blocks["BLOCK_H"])
                * triton.cdiv(ow, blocks["BLOCK_W"]),)
        max_pool2d_nchw_kernel[grid](
            *args, n * c, c, h, w, oh, ow, *x.stride(),
            **geometry, INDEX=index, WIDE=_wide(c, blocks), **blocks, num_warps=NUM_WARPS,
        )
    return y, idx


def max_pool2d_backward(grad_y: torch.Tensor, idx: torch.Tensor, input_shape, kernel, stride, padding, dilation,
                        index: str, nhwc: bool) -> torch.Tensor:
    """dL/dx (N, C, H, W), contiguous or channels_last (``nhwc``), from grad_y and the
    forward's indices (both (N, C, OH, OW), any strides)."""
    n, c, h, w = input_shape
    oh, ow = grad_y.shape[-2:]
    device = grad_y.device
    if nhwc:
        dx = _nhwc_empty(n, c, h, w, grad_y.dtype, device)
    else:
        dx = runtime.empty((n, c, h, w), dtype=grad_y.dtype, device=device)
    if dx.numel() == 0:
        return dx
    args = (grad_y, idx, dx)
    geometry = _geometry(kernel, stride, padding, dilation)
    if nhwc:
        positions = n * h * w
        blocks = nhwc_blocks(positions, c)
        grid = (triton.cdiv(positions, blocks["BLOCK_P"]), triton.cdiv(c, blocks["BLOCK_C"]))
        max_pool2d_nhwc_backward_kernel[grid](
            *args, positions, c, h, w, oh, ow, *grad_y.stride(), *idx.stride(),
            **geometry, INDEX=index, WIDE=_wide(h * w, blocks), **blocks, num_warps=NUM_WARPS,
        )
    else:
        blocks = nchw_blocks(n * c, h, w)
        grid = (triton.cdiv(n * c, blocks["BLOCK_P"]) * triton.cdiv(h, blocks["BLOCK_H"])
                * triton.cdiv(w, blocks["BLOCK_W"]),)
        max_pool2d_nchw_backward_kernel[grid](
            *args, n * c, c, h, w, oh, ow, *grad_y.stride(), *idx.stride(),
            **geometry, INDEX=index, WIDE=_wide(c, blocks), **blocks, num_warps=NUM_WARPS,
        )
    return dx


# ---------------------------------------------------------------- autograd


@compilable("max_pool2d")
class MaxPool2dFunction(torch.autograd.Function):
    """x (N, C, H, W) -> (y, idx). idx: int64 flat indices when ``return_indices``
    (returned, non-differentiable, and reused by backward), else tap numbers that
    only backward sees."""

    @staticmethod
    def forward(ctx, x, kernel, stride, padding, dilation, out_hw, return_indices, nhwc):
        index = "flat" if return_indices else "tap"
        y, idx = max_pool2d_forward(x, kernel, stride, padding, dilation, out_hw, index, nhwc)
        ctx.geometry = (kernel, stride, padding, dilation)
        ctx.input_shape = tuple(x.shape)
        ctx.index = index
        ctx.nhwc = nhwc
        ctx.save_for_backward(idx)
        if return_indices:
            ctx.mark_non_differentiable(idx)
            return y, idx
        return y

    @staticmethod
    @first_order("max_pool2d", linear=True)
    def backward(ctx, grad_y, *_):
        (idx,) = ctx.saved_tensors
        grad_x = max_pool2d_backward(grad_y, idx, ctx.input_shape, *ctx.geometry, ctx.index, ctx.nhwc)
        return grad_x, None, None, None, None, None, None, None


def max_pool2d(
    input: torch.Tensor,
    kernel_size,
    stride=None,
    padding=0,
    dilation=1,
    ceil_mode: bool = False,
    return_indices: bool = False,
):
    """Like :func:`torch.nn.functional.max_pool2d`: input (N, C, H, W) or (C, H, W) ->
    output (and int64 indices into each input plane when ``return_indices``), with
    torch's output size, ceil_mode rule, NaN propagation, tie-breaking, indices and
    memory format (channels_last in, channels_last out)."""
    kernel, stride, padding, dilation, out_hw = check_max_pool2d(
        input, kernel_size, stride, padding, dilation, ceil_mode)
    if not runtime.runs_on_triton(input):
        runtime.fallback("max_pool2d", input)
        return F.max_pool2d(input, kernel, stride, padding, dilation, ceil_mode=ceil_mode,
                            return_indices=return_indices)
    if input.dtype not in _FLOATING:
        raise NotImplementedError(
            f"tritonn max_pool2d: expected a floating dtype (float16, bfloat16, float32, float64), got {input.dtype}"
        )
    unbatched = input.dim() == 3
    nhwc = channels_last(input)  # always False for 3-D input, like torch
    x = input.unsqueeze(0) if unbatched else input
    if (torch.is_grad_enabled() and input.requires_grad) or torch.compiler.is_compiling():  # compile: one op
        out = apply("max_pool2d", x, kernel, stride, padding, dilation, out_hw, bool(return_indices), nhwc)
        y, idx = out if return_indices else (out, None)
    else:
        y, idx = max_pool2d_forward(x, kernel, stride, padding, dilation, out_hw,
                                    "flat" if return_indices else "none", nhwc)
    if unbatched:
        y = y.squeeze(0)
        idx = idx.squeeze(0) if idx is not None else None
    return (y, idx) if return_indices else y
