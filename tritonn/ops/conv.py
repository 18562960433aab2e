"""Conv2d: forward and backward on implicit-GEMM, depthwise and GEMM-core kernels.

Which kernels run (``_route``):
* 1x1, stride 1, no padding, groups 1: a plain matrix product per image, on the GEMM
  core (``ops.gemm.gemm``): y = x W^T over the pixels, dx = dy W, and dw = dy^T x
  when the pixels of all images form one strided matrix (channels_last).
* groups == C_in (depthwise, with any channel multiplier): the direct kernels.
* everything else: the implicit-GEMM kernels.
Padding modes other than zeros are index arithmetic in the forward and the weight
gradient; the input gradient is computed on the virtually padded input and folded
back (``pad_fold_kernel``). Weight gradients reduce over N*OH*OW pixels in SPLIT
slices written as float32 partials and summed by ``column_sum`` (deterministic).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
import triton

from .. import runtime
from .compiled import apply, compilable, static_type
from ..kernels.conv import (
    conv_dgrad_kernel,
    conv_forward_kernel,
    conv_wgrad_kernel,
    depthwise_dgrad_kernel,
    depthwise_forward_kernel,
    depthwise_wgrad_kernel,
    pad_fold_kernel,
)
from .autograd import activation_input, first_order, keeps_preact
from .gemm import _input_precision, activation_backward, column_sum, gemm
from .linear import activation_name, torch_activation

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
PAD_FOLD_BLOCK = 256


@static_type
@dataclass(frozen=True)
class ConvGeometry:
    """Everything about a convolution but the tensors. Padding is (top, bottom, left, right)."""

    stride: tuple
    padding: tuple
    dilation: tuple
    groups: int
    padding_mode: str
    kernel: tuple

    def output_size(self, h: int, w: int) -> tuple:
        (sh, sw), (pt, pb, pl, pr), (dh, dw), (kh, kw) = self.stride, self.padding, self.dilation, self.kernel
        return (h + pt + pb - dh * (kh - 1) - 1) // sh + 1, (w + pl + pr - dw * (kw - 1) - 1) // sw + 1


def _pair(v, name):
    if isinstance(v, int):
        return (v, v)
    v = tuple(v)
    if len(v) == 1:
        return (v[0], v[0])
    if len(v) != 2:
        raise RuntimeError(f"expected {name} to be a single integer value or a list of 2 values, but got {name}={list(v)}")
    return v


def geometry(weight: torch.Tensor, stride, padding, dilation, groups: int, padding_mode: str) -> ConvGeometry:
    """Normalize torch's conv arguments, raising torch's errors for bad ones."""
    kernel = tuple(weight.shape[2:])
    stride, dilation = _pair(stride, "stride"), _pair(dilation, "dilation")
    if any(s <= 0 for s in stride):
        raise RuntimeError(f"non-positive stride is not supported, got stride={list(stride)}")
    if any(d <= 0 for d in dilation):
        raise RuntimeError(f"dilation should be greater than zero, got dilation={list(dilation)}")
    if groups <= 0:
        raise RuntimeError(f"non-positive groups is not supported, got groups={groups}")
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {set(PADDING_MODES)}, but got padding_mode='{padding_mode}'")
    if isinstance(padding, str):
        if padding == "valid":
            pads = (0, 0, 0, 0)
        elif padding == "same":
            if any(s != 1 for s in stride):
                raise RuntimeError("padding='same' is not supported for strided convolutions")  # F.conv2d's type
            pads = ()
            for d, k in zip(dilation, kernel):
                total = d * (k - 1)
                pads += (total // 2, total - total // 2)
        else:
            raise RuntimeError(f"Invalid padding string: '{padding}' (expected 'valid' or 'same')")
    else:
        ph, pw = _pair(padding, "padding")
        if ph < 0 or pw < 0:
            raise RuntimeError(f"negative padding is not supported, got padding={[ph, pw]}")
        pads = (ph, ph, pw, pw)
    return ConvGeometry(stride, pads, dilation, groups, padding_mode, kernel)


def _dtype_name(dtype):
    return str(dtype).replace("torch.", "")


def check_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, geo: ConvGeometry) -> None:
    """torch's errors for conv2d, with what was expected and what came."""
    if x.dim() not in (3, 4):
        raise RuntimeError(
            f"Expected 3D (unbatched) or 4D (batched) input to conv2d, but got input of size: {list(x.shape)}")
    if weight.dim() != 4:
        raise RuntimeError(f"conv2d: expected weight to be 4-D (out_channels, in_channels/groups, kH, kW), "
                           f"got {weight.dim()}-D weight of size {list(weight.shape)}")
    devices = {t.device for t in (x, weight, bias) if t is not None and t.device.type != "meta"}
    if len(devices) > 1:
        names = ", ".join(sorted(str(d) for d in devices))
        raise RuntimeError(f"Expected all tensors to be on the same device, but found at least two devices: {names}")
    c_in = x.shape[-3]
    if weight.shape[0] % geo.groups != 0:
        raise RuntimeError(f"Given groups={geo.groups}, expected weight to be divisible by {geo.groups} at dimension 0, "
                           f"but got weight of size {list(weight.shape)} instead")
    if weight.shape[1] * geo.groups != c_in:
        batched = list(x.shape) if x.dim() == 4 else [1, *x.shape]
        raise RuntimeError(
            f"Given groups={geo.groups}, weight of size {list(weight.shape)}, expected input{batched} to have "
            f"{weight.shape[1] * geo.groups} channels, but got {c_in} channels instead")
    if bias is not None and (bias.dim() != 1 or bias.shape[0] != weight.shape[0]):
        raise RuntimeError(f"Given weight of size {list(weight.shape)}, expected bias to be 1-dimensional with "
                           f"{weight.shape[0]} elements, but got bias of size {list(bias.shape)} instead")
    for t, name in ((weight, "weight"), (bias, "bias")):
        if t is not None and t.dtype != x.dtype:
            raise RuntimeError(f"Input type ({_dtype_name(x.dtype)}) and {name} type ({_dtype_name(t.dtype)}) "
                               "should be the same")
    h, w = x.shape[-2:]
    pt, pb, pl, pr = geo.padding
    if geo.padding_mode == "reflect" and (max(pt, pb) >= h or max(pl, pr) >= w):
        raise RuntimeError(f"Padding size should be less than the corresponding input dimension, but got: "
                           f"padding ({pl}, {pr}, {pt}, {pb}) for input of size {list(x.shape)}")
    if geo.padding_mode == "circular" and (max(pt, pb) > h or max(pl, pr) > w):
        raise RuntimeError(f"Padding value causes wrapping around more than once: padding ({pl}, {pr}, {pt}, {pb}) "
                           f"for input of size {list(x.shape)}")
    (dh, dw), (kh, kw) = geo.dilation, geo.kernel
    if h + pt + pb < dh * (kh - 1) + 1 or w + pl + pr < dw * (kw - 1) + 1:
        raise RuntimeError(
            f"Calculated padded input size per channel: ({h + pt + pb} x {w + pl + pr}). Kernel size: "
            f"({dh * (kh - 1) + 1} x {dw * (kw - 1) + 1}). Kernel size can't be greater than actual input size")


# ---------------------------------------------------------------- layouts


def _is_channels_last(t: torch.Tensor) -> bool:
    """torch's suggest_memory_format: channels_last strides that are not also plain contiguous."""
    return t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()


def _memory_format(x: torch.Tensor, weight: torch.Tensor) -> torch.memory_format:
    """The output layout torch's convolution picks: channels_last if input or weight is."""
    return torch.channels_last if _is_channels_last(x) or _is_channels_last(weight) else torch.contiguous_format


def _input_channels_contiguous(weight: torch.Tensor) -> torch.Tensor:
    """The weight with input channels innermost (channels_last), a copy of a few MB at
    most: the implicit-GEMM tiles of the weight are then contiguous along the
    channels, so the GPU can vectorize and pipeline their loads."""
    return weight.contiguous(memory_format=torch.channels_last)


def _route(x: torch.Tensor, weight: torch.Tensor, geo: ConvGeometry) -> str:
    if geo.kernel == (1, 1) and geo.stride == (1, 1) and geo.padding == (0, 0, 0, 0) and geo.groups == 1:
        return "gemm"
    if geo.groups == x.shape[1] and weight.shape[1] == 1 and geo.groups > 1:
        return "depthwise"
    return "implicit_gemm"


def _pixels_matrix(t: torch.Tensor):
    """An NCHW-shaped tensor as (images, pixels, channels) strided views, or None when
    the pixels of one image do not form one stride (dense NCHW or NHWC only)."""
    n, c, h, w = t.shape
    if t.stride(2) == w * t.stride(3):
        return t.as_strided((n, h * w, c), (t.stride(0), t.stride(3), t.stride(1)))
    return None


def _wgrad_splits(base_programs: int, pixels: int, device: torch.device) -> tuple:
    """How many pixel slices the weight gradient reduces over, and their length:
    enough programs to fill the GPU, never slices shorter than a few tiles."""
    if runtime.INTERPRETING or device.type != "cuda":
        target, min_slice = 2 * base_programs, 32
    else:
        target = 4 * torch.cuda.get_device_properties(device).multi_processor_count
        min_slice = 1024
    splits = max(1, min(triton.cdiv(target, base_programs), pixels // min_slice))
    per_split = triton.cdiv(triton.cdiv(pixels, splits), 64) * 64
    return triton.cdiv(pixels, per_split) if pixels else 1, max(per_split, 64)


def _conv_args(geo: ConvGeometry, padded_input: bool = False):
    (sh, sw), (pt, _, pl, _), (dh, dw) = geo.stride, geo.padding, geo.dilation
    if padded_input:
        pt = pl = 0
    return sh, sw, pt, pl, dh, dw


# ---------------------------------------------------------------- forward


def conv_forward(x, weight, bias, geo: ConvGeometry, activation: str, store_preact: bool):
    """y = act(conv(x, weight) + bias), and the pre-activation when asked. x is 4-D."""
    n, c_in, h, w = x.shape
    c_out = weight.shape[0]
    oh, ow = geo.output_size(h, w)
    fmt = _memory_format(x, weight)
    y = runtime.empty((n, c_out, oh, ow), dtype=x.dtype, device=x.device, memory_format=fmt)
    preact = runtime.empty(y.shape, dtype=x.dtype, device=x.device, memory_format=fmt) if store_preact else None
    if y.numel() == 0:
        return y, preact
    bias = bias.contiguous() if bias is not None else None
    route = _route(x, weight, geo)
    if route == "gemm" and _pixels_matrix(x) is not None:
        gemm(_pixels_matrix(x), weight.view(c_out, c_in).t(), bias=bias, activation=activation,
             store_preact=store_preact, out=_pixels_matrix(y),
             preact_out=_pixels_matrix(preact) if preact is not None else None)
        return y, preact
    common = dict(HAS_BIAS=bias is not None, STORE_PREACT=store_preact, ACTIVATION=activation)
    x_strides, y_strides = x.stride(), y.stride()
    if route == "depthwise":
        grid = lambda meta: (triton.cdiv(n * oh * ow, meta["BLOCK_P"]), triton.cdiv(c_out, meta["BLOCK_C"]))  # noqa: E731
        depthwise_forward_kernel[grid](
            x, weight, y, bias if bias is not None else y, preact if preact is not None else y,
            n, h, w, oh, ow, c_out, c_out // c_in,
            *x_strides, weight.stride(0), weight.stride(2), weight.stride(3), *y_strides,
            *_conv_args(geo), KH=geo.kernel[0], KW=geo.kernel[1], PADDING_MODE=geo.padding_mode, **common)
        return y, preact
    cin_g, cout_g = c_in // geo.groups, c_out // geo.groups
    weight = _input_channels_contiguous(weight)
    grid = lambda meta: (triton.cdiv(n * oh * ow, meta["BLOCK_M"]) * triton.cdiv(cout_g, meta["BLOCK_N"]),  # noqa: E731
                         geo.groups)
    conv_forward_kernel[grid](
        x, weight, y, bias if bias is not None else y, preact if preact is not None else y,
        n, h, w, oh, ow, cin_g, cout_g,
        *x_strides, *weight.stride(), *y_strides, *_conv_args(geo),
        KH=geo.kernel[0], KW=geo.kernel[1], PADDING_MODE=geo.padding_mode,
        INPUT_PRECISION=_input_precision(x.dtype, x.device, runtime.conv_tf32_enabled()), **common)
    return y, preact


# ---------------------------------------------------------------- backward


def conv_input_grad(dy, weight, x_shape, geo: ConvGeometry, fmt) -> torch.Tensor:
    n, c_in, h, w = x_shape
    c_out = weight.shape[0]
    oh, ow = dy.shape[2:]
    dx = runtime.empty(x_shape, dtype=dy.dtype, device=dy.device, memory_format=fmt)
    if dx.numel() == 0:
        return dx
    route = _route(dx, weight, geo)
    if route == "gemm" and _pixels_matrix(dy) is not None:
        gemm(_pixels_matrix(dy), weight.view(c_out, c_in), out=_pixels_matrix(dx))
        return dx
    pt, pb, pl, pr = geo.padding
    fold = geo.padding_mode != "zeros" and any(geo.padding)
    target = dx
    if fold:  # gradient of the padded input, folded back below
        target = runtime.empty((n, c_in, h + pt + pb, w + pl + pr), dtype=dy.dtype, device=dy.device,
                               memory_format=fmt)
    th, tw = target.shape[2:]
    conv = _conv_args(geo, padded_input=fold)
    if route == "depthwise":
        grid = lambda meta: (triton.cdiv(n * th * tw, meta["BLOCK_P"]), triton.cdiv(c_in, meta["BLOCK_C"]))  # noqa: E731
        depthwise_dgrad_kernel[grid](
            dy, weight, target, n, th, tw, oh, ow, c_in, c_out // c_in,
            *dy.stride(), weight.stride(0), weight.stride(2), weight.stride(3), *target.stride(),
            *conv, KH=geo.kernel[0], KW=geo.kernel[1])
    else:
        cin_g, cout_g = c_in // geo.groups, c_out // geo.groups
        weight = _input_channels_contiguous(weight)
        grid = lambda meta: (triton.cdiv(n * th * tw, meta["BLOCK_M"]) * triton.cdiv(cin_g, meta["BLOCK_N"]),  # noqa: E731
                             geo.groups)
        conv_dgrad_kernel[grid](
            dy, weight, target, n, th, tw, oh, ow, cin_g, cout_g,
            *dy.stride(), *weight.stride(), *target.stride(), *conv,
            KH=geo.kernel[0], KW=geo.kernel[1],
            INPUT_PRECISION=_input_precision(dy.dtype, dy.device, runtime.conv_tf32_enabled()))
    if fold:
        candidates = 3 if geo.padding_mode != "replicate" else None
        pad_fold_kernel[(triton.cdiv(dx.numel(), PAD_FOLD_BLOCK),)](
            target, dx, n, c_in, h, w, *target.stride(), *dx.stride(), pt, pb, pl, pr,
            candidates or 1 + pt + pb, candidates or 1 + pl + pr,
            MODE=geo.padding_mode, BLOCK=PAD_FOLD_BLOCK)
    return dx


def conv_weight_grad(dy, x, weight, geo: ConvGeometry, need_bias: bool):
    """(dw, db) with db = dy summed over (n, h, w) when ``need_bias``, else None."""
    n, c_in, h, w = x.shape
    c_out, cin_g, kh, kw = weight.shape
    oh, ow = dy.shape[2:]
    pixels = n * oh * ow
    route = _route(x, weight, geo)
    if route == "gemm" and pixels and _pixels_matrix(dy) is not None and _pixels_matrix(x) is not None:
        dy_m, x_m = _pixels_matrix(dy), _pixels_matrix(x)
        if n == 1 or (dy_m.stride(0) == oh * ow * dy_m.stride(1) and x_m.stride(0) == h * w * x_m.stride(1)):
            # all images' pixels are one stride apart: a single GEMM over N*H*W
            dy2 = dy_m.as_strided((pixels, c_out), (dy_m.stride(1), dy_m.stride(2)))
            x2 = x_m.as_strided((pixels, c_in), (x_m.stride(1), x_m.stride(2)))
            dw, _, db = gemm(dy2.t(), x2, row_sum=need_bias, out_dtype=weight.dtype)
            return dw.view(c_out, c_in, 1, 1), db
    acc_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    if route == "depthwise":
        base = triton.cdiv(c_out, 16) * kh * kw
    else:
        base = triton.cdiv(c_out // geo.groups, 64) * triton.cdiv(cin_g, 64) * kh * kw * geo.groups
    splits, per_split = _wgrad_splits(base, pixels, x.device)
    part_dtype = weight.dtype if splits == 1 else acc_dtype
    dw_part = runtime.empty((splits, c_out, cin_g, kh * kw), dtype=part_dtype, device=x.device)
    db_part = runtime.empty((splits, c_out), dtype=part_dtype, device=x.device) if need_bias else None
    conv = _conv_args(geo)
    if route == "depthwise":
        grid = lambda meta: (triton.cdiv(c_out, meta["BLOCK_C"]), kh * kw, splits)  # noqa: E731
        depthwise_wgrad_kernel[grid](
            dy, x, dw_part, db_part if need_bias else dw_part,
            n, h, w, oh, ow, c_out, c_out // c_in, splits, per_split,
            *dy.stride(), *x.stride(), dw_part.stride(0), dw_part.stride(1), dw_part.stride(3),
            db_part.stride(0) if need_bias else 0,
            *conv, KH=kh, KW=kw, PADDING_MODE=geo.padding_mode, ROW_SUM=need_bias)
    else:
        cout_g = c_out // geo.groups
        grid = lambda meta: (triton.cdiv(cout_g, meta["BLOCK_M"]) * triton.cdiv(cin_g, meta["BLOCK_N"]),  # noqa: E731
                             kh * kw, geo.groups * splits)
        conv_wgrad_kernel[grid](
            dy, x, dw_part, db_part if need_bias else dw_part,
            n, h, w, oh, ow, cin_g, cout_g, splits, per_split,
            *dy.stride(), *x.stride(), dw_part.stride(0), dw_part.stride(1), dw_part.stride(2), dw_part.stride(3),
            db_part.stride(0) if need_bias else 0,
            *conv, KH=kh, KW=kw, PADDING_MODE=geo.padding_mode, ROW_SUM=need_bias,
            INPUT_PRECISION=_input_precision(x.dtype, x.device, runtime.conv_tf32_enabled()))
    if splits == 1:
        dw, db = dw_part[0], (db_part[0] if need_bias else None)
    else:
        dw = column_sum(dw_part.view(splits, -1), weight.dtype)
        db = column_sum(db_part, weight.dtype) if need_bias else None
    return dw.view(weight.shape), db


def channel_sum(dy: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """dy summed over (n, h, w) per channel, for a bias gradient without a weight gradient."""
    rows = dy.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1).reshape(-1, dy.shape[1])
    return column_sum(rows, dtype)


def activation_backward_4d(dy: torch.Tensor, z: torch.Tensor, activation: str) -> torch.Tensor:
    """dL/dz for y = act(z) with z a dense 4-D tensor; dy brought to z's layout first."""
    fmt = torch.channels_last if _is_channels_last(z) else torch.contiguous_format
    dy = dy.contiguous(memory_format=fmt)
    order = (0, 2, 3, 1) if fmt == torch.channels_last else (0, 1, 2, 3)
    dz = activation_backward(dy.permute(order).reshape(1, -1), z.permute(order).reshape(1, -1), activation)
    return dz.view([z.shape[i] for i in order]).permute([order.index(i) for i in range(4)])


@compilable("conv2d")
class Conv2dFunction(torch.autograd.Function):
    """x (N, C_in, H, W), weight (C_out, C_in/groups, KH, KW), bias (C_out,) or None."""

    @staticmethod
    def forward(ctx, x, weight, bias, geo, activation, needs_grad):
        y, preact = conv_forward(x, weight, bias, geo, activation, keeps_preact(activation, needs_grad))
        ctx.geo, ctx.activation = geo, activation
        ctx.x_shape, ctx.fmt = x.shape, _memory_format(x, weight)
        if needs_grad:
            need_x, need_w = ctx.needs_input_grad[:2]
            ctx.save_for_backward(x if need_w else None, weight if need_x or need_w else None,
                                  activation_input(activation, y, preact))
        return y

    @staticmethod
    @first_order("conv2d", linear=lambda ctx: ctx.activation == "none")
    def backward(ctx, grad_y):
        x, weight, act_input = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        grad_z = grad_y if ctx.activation == "none" else activation_backward_4d(grad_y, act_input, ctx.activation)
        grad_x = grad_w = grad_b = None
        if need_x:
            grad_x = conv_input_grad(grad_z, weight, ctx.x_shape, ctx.geo, ctx.fmt)
        if need_w:
            grad_w, grad_b = conv_weight_grad(grad_z, x, weight, ctx.geo, need_b)
        elif need_b:
            grad_b = channel_sum(grad_z, grad_z.dtype)
        return grad_x, grad_w, grad_b, None, None, None


_FLOATING = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           padding_mode: str = "zeros", activation=None) -> torch.Tensor:
    """:func:`torch.nn.functional.conv2d` on Triton kernels, with two extras:
    ``padding_mode`` ("zeros", "reflect", "replicate", "circular", as in nn.Conv2d;
    handled in the kernels' index arithmetic, no padded copy) and ``activation``
    ("relu", "gelu", "gelu_tanh", "silu" or F.relu / F.gelu / F.silu) fused in the
    epilogue, forward and backward.

    input (N, C_in, H, W) or (C_in, H, W); weight (C_out, C_in / groups, KH, KW).
    Follows ``torch.autocast`` like nn.Conv2d; channels_last in, channels_last out.
    """
    act = activation_name(activation)
    geo = geometry(weight, stride, padding, dilation, groups, padding_mode)
    triton_path = runtime.runs_on_triton(input, weight, bias)
    if triton_path:  # autocast first, as torch does: a bf16 input meets an fp32 weight there
        input, weight, bias = runtime.autocast(input, weight, bias)
    check_conv2d(input, weight, bias, geo)
    if not triton_path:
        runtime.fallback("conv2d", input, weight, bias)
        pt, pb, pl, pr = geo.padding
        if padding_mode != "zeros":
            input = F.pad(input, (pl, pr, pt, pb), mode=padding_mode)
            pt = pb = pl = pr = 0
        if (pt, pl) != (pb, pr):
            input = F.pad(input, (0, pr - pl, 0, pb - pt))
        y = F.conv2d(input, weight, bias, geo.stride, (pt, pl), geo.dilation, groups)
        return torch_activation(y, act)
    if input.dtype not in _FLOATING:
        raise NotImplementedError(
            f"tritonn conv2d: expected a floating dtype (float16, bfloat16, float32, float64), got {input.dtype}")
    unbatched = input.dim() == 3
    x = input.unsqueeze(0) if unbatched else input
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (input, weight, bias))
    y = apply("conv2d", x, weight, bias, geo, act, needs_grad)
    return y.squeeze(0) if unbatched else y
