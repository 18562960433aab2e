"""Max pooling over 2-D windows, forward and backward, in two memory layouts.

Geometry (all ``tl.constexpr``, so the tap loops unroll and every divide by a
stride or dilation is by a constant): kernel KH x KW, stride SH x SW, padding
PH x PW, dilation DH x DW. Output row ``oh`` reads input rows
``oh * SH - PH + kh * DH`` for ``kh < KH``; taps outside the input are skipped.

Forward scans a window in torch's order (kh outer, kw inner) and takes a value
when ``v > best`` or ``v`` is NaN: the first maximum wins a tie, the last NaN of a
window wins. ``best`` starts at -inf with the index of the first tap inside the
input, so a window of -inf returns that tap like torch. Values are compared in
the input dtype (bfloat16 as float32 under the interpreter, which cannot compare
bfloat16: exact both ways). The winner is tracked as its tap number
``kh * KW + kw`` (an immediate per tap) and stored either as

* ``INDEX == "flat"``: torch's index ``ih * W + iw`` into the input plane (int64),
  what ``return_indices=True`` returns;
* ``INDEX == "tap"``: the tap number itself (int8 when KH*KW < 128), what backward
  needs when nobody asked for indices: 1 byte per output instead of torch's 8;
* ``INDEX == "none"``: nothing (inference), and the scan is one NaN-propagating
  max per tap.

Backward is a gather, deterministic and free of atomics: one program owns a tile
of the input gradient; each element visits the ``cdiv((K - 1) * D + 1, S)`` windows
per axis that can contain it, in increasing output order (the order in which
torch's scatter adds them), and adds grad_out of those whose saved index names it.
Loads are masked by window geometry only, not by the index match: a per-element
mask would split the vector loads, and the sectors would be fetched anyway. Sums
are accumulated in float32 (float64 for float64) and rounded once.

Layouts:

* ``*_nchw_kernel``: a program owns a [BLOCK_P planes, BLOCK_H rows, BLOCK_W cols]
  tile of one output (or input-gradient) tensor that is contiguous NCHW, so
  stores are contiguous along W and all index math is on 1-D slices; the flat
  program id is split into tile coordinates once per program.
* ``*_nhwc_kernel``: a program owns [BLOCK_P positions (n, h, w), BLOCK_C channels]
  of a channels_last tensor: every load and store is contiguous along C.

Inputs and grad_out are addressed by their four strides (n, c, h, w), so views
need no copy; offsets are int64 wherever they meet a stride.
"""

import triton
import triton.language as tl

from .common import INTERPRETING, cast_to


@triton.jit
def _first_tap(start, D: tl.constexpr):
    """The first tap at or after ``start`` (a window's first row/column, maybe in the
    padding) that is not in the padding: torch starts its scan there."""
    return tl.where(start < 0, start + ((D - 1 - start) // D) * D, start)


@triton.jit
def _split(start, BLOCK: tl.constexpr, D, WIDE: tl.constexpr):
    """``x = start + arange(BLOCK)`` (``start`` an int64 scalar) as ``(x // D, x % D)``,
    the quotient int64, the remainder int32 (int64 when WIDE). The one int64 division
    is the scalar one; the vector division is int32 (several times cheaper on a GPU)
    unless ``WIDE`` says ``D + BLOCK`` does not fit in int32."""
    if WIDE:
        x = start + tl.arange(0, BLOCK)
        q = x // D
        return q, x - q * D
    else:
        q0 = start // D
        r = (start - q0 * D).to(tl.int32) + tl.arange(0, BLOCK)
        dq = r // D
        return q0 + dq, r - dq * D


@triton.jit
def _take(v, best, best_tap, tap: tl.constexpr, INDEX: tl.constexpr):
    """One tap of the scan: torch's rule ``v > best or isnan(v)`` when the winner's
    index is needed, a NaN-propagating max otherwise."""
    if INDEX == "none":
        best = tl.maximum(best, v, propagate_nan=tl.PropagateNan.ALL)
    else:
        take = (v > best) | (v != v)
        best = tl.where(take, v, best)
        best_tap = tl.where(take, tap, best_tap)
    return best, best_tap


@triton.jit
def max_pool2d_nchw_kernel(
    x_ptr, y_ptr, idx_ptr,
    PLANES, C, H, W, OH, OW,
    stride_xn, stride_xc, stride_xh, stride_xw,
    KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
    PH: tl.constexpr, PW: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr,
    INDEX: tl.constexpr, WIDE: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
):
    """y (PLANES = N*C, OH, OW) contiguous, idx likewise; x (N, C, H, W) by strides."""
    # compare in the input dtype; bfloat16 as float32 in the interpreter, which cannot compare it (exact)
    CT: tl.constexpr = tl.float32 if INTERPRETING and x_ptr.dtype.element_ty == tl.bfloat16 else x_ptr.dtype.element_ty
    pid = tl.program_id(0)
    tiles_w = tl.cdiv(OW, BLOCK_W)
    tiles_h = tl.cdiv(OH, BLOCK_H)
    tw = pid % tiles_w
    th = (pid // tiles_w) % tiles_h
    tp = pid // (tiles_w * tiles_h)

    p = tp.to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P)
    n, c = _split(tp.to(tl.int64) * BLOCK_P, BLOCK_P, C, WIDE)
    oh = th * BLOCK_H + tl.arange(0, BLOCK_H)
    ow = tw * BLOCK_W + tl.arange(0, BLOCK_W)
    p_ok = p < PLANES
    oh_ok = oh < OH
    ow_ok = ow < OW
    x_plane = x_ptr + (n * stride_xn + c.to(tl.int64) * stride_xc)
    h0 = oh * SH - PH
    w0 = ow * SW - PW

    best = tl.full([BLOCK_P, BLOCK_H, BLOCK_W], float("-inf"), CT)
    best_tap = tl.zeros([BLOCK_P, BLOCK_H, BLOCK_W], dtype=tl.int32)
    if INDEX != "none":
        tap_h = (_first_tap(h0, DH) - h0) // DH
        tap_w = (_first_tap(w0, DW) - w0) // DW
        best_tap += (tap_h * KW)[None, :, None] + tap_w[None, None, :]
    for kh in tl.static_range(KH):
        ih = h0 + kh * DH
        row_ok = p_ok[:, None, None] & (oh_ok & (ih >= 0) & (ih < H))[None, :, None]
        row_ptr = x_plane[:, None, None] + (ih.to(tl.int64) * stride_xh)[None, :, None]
        for kw in tl.static_range(KW):
            iw = w0 + kw * DW
            ok = row_ok & (ow_ok & (iw >= 0) & (iw < W))[None, None, :]
            v = tl.load(row_ptr + (iw.to(tl.int64) * stride_xw)[None, None, :], mask=ok, other=float("-inf"))
            best, best_tap = _take(v.to(CT), best, best_tap, kh * KW + kw, INDEX)

    out_ok = p_ok[:, None, None] & oh_ok[None, :, None] & ow_ok[None, None, :]
    offs = (p[:, None, None] * OH + oh[None, :, None]) * OW + ow[None, None, :]
    tl.store(y_ptr + offs, cast_to(best, y_ptr.dtype.element_ty), mask=out_ok)
    if INDEX == "tap":
        tl.store(idx_ptr + offs, best_tap.to(idx_ptr.dtype.element_ty), mask=out_ok)
    elif INDEX == "flat":
        kh_best = best_tap // KW
        ih_best = h0[None, :, None] + kh_best * DH
        iw_best = w0[None, None, :] + (best_tap - kh_best * KW) * DW
        tl.store(idx_ptr + offs, ih_best.to(tl.int64) * W + iw_best, mask=out_ok)


@triton.jit
def max_pool2d_nhwc_kernel(
    x_ptr, y_ptr, idx_ptr,
    POSITIONS, C, H, W, OH, OW,
    stride_xn, stride_xc, stride_xh, stride_xw,
    KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
    PH: tl.constexpr, PW: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr,
    INDEX: tl.constexpr, WIDE: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """y (N, OH, OW, C) contiguous (a channels_last NCHW tensor), idx likewise;
    POSITIONS = N*OH*OW; x (N, C, H, W) by strides."""
    # compare in the input dtype; bfloat16 as float32 in the interpreter, which cannot compare it (exact)
    CT: tl.constexpr = tl.float32 if INTERPRETING and x_ptr.dtype.element_ty == tl.bfloat16 else x_ptr.dtype.element_ty
    start = tl.program_id(0).to(tl.int64) * BLOCK_P
    p = start + tl.arange(0, BLOCK_P)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    p_ok = p < POSITIONS
    c_ok = c < C
    n, r = _split(start, BLOCK_P, OH.to(tl.int64) * OW if WIDE else OH * OW, WIDE)
    q = r // OW
    oh = q.to(tl.int32)
    ow = (r - q * OW).to(tl.int32)
    x_pos = x_ptr + n * stride_xn
    c_off = c.to(tl.int64) * stride_xc
    h0 = oh * SH - PH
    w0 = ow * SW - PW

    best = tl.full([BLOCK_P, BLOCK_C], float("-inf"), CT)
    best_tap = tl.zeros([BLOCK_P, BLOCK_C], dtype=tl.int32)
    if INDEX != "none":
        tap_h = (_first_tap(h0, DH) - h0) // DH
        tap_w = (_first_tap(w0, DW) - w0) // DW
        best_tap += (tap_h * KW + tap_w)[:, None]
    for kh in tl.static_range(KH):
        ih = h0 + kh * DH
        row_ok = p_ok & (ih >= 0) & (ih < H)
        row_ptr = x_pos + ih.to(tl.int64) * stride_xh
        for kw in tl.static_range(KW):
            iw = w0 + kw * DW
            ok = (row_ok & (iw >= 0) & (iw < W))[:, None] & c_ok[None, :]
            ptrs = (row_ptr + iw.to(tl.int64) * stride_xw)[:, None] + c_off[None, :]
            v = tl.load(ptrs, mask=ok, other=float("-inf"))
            best, best_tap = _take(v.to(CT), best, best_tap, kh * KW + kw, INDEX)

    out_ok = p_ok[:, None] & c_ok[None, :]
    offs = p[:, None] * C + c[None, :]
    tl.store(y_ptr + offs, cast_to(best, y_ptr.dtype.element_ty), mask=out_ok)
    if INDEX == "tap":
        tl.store(idx_ptr + offs, best_tap.to(idx_ptr.dtype.element_ty), mask=out_ok)
    elif INDEX == "flat":
        kh_best = best_tap // KW
        ih_best = h0[:, None] + kh_best * DH
        iw_best = w0[:, None] + (best_tap - kh_best * KW) * DW
        tl.store(idx_ptr + offs, ih_best.to(tl.int64) * W + iw_best, mask=out_ok)


@triton.jit
def _window_candidates(i, P: tl.constexpr, S: tl.constexpr, K: tl.constexpr, D: tl.constexpr, j: tl.constexpr):
    """The j-th (in increasing order) output row/column whose window may contain input
    row/column ``i``, and, for a tap index, which tap of that window ``i`` is
    (-1 when ``i`` falls between dilated taps or past the window)."""
    NJ: tl.constexpr = ((K - 1) * D + S) // S
    o = (i + P) // S - (NJ - 1) + j
    d = i + P - o * S  # i's distance from the window's first tap, >= 0
    tap = tl.where((d % D == 0) & (d < (K - 1) * D + 1), d // D, -1)
    return o, tap


@triton.jit
def max_pool2d_nchw_backward_kernel(
    g_ptr, idx_ptr, dx_ptr,
    PLANES, C, H, W, OH, OW,
    stride_gn, stride_gc, stride_gh, stride_gw,
    stride_in, stride_ic, stride_ih, stride_iw,
    KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
    PH: tl.constexpr, PW: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr,
    INDEX: tl.constexpr, WIDE: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
):
    """dx (PLANES = N*C, H, W) contiguous; grad_out and the forward's indices
    (N, C, OH, OW) by strides. INDEX: "tap" or "flat", as the forward stored it."""
    ACC: tl.constexpr = tl.float64 if dx_ptr.dtype.element_ty == tl.float64 else tl.float32
    NH: tl.constexpr = ((KH - 1) * DH + SH) // SH
    NW: tl.constexpr = ((KW - 1) * DW + SW) // SW
    pid = tl.program_id(0)
    tiles_w = tl.cdiv(W, BLOCK_W)
    tiles_h = tl.cdiv(H, BLOCK_H)
    tw = pid % tiles_w
    th = (pid // tiles_w) % tiles_h
    tp = pid // (tiles_w * tiles_h)

    p = tp.to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P)
    n, c = _split(tp.to(tl.int64) * BLOCK_P, BLOCK_P, C, WIDE)
    ih = th * BLOCK_H + tl.arange(0, BLOCK_H)
    iw = tw * BLOCK_W + tl.arange(0, BLOCK_W)
    p_ok = p < PLANES
    ih_ok = ih < H
    iw_ok = iw < W
    c = c.to(tl.int64)
    g_plane = g_ptr + (n * stride_gn + c * stride_gc)
    i_plane = idx_ptr + (n * stride_in + c * stride_ic)
    if INDEX == "flat":
        target = (ih.to(tl.int64) * W)[None, :, None] + iw[None, None, :]

    acc = tl.zeros([BLOCK_P, BLOCK_H, BLOCK_W], dtype=ACC)
    for jh in tl.static_range(NH):
        oh, tap_h = _window_candidates(ih, PH, SH, KH, DH, jh)
        row_ok = p_ok[:, None, None] & (ih_ok & (oh >= 0) & (oh < OH) & (tap_h >= 0))[None, :, None]
        g_row = g_plane[:, None, None] + (oh.to(tl.int64) * stride_gh)[None, :, None]
        i_row = i_plane[:, None, None] + (oh.to(tl.int64) * stride_ih)[None, :, None]
        for jw in tl.static_range(NW):
            ow, tap_w = _window_candidates(iw, PW, SW, KW, DW, jw)
            ok = row_ok & (iw_ok & (ow >= 0) & (ow < OW) & (tap_w >= 0))[None, None, :]
            idx = tl.load(i_row + (ow.to(tl.int64) * stride_iw)[None, None, :], mask=ok, other=-1)
            if INDEX == "tap":
                hit = idx.to(tl.int32) == (tap_h * KW)[None, :, None] + tap_w[None, None, :]
            else:
                hit = idx == target
            g = tl.load(g_row + (ow.to(tl.int64) * stride_gw)[None, None, :], mask=ok, other=0.0)
            acc += tl.where(hit, g.to(ACC), 0.0)

    out_ok = p_ok[:, None, None] & ih_ok[None, :, None] & iw_ok[None, None, :]
    offs = (p[:, None, None] * H + ih[None, :, None]) * W + iw[None, None, :]
    tl.store(dx_ptr + offs, cast_to(acc, dx_ptr.dtype.element_ty), mask=out_ok)


@triton.jit
def max_pool2d_nhwc_backward_kernel(
    g_ptr, idx_ptr, dx_ptr,
    POSITIONS, C, H, W, OH, OW,
    stride_gn, stride_gc, stride_gh, stride_gw,
    stride_in, stride_ic, stride_ih, stride_iw,
    KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
    PH: tl.constexpr, PW: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr,
    INDEX: tl.constexpr, WIDE: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """dx (N, H, W, C) contiguous (channels_last), POSITIONS = N*H*W; grad_out and
    the forward's indices (N, C, OH, OW) by strides."""
    ACC: tl.constexpr = tl.float64 if dx_ptr.dtype.element_ty == tl.float64 else tl.float32
    NH: tl.constexpr = ((KH - 1) * DH + SH) // SH
    NW: tl.constexpr = ((KW - 1) * DW + SW) // SW
    start = tl.program_id(0).to(tl.int64) * BLOCK_P
    p = start + tl.arange(0, BLOCK_P)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    p_ok = p < POSITIONS
    c_ok = c < C
    n, r = _split(start, BLOCK_P, H.to(tl.int64) * W if WIDE else H * W, WIDE)
    q = r // W
    ih = q.to(tl.int32)
    iw = (r - q * W).to(tl.int32)
    g_pos = g_ptr + n * stride_gn
    i_pos = idx_ptr + n * stride_in
    gc_off = c.to(tl.int64) * stride_gc
    ic_off = c.to(tl.int64) * stride_ic
    if INDEX == "flat":
        target = (ih.to(tl.int64) * W + iw)[:, None]

    acc = tl.zeros([BLOCK_P, BLOCK_C], dtype=ACC)
    for jh in tl.static_range(NH):
        oh, tap_h = _window_candidates(ih, PH, SH, KH, DH, jh)
        row_ok = p_ok & (oh >= 0) & (oh < OH) & (tap_h >= 0)
        g_row = g_pos + oh.to(tl.int64) * stride_gh
        i_row = i_pos + oh.to(tl.int64) * stride_ih
        for jw in tl.static_range(NW):
            ow, tap_w = _window_candidates(iw, PW, SW, KW, DW, jw)
            pos_ok = row_ok & (ow >= 0) & (ow < OW) & (tap_w >= 0)
            ok = pos_ok[:, None] & c_ok[None, :]
            idx = tl.load((i_row + ow.to(tl.int64) * stride_iw)[:, None] + ic_off[None, :], mask=ok, other=-1)
            if INDEX == "tap":
                hit = idx.to(tl.int32) == (tap_h * KW + tap_w)[:, None]
            else:
                hit = idx == target
            g = tl.load((g_row + ow.to(tl.int64) * stride_gw)[:, None] + gc_off[None, :], mask=ok, other=0.0)
            acc += tl.where(hit, g.to(ACC), 0.0)

    out_ok = p_ok[:, None] & c_ok[None, :]
    offs = p[:, None] * C + c[None, :]
    tl.store(dx_ptr + offs, cast_to(acc, dx_ptr.dtype.element_ty), mask=out_ok)
