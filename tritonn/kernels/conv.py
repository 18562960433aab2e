"""Convolution kernels: implicit GEMM for the general case, direct kernels for depthwise.

Every tensor is addressed by its own (n, c, h, w) strides, so NCHW and channels_last
inputs need no copies. Groups run on grid axis ``g``; CIN_G = C_in / groups and
COUT_G = C_out / groups. Padding is index arithmetic (``padded_index``): zeros masks
the load, reflect/replicate/circular remap the index, so no padded copy of the input
is made in the forward or the weight gradient.

conv_forward_kernel   y = conv(x, w) + b. GEMM with M = N*OH*OW output pixels,
    N = COUT_G, K = KH*KW*CIN_G. Program (pid, g) computes a BLOCK_M x BLOCK_N tile
    of (pixel, output channel); one flat K loop walks (tap, input-channel block) so
    Triton can pipeline it, gathering the x tile of each tap.
conv_dgrad_kernel     dx = conv_transpose(dy, w). GEMM with M = N*H*W input pixels,
    N = CIN_G, K = KH*KW*COUT_G; a tap reads dy at oh = (ih + pad - kh*dil) / stride
    where that is an integer in range. For non-zero padding modes it runs on the
    padded input (pad = 0) and ``pad_fold_kernel`` adds the padding's gradient back.
conv_wgrad_kernel     dw = dy^T @ im2col(x), one tap per grid row. Program (pid, tap,
    g * SPLIT + s) computes a COUT_G x CIN_G tile over the s-th slice of the
    N*OH*OW pixels and writes float32 partials; the slices are summed by
    ``column_sum_kernel`` (deterministic, no atomics). ROW_SUM adds the bias gradient
    partials (sum of dy) on tap 0.
depthwise_*_kernel    groups == C_in (C_out = multiplier * C_in): too little work per
    output for a GEMM, so direct loops over the taps on BLOCK_P pixel x BLOCK_C
    channel tiles (channels contiguous for channels_last, pixels for NCHW).
pad_fold_kernel       dx[i, j] = sum of dx_padded over the padded positions that read
    (i, j): up to 3 candidates per dimension for reflect and circular, 1 + 2 * PAD_MAX
    for replicate.
"""

import triton
import triton.language as tl

from ..runtime import autotune_configs
from .common import cast_to, grouped_tile
from .gemm import accumulate, epilogue, gemm_config, prune_for


# Output channels per group are often 32-256, so narrow N tiles matter more than for Linear.
CONV_CONFIGS = [
    gemm_config(128, 128, 64, 3, 8),
    gemm_config(128, 128, 32, 4, 4),
    gemm_config(128, 64, 32, 4, 4),
    gemm_config(64, 128, 32, 4, 4),
    gemm_config(128, 32, 32, 4, 4),
    gemm_config(64, 64, 32, 4, 4),
    gemm_config(64, 32, 32, 5, 2),
    gemm_config(32, 32, 32, 5, 2),
]
CONV_INTERPRETER_CONFIG = gemm_config(32, 32, 32, 1, 4, group_m=2)

DEPTHWISE_CONFIGS = [
    triton.Config({"BLOCK_P": 64, "BLOCK_C": 64}, num_warps=4),
    triton.Config({"BLOCK_P": 128, "BLOCK_C": 32}, num_warps=4),
    triton.Config({"BLOCK_P": 32, "BLOCK_C": 128}, num_warps=4),
    triton.Config({"BLOCK_P": 256, "BLOCK_C": 16}, num_warps=8),
]
DEPTHWISE_INTERPRETER_CONFIG = triton.Config({"BLOCK_P": 32, "BLOCK_C": 16}, num_warps=4)

CONV_KEY = ["BATCH", "H", "W", "CIN_G", "COUT_G", "KH", "KW"]


@triton.jit
def padded_index(i, size, MODE: tl.constexpr):
    """Where virtual index ``i`` of a padded dimension of length ``size`` reads, and
    whether it reads at all (zeros padding reads nothing outside)."""
    if MODE == "reflect":
        i = tl.where(i < 0, -i, i)
        i = tl.where(i >= size, 2 * size - 2 - i, i)
        return i, i >= 0
    elif MODE == "replicate":
        return tl.minimum(tl.maximum(i, 0), size - 1), i == i
    elif MODE == "circular":
        i = tl.where(i < 0, i + size, i)
        i = tl.where(i >= size, i - size, i)
        return i, i >= 0
    else:
        return i, (i >= 0) & (i < size)


@triton.jit
def _split_pixels(p, OH, OW):
    """Flat pixel index -> (n, oh, ow)."""
    n = p // (OH * OW)
    rest = p % (OH * OW)
    return n, rest // OW, rest % OW


@triton.autotune(configs=autotune_configs(CONV_CONFIGS, CONV_INTERPRETER_CONFIG), key=CONV_KEY,
                 prune_configs_by={"early_config_prune": prune_for("x_ptr")})
@triton.jit
def conv_forward_kernel(
    x_ptr, w_ptr, y_ptr, bias_ptr, preact_ptr,
    BATCH, H, W, OH, OW, CIN_G, COUT_G,
    stride_xn, stride_xc, stride_xh, stride_xw,
    stride_wo, stride_wi, stride_wh, stride_ww,
    stride_yn, stride_yc, stride_yh, stride_yw,
    step_h, step_w, pad_h, pad_w, dil_h, dil_w,
    KH: tl.constexpr, KW: tl.constexpr, PADDING_MODE: tl.constexpr,
    HAS_BIAS: tl.constexpr, STORE_PREACT: tl.constexpr, ACTIVATION: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    ACC: tl.constexpr = tl.float64 if x_ptr.dtype.element_ty == tl.float64 else tl.float32
    g = tl.program_id(1)
    M = BATCH * OH * OW
    pid_m, pid_n = grouped_tile(tl.program_id(0), M, COUT_G, BLOCK_M, BLOCK_N, GROUP_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    n, oh, ow = _split_pixels(offs_m % M, OH, OW)
    co = (g * COUT_G + offs_n % COUT_G).to(tl.int64)
    x_rows = x_ptr + n.to(tl.int64) * stride_xn + (g * CIN_G).to(tl.int64) * stride_xc
    w_cols = w_ptr + co * stride_wo
    h0 = oh * step_h - pad_h
    w0 = ow * step_w - pad_w

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    c_blocks = tl.cdiv(CIN_G, BLOCK_K)
    for step in range(0, KH * KW * c_blocks):
        tap = step // c_blocks
        kh = tap // KW
        kw = tap % KW
        c = (step % c_blocks) * BLOCK_K + offs_k
        c_ok = c < CIN_G
        ih, ok_h = padded_index(h0 + kh * dil_h, H, PADDING_MODE)
        iw, ok_w = padded_index(w0 + kw * dil_w, W, PADDING_MODE)
        a_ptrs = (x_rows + ih.to(tl.int64) * stride_xh + iw.to(tl.int64) * stride_xw)[:, None] \
            + c.to(tl.int64)[None, :] * stride_xc
        a = tl.load(a_ptrs, mask=(ok_h & ok_w)[:, None] & c_ok[None, :], other=0.0)
        b_ptrs = (w_cols + kh * stride_wh + kw * stride_ww)[None, :] + c.to(tl.int64)[:, None] * stride_wi
        b = tl.load(b_ptrs, mask=c_ok[:, None], other=0.0)
        acc = accumulate(acc, a, b, INPUT_PRECISION)

    mask_n = offs_n < COUT_G
    mask = (offs_m < M)[:, None] & mask_n[None, :]
    y_offs = (n.to(tl.int64) * stride_yn + oh.to(tl.int64) * stride_yh + ow.to(tl.int64) * stride_yw)[:, None] \
        + co[None, :] * stride_yc
    epilogue(acc, y_ptr + y_offs, preact_ptr + y_offs, bias_ptr + co, mask, mask_n,
             HAS_BIAS, STORE_PREACT, ACTIVATION)


@triton.autotune(configs=autotune_configs(CONV_CONFIGS, CONV_INTERPRETER_CONFIG), key=CONV_KEY,
                 prune_configs_by={"early_config_prune": prune_for("dy_ptr")})
@triton.jit
def conv_dgrad_kernel(
    dy_ptr, w_ptr, dx_ptr,
    BATCH, H, W, OH, OW, CIN_G, COUT_G,
    stride_dyn, stride_dyc, stride_dyh, stride_dyw,
    stride_wo, stride_wi, stride_wh, stride_ww,
    stride_dxn, stride_dxc, stride_dxh, stride_dxw,
    step_h, step_w, pad_h, pad_w, dil_h, dil_w,
    KH: tl.constexpr, KW: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    ACC: tl.constexpr = tl.float64 if dy_ptr.dtype.element_ty == tl.float64 else tl.float32
    g = tl.program_id(1)
    M = BATCH * H * W
    pid_m, pid_n = grouped_tile(tl.program_id(0), M, CIN_G, BLOCK_M, BLOCK_N, GROUP_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    n, ih, iw = _split_pixels(offs_m % M, H, W)
    ci = (g * CIN_G + offs_n % CIN_G).to(tl.int64)
    dy_rows = dy_ptr + n.to(tl.int64) * stride_dyn + (g * COUT_G).to(tl.int64) * stride_dyc
    w_cols = w_ptr + (g * COUT_G).to(tl.int64) * stride_wo + (offs_n % CIN_G).to(tl.int64) * stride_wi

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    c_blocks = tl.cdiv(COUT_G, BLOCK_K)
    for step in range(0, KH * KW * c_blocks):
        tap = step // c_blocks
        kh = tap // KW
        kw = tap % KW
        c = (step % c_blocks) * BLOCK_K + offs_k
        c_ok = c < COUT_G
        th = ih + pad_h - kh * dil_h
        tw = iw + pad_w - kw * dil_w
        oh = th // step_h
        ow = tw // step_w
        ok = (th >= 0) & (th % step_h == 0) & (oh < OH) & (tw >= 0) & (tw % step_w == 0) & (ow < OW)
        a_ptrs = (dy_rows + oh.to(tl.int64) * stride_dyh + ow.to(tl.int64) * stride_dyw)[:, None] \
            + c.to(tl.int64)[None, :] * stride_dyc
        a = tl.load(a_ptrs, mask=ok[:, None] & c_ok[None, :], other=0.0)
        b_ptrs = (w_cols + kh * stride_wh + kw * stride_ww)[None, :] + c.to(tl.int64)[:, None] * stride_wo
        b = tl.load(b_ptrs, mask=c_ok[:, None], other=0.0)
        acc = accumulate(acc, a, b, INPUT_PRECISION)

    mask_n = offs_n < CIN_G
    mask = (offs_m < M)[:, None] & mask_n[None, :]
    dx_offs = (n.to(tl.int64) * stride_dxn + ih.to(tl.int64) * stride_dxh + iw.to(tl.int64) * stride_dxw)[:, None] \
        + ci[None, :] * stride_dxc
    epilogue(acc, dx_ptr + dx_offs, dx_ptr + dx_offs, dx_ptr, mask, mask_n, False, False, "none")


@triton.autotune(configs=autotune_configs(CONV_CONFIGS, CONV_INTERPRETER_CONFIG), key=CONV_KEY + ["SPLIT"],
                 prune_configs_by={"early_config_prune": prune_for("x_ptr")})
@triton.jit
def conv_wgrad_kernel(
    dy_ptr, x_ptr, dw_ptr, db_ptr,
    BATCH, H, W, OH, OW, CIN_G, COUT_G, SPLIT, PIXELS_PER_SPLIT,
    stride_dyn, stride_dyc, stride_dyh, stride_dyw,
    stride_xn, stride_xc, stride_xh, stride_xw,
    stride_dws, stride_dwo, stride_dwi, stride_dwt,
    stride_dbs,
    step_h, step_w, pad_h, pad_w, dil_h, dil_w,
    KH: tl.constexpr, KW: tl.constexpr, PADDING_MODE: tl.constexpr, ROW_SUM: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    ACC: tl.constexpr = tl.float64 if x_ptr.dtype.element_ty == tl.float64 else tl.float32
    tap = tl.program_id(1)
    kh = tap // KW
    kw = tap % KW
    g = tl.program_id(2) // SPLIT
    split = tl.program_id(2) % SPLIT
    pid_m, pid_n = grouped_tile(tl.program_id(0), COUT_G, CIN_G, BLOCK_M, BLOCK_N, GROUP_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    co = (g * COUT_G + offs_m % COUT_G).to(tl.int64)
    ci = (g * CIN_G + offs_n % CIN_G).to(tl.int64)
    P = BATCH * OH * OW
    first = split * PIXELS_PER_SPLIT
    last = tl.minimum(first + PIXELS_PER_SPLIT, P)

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    row_sum = tl.zeros((BLOCK_M,), dtype=ACC)
    for p0 in range(first, last, BLOCK_K):
        p = p0 + offs_k
        p_ok = p < last
        n, oh, ow = _split_pixels(p, OH, OW)
        n = n.to(tl.int64)
        a_ptrs = dy_ptr + co[:, None] * stride_dyc \
            + (n * stride_dyn + oh.to(tl.int64) * stride_dyh + ow.to(tl.int64) * stride_dyw)[None, :]
        a = tl.load(a_ptrs, mask=p_ok[None, :], other=0.0)
        ih, ok_h = padded_index(oh * step_h - pad_h + kh * dil_h, H, PADDING_MODE)
        iw, ok_w = padded_index(ow * step_w - pad_w + kw * dil_w, W, PADDING_MODE)
        b_ptrs = x_ptr + ci[None, :] * stride_xc \
            + (n * stride_xn + ih.to(tl.int64) * stride_xh + iw.to(tl.int64) * stride_xw)[:, None]
        b = tl.load(b_ptrs, mask=(p_ok & ok_h & ok_w)[:, None], other=0.0)
        acc = accumulate(acc, a, b, INPUT_PRECISION)
        if ROW_SUM:
            if (tap == 0) & (pid_n == 0):
                row_sum += tl.sum(a.to(ACC), axis=1)

    mask_m = offs_m < COUT_G
    mask = mask_m[:, None] & (offs_n < CIN_G)[None, :]
    dw_ptrs = dw_ptr + split * stride_dws + co[:, None] * stride_dwo + (offs_n % CIN_G).to(tl.int64)[None, :] \
        * stride_dwi + tap * stride_dwt
    tl.store(dw_ptrs, cast_to(acc, dw_ptr.dtype.element_ty), mask=mask)
    if ROW_SUM:
        if (tap == 0) & (pid_n == 0):
            tl.store(db_ptr + split * stride_dbs + co, cast_to(row_sum, db_ptr.dtype.element_ty), mask=mask_m)


@triton.autotune(configs=autotune_configs(DEPTHWISE_CONFIGS, DEPTHWISE_INTERPRETER_CONFIG),
                 key=["BATCH", "H", "W", "C_OUT", "KH", "KW"])
@triton.jit
def depthwise_forward_kernel(
    x_ptr, w_ptr, y_ptr, bias_ptr, preact_ptr,
    BATCH, H, W, OH, OW, C_OUT, MULT,
    stride_xn, stride_xc, stride_xh, stride_xw,
    stride_wo, stride_wh, stride_ww,
    stride_yn, stride_yc, stride_yh, stride_yw,
    step_h, step_w, pad_h, pad_w, dil_h, dil_w,
    KH: tl.constexpr, KW: tl.constexpr, PADDING_MODE: tl.constexpr,
    HAS_BIAS: tl.constexpr, STORE_PREACT: tl.constexpr, ACTIVATION: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """Program (pid_p, pid_c): BLOCK_P output pixels x BLOCK_C output channels;
    output channel co reads input channel co // MULT."""
    ACC: tl.constexpr = tl.float64 if x_ptr.dtype.element_ty == tl.float64 else tl.float32
    P = BATCH * OH * OW
    offs_p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    p_ok = offs_p < P
    c_ok = offs_c < C_OUT
    n, oh, ow = _split_pixels(offs_p % P, OH, OW)
    co = (offs_c % C_OUT).to(tl.int64)
    x_cols = x_ptr + (co // MULT) * stride_xc
    x_rows = n.to(tl.int64) * stride_xn
    acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=ACC)
    for tap in range(0, KH * KW):
        kh = tap // KW
        kw = tap % KW
        ih, ok_h = padded_index(oh * step_h - pad_h + kh * dil_h, H, PADDING_MODE)
        iw, ok_w = padded_index(ow * step_w - pad_w + kw * dil_w, W, PADDING_MODE)
        rows = x_rows + ih.to(tl.int64) * stride_xh + iw.to(tl.int64) * stride_xw
        x = tl.load(x_cols[None, :] + rows[:, None], mask=(ok_h & ok_w)[:, None], other=0.0)
        w = tl.load(w_ptr + co * stride_wo + kh * stride_wh + kw * stride_ww)
        acc += x.to(ACC) * w.to(ACC)[None, :]
    mask = p_ok[:, None] & c_ok[None, :]
    y_offs = (n.to(tl.int64) * stride_yn + oh.to(tl.int64) * stride_yh + ow.to(tl.int64) * stride_yw)[:, None] \
        + co[None, :] * stride_yc
    epilogue(acc, y_ptr + y_offs, preact_ptr + y_offs, bias_ptr + co, mask, c_ok,
             HAS_BIAS, STORE_PREACT, ACTIVATION)


@triton.autotune(configs=autotune_configs(DEPTHWISE_CONFIGS, DEPTHWISE_INTERPRETER_CONFIG),
                 key=["BATCH", "H", "W", "C_IN", "KH", "KW"])
@triton.jit
def depthwise_dgrad_kernel(
    dy_ptr, w_ptr, dx_ptr,
    BATCH, H, W, OH, OW, C_IN, MULT,
    stride_dyn, stride_dyc, stride_dyh, stride_dyw,
    stride_wo, stride_wh, stride_ww,
    stride_dxn, stride_dxc, stride_dxh, stride_dxw,
    step_h, step_w, pad_h, pad_w, dil_h, dil_w,
    KH: tl.constexpr, KW: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """Program (pid_p, pid_c): BLOCK_P input pixels x BLOCK_C input channels; input
    channel ci gathers from output channels ci * MULT ... ci * MULT + MULT - 1."""
    ACC: tl.constexpr = tl.float64 if dy_ptr.dtype.element_ty == tl.float64 else tl.float32
    P = BATCH * H * W
    offs_p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    p_ok = offs_p < P
    c_ok = offs_c < C_IN
    n, ih, iw = _split_pixels(offs_p % P, H, W)
    ci = (offs_c % C_IN).to(tl.int64)
    dy_rows = n.to(tl.int64) * stride_dyn
    acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=ACC)
    for tap in range(0, KH * KW):
        kh = tap // KW
        kw = tap % KW
        th = ih + pad_h - kh * dil_h
        tw = iw + pad_w - kw * dil_w
        oh = th // step_h
        ow = tw // step_w
        ok = (th >= 0) & (th % step_h == 0) & (oh < OH) & (tw >= 0) & (tw % step_w == 0) & (ow < OW)
        rows = dy_rows + oh.to(tl.int64) * stride_dyh + ow.to(tl.int64) * stride_dyw
        for m in range(0, MULT):
            co = ci * MULT + m
            dy = tl.load(dy_ptr + co[None, :] * stride_dyc + rows[:, None], mask=ok[:, None], other=0.0)
            w = tl.load(w_ptr + co * stride_wo + kh * stride_wh + kw * stride_ww)
            acc += dy.to(ACC) * w.to(ACC)[None, :]
    mask = p_ok[:, None] & c_ok[None, :]
    dx_ptrs = dx_ptr + (n.to(tl.int64) * stride_dxn + ih.to(tl.int64) * stride_dxh
                        + iw.to(tl.int64) * stride_dxw)[:, None] + ci[None, :] * stride_dxc
    tl.store(dx_ptrs, cast_to(acc, dx_ptr.dtype.element_ty), mask=mask)


@triton.autotune(configs=autotune_configs(DEPTHWISE_CONFIGS, DEPTHWISE_INTERPRETER_CONFIG),
                 key=["BATCH", "H", "W", "C_OUT", "KH", "KW", "SPLIT"])
@triton.jit
def depthwise_wgrad_kernel(
    dy_ptr, x_ptr, dw_ptr, db_ptr,
    BATCH, H, W, OH, OW, C_OUT, MULT, SPLIT, PIXELS_PER_SPLIT,
    stride_dyn, stride_dyc, stride_dyh, stride_dyw,
    stride_xn, stride_xc, stride_xh, stride_xw,
    stride_dws, stride_dwo, stride_dwt, stride_dbs,
    step_h, step_w, pad_h, pad_w, dil_h, dil_w,
    KH: tl.constexpr, KW: tl.constexpr, PADDING_MODE: tl.constexpr, ROW_SUM: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """Program (pid_c, tap, split): partial dw[co, tap] (and db[co] on tap 0) over the
    split-th slice of the N*OH*OW pixels, float32, summed afterwards."""
    ACC: tl.constexpr = tl.float64 if x_ptr.dtype.element_ty == tl.float64 else tl.float32
    tap = tl.program_id(1)
    kh = tap // KW
    kw = tap % KW
    split = tl.program_id(2)
    offs_c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = offs_c < C_OUT
    co = (offs_c % C_OUT).to(tl.int64)
    P = BATCH * OH * OW
    first = split * PIXELS_PER_SPLIT
    last = tl.minimum(first + PIXELS_PER_SPLIT, P)
    acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=ACC)
    bias_acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=ACC)
    for p0 in range(first, last, BLOCK_P):
        p = p0 + tl.arange(0, BLOCK_P)
        p_ok = p < last
        n, oh, ow = _split_pixels(p, OH, OW)
        n = n.to(tl.int64)
        dy_rows = n * stride_dyn + oh.to(tl.int64) * stride_dyh + ow.to(tl.int64) * stride_dyw
        dy = tl.load(dy_ptr + co[None, :] * stride_dyc + dy_rows[:, None], mask=p_ok[:, None], other=0.0).to(ACC)
        ih, ok_h = padded_index(oh * step_h - pad_h + kh * dil_h, H, PADDING_MODE)
        iw, ok_w = padded_index(ow * step_w - pad_w + kw * dil_w, W, PADDING_MODE)
        x_rows = n * stride_xn + ih.to(tl.int64) * stride_xh + iw.to(tl.int64) * stride_xw
        x = tl.load(x_ptr + (co // MULT)[None, :] * stride_xc + x_rows[:, None],
                    mask=(p_ok & ok_h & ok_w)[:, None], other=0.0)
        acc += dy * x.to(ACC)
        if ROW_SUM:
            bias_acc += dy
    tl.store(dw_ptr + split * stride_dws + co * stride_dwo + tap * stride_dwt,
             cast_to(tl.sum(acc, axis=0), dw_ptr.dtype.element_ty), mask=c_ok)
    if ROW_SUM:
        if tap == 0:
            tl.store(db_ptr + split * stride_dbs + co, cast_to(tl.sum(bias_acc, axis=0), db_ptr.dtype.element_ty),
                     mask=c_ok)


@triton.jit
def _fold_candidate(i, t, size, pad_lo, pad_hi, MODE: tl.constexpr):
    """The t-th padded position that reads original index i, and whether it exists."""
    if MODE == "replicate":
        # t == 0: i itself; t = 1..: the padding left of index 0, then right of size - 1
        lo = pad_lo - t
        hi = pad_lo + size - 1 + (t - pad_lo)
        ip = tl.where(t == 0, i + pad_lo, tl.where(t <= pad_lo, lo, hi))
        ok = (t == 0) | ((t <= pad_lo) & (i == 0)) | ((t > pad_lo) & (t - pad_lo <= pad_hi) & (i == size - 1))
    elif MODE == "reflect":
        ip = tl.where(t == 0, i + pad_lo, tl.where(t == 1, pad_lo - i, pad_lo + 2 * (size - 1) - i))
        ok = (t == 0) | ((t == 1) & (i >= 1) & (i <= pad_lo)) | ((t == 2) & (i < size - 1) & (i >= size - 1 - pad_hi))
    else:  # circular
        ip = tl.where(t == 0, i + pad_lo, tl.where(t == 1, i + pad_lo - size, i + pad_lo + size))
        ok = (t == 0) | ((t == 1) & (i >= size - pad_lo)) | ((t == 2) & (i < pad_hi))
    return ip, ok


@triton.jit
def pad_fold_kernel(
    src_ptr, dst_ptr,
    BATCH, C, H, W,
    stride_sn, stride_sc, stride_sh, stride_sw,
    stride_dn, stride_dc, stride_dh, stride_dw,
    pad_top, pad_bottom, pad_left, pad_right,
    CANDIDATES_H, CANDIDATES_W,
    MODE: tl.constexpr, BLOCK: tl.constexpr,
):
    """dst (N, C, H, W) = the gradient of the padded tensor src (N, C, H + pads, W + pads)
    folded back: each program handles BLOCK elements of dst in (n, c, h, w) order."""
    ACC: tl.constexpr = tl.float64 if dst_ptr.dtype.element_ty == tl.float64 else tl.float32
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    total = BATCH * C * H * W
    ok = offs < total
    w = offs % W
    h = (offs // W) % H
    c = (offs // (W * H)) % C
    n = offs // (W * H * C)
    base = src_ptr + n * stride_sn + c * stride_sc
    acc = tl.zeros((BLOCK,), dtype=ACC)
    for th in range(0, CANDIDATES_H):
        hp, ok_h = _fold_candidate(h, th, H, pad_top, pad_bottom, MODE)
        for tw in range(0, CANDIDATES_W):
            wp, ok_w = _fold_candidate(w, tw, W, pad_left, pad_right, MODE)
            v = tl.load(base + hp * stride_sh + wp * stride_sw, mask=ok & ok_h & ok_w, other=0.0)
            acc += v.to(ACC)
    tl.store(dst_ptr + n * stride_dn + c * stride_dc + h * stride_dh + w * stride_dw,
             cast_to(acc, dst_ptr.dtype.element_ty), mask=ok)
