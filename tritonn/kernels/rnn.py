"""LSTM recurrence kernels: the time loop of one layer and direction, forward and backward.

The input projection ``x_t W_ih^T + b_ih`` of every time step is one GEMM before the
forward kernel runs (``ops/lstm.py``); its result G (rows, 4H, float32 or float64)
is read here and overwritten with the activated gates (i, f, g, o), which the
backward needs. Rows are the (time, batch) pairs of the sequence, addressed as
``row(t, b) = t * ST + b * SB`` (time-major or batch-first dense input) or
``offs[t] + b`` for a packed sequence, whose valid rows at time t are the first
``bs[t]`` (sequences sorted by decreasing length). Everything the kernels store is
indexed by those rows, so the GEMMs that follow (weight gradients over all time
steps, input gradient) see plain matrices.

One program owns BLOCK_B batch rows and walks all time steps itself (programs never
wait on each other). A step reads the whole previous state of its rows, so the
state goes through global memory (HP: h_{t-1} per row, in the input dtype; C: the
cell state, float32 for fp16/bf16) with a block barrier between the phases of a step.

Forward step (rows b valid at t):
    HP[row] = h_{t-1}  (the previous step's output, or h_0 at each row's first step)
    gates   = G[row] + HP[row] @ W_hh^T + b_hh   (tl.dot over tiles of H)
    i, f, o = sigmoid(.), g = tanh(.),  c = f c_{t-1} + i g,  h = o tanh(c)
    y[row]  = h, or with a projection HS[row] = h, y[row] = h @ W_hr^T
    h_n, c_n written at each row's last step (at the row's original index ``perm[b]``).

Backward step, in reverse processing order:
    dr  = dy[row] + (dh from the step after, or dh_n)     (DR[row] with a projection)
    dh  = dr, or dr @ W_hr with a projection
    dc  = (dc from the step after, or dc_n) + dh o (1 - tanh(c)^2)
    dz  = gate pre-activation grads -> DG[row] (input dtype)
    dh_{t-1} = DG[row] @ W_hh (scratch DHS, or dh_0 at the row's first step), dc_{t-1} = dc f.

tanh is built from exp (no libdevice under the interpreter), see ``_tanh``.
"""

import triton
import triton.language as tl

from .common import cast_to, dot_operand


@triton.jit
def _tanh(x):
    """tanh with a small relative error near 0 (``2 sigmoid(2x) - 1`` has an absolute
    error of a rounding unit there, which a projection of small h then magnifies):
    (1 - e) / (1 + e) with e = exp(-2|x|), and its Taylor series up to x^9 below
    |x| = 1/4 in float32 (truncation error < 2^-26 relative there)."""
    ax = tl.abs(x)
    e = tl.exp(-2.0 * ax)
    t = (1.0 - e) / (1.0 + e)
    if x.dtype != tl.float64:
        x2 = x * x
        series = ax * (1.0 + x2 * (-0.3333333333333333 + x2 * (0.13333333333333333
                                                              + x2 * (-0.05396825396825397
                                                                      + x2 * 0.021869488536155203))))
        t = tl.where(ax < 0.25, series, t)
    return tl.where(x < 0, -t, t)


@triton.jit
def _rows(t, offs_b, in_b, L, N, ST, SB, offs_ptr, bs_ptr, PACKED: tl.constexpr):
    """Row index (int64) of (t, b) and whether (t, b) is a real step; t may be out of [0, L)."""
    tv = offs_b * 0 + t
    inside = (tv >= 0) & (tv < L)
    tc = tl.minimum(tl.maximum(t, 0), L - 1)
    if PACKED:
        start = tl.load(offs_ptr + tc).to(tl.int64)
        count = tl.load(bs_ptr + tc).to(tl.int32)
        row = start + offs_b.to(tl.int64)
        valid = in_b & (offs_b < count) & inside
    else:
        row = tc.to(tl.int64) * ST + offs_b.to(tl.int64) * SB
        valid = in_b & inside
    return row, valid


@triton.jit
def _dot(acc, a, b, INPUT_PRECISION: tl.constexpr):
    return tl.dot(dot_operand(a), dot_operand(b), acc, input_precision=INPUT_PRECISION, out_dtype=acc.dtype)


@triton.jit
def lstm_forward_kernel(
    g_ptr, c_ptr, hp_ptr, hs_ptr, y_ptr,
    whh_ptr, bhh_ptr, whr_ptr,
    h0_ptr, c0_ptr, hn_ptr, cn_ptr,
    perm_ptr, offs_ptr, bs_ptr,
    N, L, H, R,
    ST, SB,
    stride_g, stride_c, stride_hp, stride_hs, stride_y,
    stride_whh, stride_whr,
    stride_h0, stride_c0, stride_hn, stride_cn,
    REVERSE: tl.constexpr, PACKED: tl.constexpr, PERM: tl.constexpr,
    HAS_BIAS: tl.constexpr, PROJ: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
):
    ACC: tl.constexpr = tl.float64 if g_ptr.dtype.element_ty == tl.float64 else tl.float32
    offs_b = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    in_b = offs_b < N
    if PERM:
        orig = tl.load(perm_ptr + offs_b, mask=in_b, other=0).to(tl.int64)
    else:
        orig = offs_b.to(tl.int64)
    ar_h = tl.arange(0, BLOCK_H)
    ar_k = tl.arange(0, BLOCK_K)
    for s in range(0, L):
        if REVERSE:
            t = L - 1 - s
            t_prev = t + 1
            t_next = t - 1
        else:
            t = s
            t_prev = t - 1
            t_next = t + 1
        row, valid = _rows(t, offs_b, in_b, L, N, ST, SB, offs_ptr, bs_ptr, PACKED)
        rowp, validp = _rows(t_prev, offs_b, in_b, L, N, ST, SB, offs_ptr, bs_ptr, PACKED)
        _, validn = _rows(t_next, offs_b, in_b, L, N, ST, SB, offs_ptr, bs_ptr, PACKED)
        first = valid & (validp == 0)
        last = valid & (validn == 0)

        # 1. the previous state of each row -> HP[row]
        for k in range(0, R, BLOCK_K):
            cols = k + ar_k
            mk = cols < R
            h_y = tl.load(y_ptr + rowp[:, None] * stride_y + cols[None, :],
                          mask=(valid & validp)[:, None] & mk[None, :], other=0.0)
            h_0 = tl.load(h0_ptr + orig[:, None] * stride_h0 + cols[None, :],
                          mask=first[:, None] & mk[None, :], other=0.0)
            h_prev = tl.where(validp[:, None], h_y, h_0.to(h_y.dtype))
            tl.store(hp_ptr + row[:, None] * stride_hp + cols[None, :], h_prev, mask=valid[:, None] & mk[None, :])
        tl.debug_barrier()

        # 2. gates, cell and hidden state, one tile of hidden units at a time
        for j in range(0, H, BLOCK_H):
            colh = j + ar_h
            mh = colh < H
            m2 = valid[:, None] & mh[None, :]
            g_tile = g_ptr + row[:, None] * stride_g + colh[None, :]
            acc_i = tl.load(g_tile, mask=m2, other=0.0).to(ACC)
            acc_f = tl.load(g_tile + H, mask=m2, other=0.0).to(ACC)
            acc_g = tl.load(g_tile + 2 * H, mask=m2, other=0.0).to(ACC)
            acc_o = tl.load(g_tile + 3 * H, mask=m2, other=0.0).to(ACC)
            for k in range(0, R, BLOCK_K):
                colk = k + ar_k
                mk = colk < R
                hk = tl.load(hp_ptr + row[:, None] * stride_hp + colk[None, :],
                             mask=valid[:, None] & mk[None, :], other=0.0)
                # w[k, h] = W_hh[q H + h, k]
                w_tile = whh_ptr + colh[None, :].to(tl.int64) * stride_whh + colk[:, None]
                wm = mk[:, None] & mh[None, :]
                acc_i = _dot(acc_i, hk, tl.load(w_tile, mask=wm, other=0.0), INPUT_PRECISION)
                acc_f = _dot(acc_f, hk, tl.load(w_tile + H * stride_whh, mask=wm, other=0.0), INPUT_PRECISION)
                acc_g = _dot(acc_g, hk, tl.load(w_tile + 2 * H * stride_whh, mask=wm, other=0.0), INPUT_PRECISION)
                acc_o = _dot(acc_o, hk, tl.load(w_tile + 3 * H * stride_whh, mask=wm, other=0.0), INPUT_PRECISION)
            if HAS_BIAS:
                acc_i += tl.load(bhh_ptr + colh, mask=mh, other=0.0).to(ACC)[None, :]
                acc_f += tl.load(bhh_ptr + H + colh, mask=mh, other=0.0).to(ACC)[None, :]
                acc_g += tl.load(bhh_ptr + 2 * H + colh, mask=mh, other=0.0).to(ACC)[None, :]
                acc_o += tl.load(bhh_ptr + 3 * H + colh, mask=mh, other=0.0).to(ACC)[None, :]
            gi = tl.sigmoid(acc_i)
            gf = tl.sigmoid(acc_f)
            gg = _tanh(acc_g)
            go = tl.sigmoid(acc_o)
            c_c = tl.load(c_ptr + rowp[:, None] * stride_c + colh[None, :],
                          mask=(valid & validp)[:, None] & mh[None, :], other=0.0).to(ACC)
            c_0 = tl.load(c0_ptr + orig[:, None] * stride_c0 + colh[None, :],
                          mask=first[:, None] & mh[None, :], other=0.0).to(ACC)
            c_prev = tl.where(validp[:, None], c_c, c_0)
            c = gf * c_prev + gi * gg
            h = go * _tanh(c)
            tl.store(g_tile, gi, mask=m2)
            tl.store(g_tile + H, gf, mask=m2)
            tl.store(g_tile + 2 * H, gg, mask=m2)
            tl.store(g_tile + 3 * H, go, mask=m2)
            tl.store(c_ptr + row[:, None] * stride_c + colh[None, :], c, mask=m2)
            ml = last[:, None] & mh[None, :]
            tl.store(cn_ptr + orig[:, None] * stride_cn + colh[None, :], cast_to(c, cn_ptr.dtype.element_ty), mask=ml)
            if PROJ:
                tl.store(hs_ptr + row[:, None] * stride_hs + colh[None, :],
                         cast_to(h, hs_ptr.dtype.element_ty), mask=m2)
            else:
                tl.store(y_ptr + row[:, None] * stride_y + colh[None, :], cast_to(h, y_ptr.dtype.element_ty), mask=m2)
                tl.store(hn_ptr + orig[:, None] * stride_hn + colh[None, :],
                         cast_to(h, hn_ptr.dtype.element_ty), mask=ml)
        tl.debug_barrier()

        # 3. the projection r = h W_hr^T (R outputs from H hidden units)
        if PROJ:
            for p in range(0, R, BLOCK_H):
                colp = p + ar_h
                mp = colp < R
                acc = tl.zeros((BLOCK_B, BLOCK_H), dtype=ACC)
                for k in range(0, H, BLOCK_K):
                    colk = k + ar_k
                    mk = colk < H
                    hk = tl.load(hs_ptr + row[:, None] * stride_hs + colk[None, :],
                                 mask=valid[:, None] & mk[None, :], other=0.0)
                    w = tl.load(whr_ptr + colp[None, :].to(tl.int64) * stride_whr + colk[:, None],
                                mask=mk[:, None] & mp[None, :], other=0.0)
                    acc = _dot(acc, hk, w, INPUT_PRECISION)
                tl.store(y_ptr + row[:, None] * stride_y + colp[None, :], cast_to(acc, y_ptr.dtype.element_ty),
                         mask=valid[:, None] & mp[None, :])
                tl.store(hn_ptr + orig[:, None] * stride_hn + colp[None, :], cast_to(acc, hn_ptr.dtype.element_ty),
                         mask=last[:, None] & mp[None, :])
            tl.debug_barrier()


@triton.jit
def lstm_backward_kernel(
    g_ptr, c_ptr, dg_ptr, dy_ptr, dr_ptr,
    whh_ptr, whr_ptr,
    c0_ptr, dhn_ptr, dcn_ptr, dh0_ptr, dc0_ptr, dhs_ptr, dcs_ptr,
    perm_ptr, offs_ptr, bs_ptr,
    N, L, H, R,
    ST, SB,
    stride_g, stride_c, stride_dg, stride_dy, stride_dr,
    stride_whh, stride_whr,
    stride_c0, stride_dhn, stride_dcn, stride_dh0, stride_dc0, stride_dhs, stride_dcs,
    REVERSE: tl.constexpr, PACKED: tl.constexpr, PERM: tl.constexpr,
    PROJ: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
):
    ACC: tl.constexpr = tl.float64 if g_ptr.dtype.element_ty == tl.float64 else tl.float32
    offs_b = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    in_b = offs_b < N
    if PERM:
        orig = tl.load(perm_ptr + offs_b, mask=in_b, other=0).to(tl.int64)
    else:
        orig = offs_b.to(tl.int64)
    lane = offs_b.to(tl.int64)
    ar_h = tl.arange(0, BLOCK_H)
    ar_k = tl.arange(0, BLOCK_K)
    for s in range(0, L):
        if REVERSE:
            t = s
            t_prev = t + 1
            t_next = t - 1
        else:
            t = L - 1 - s
            t_prev = t - 1
            t_next = t + 1
        row, valid = _rows(t, offs_b, in_b, L, N, ST, SB, offs_ptr, bs_ptr, PACKED)
        rowp, validp = _rows(t_prev, offs_b, in_b, L, N, ST, SB, offs_ptr, bs_ptr, PACKED)
        _, validn = _rows(t_next, offs_b, in_b, L, N, ST, SB, offs_ptr, bs_ptr, PACKED)
        first = valid & (validp == 0)
        last = valid & (validn == 0)
        cont = valid & validn

        # 1. with a projection: dr = dy + dh from the next step (or dh_n) -> DR[row]
        if PROJ:
            for p in range(0, R, BLOCK_H):
                colp = p + ar_h
                mp = colp < R
                m2 = valid[:, None] & mp[None, :]
                dr = tl.load(dy_ptr + row[:, None] * stride_dy + colp[None, :], mask=m2, other=0.0).to(ACC)
                dr += tl.load(dhs_ptr + lane[:, None] * stride_dhs + colp[None, :],
                              mask=cont[:, None] & mp[None, :], other=0.0).to(ACC)
                dr += tl.load(dhn_ptr + orig[:, None] * stride_dhn + colp[None, :],
                              mask=last[:, None] & mp[None, :], other=0.0).to(ACC)
                tl.store(dr_ptr + row[:, None] * stride_dr + colp[None, :], cast_to(dr, dr_ptr.dtype.element_ty),
                         mask=m2)
            tl.debug_barrier()

        # 2. gate gradients, one tile of hidden units at a time
        for j in range(0, H, BLOCK_H):
            colh = j + ar_h
            mh = colh < H
            m2 = valid[:, None] & mh[None, :]
            if PROJ:
                dh = tl.zeros((BLOCK_B, BLOCK_H), dtype=ACC)
                for k in range(0, R, BLOCK_K):
                    colk = k + ar_k
                    mk = colk < R
                    drk = tl.load(dr_ptr + row[:, None] * stride_dr + colk[None, :],
                                  mask=valid[:, None] & mk[None, :], other=0.0)
                    w = tl.load(whr_ptr + colk[:, None].to(tl.int64) * stride_whr + colh[None, :],
                                mask=mk[:, None] & mh[None, :], other=0.0)
                    dh = _dot(dh, drk, w, INPUT_PRECISION)
            else:
                dh = tl.load(dy_ptr + row[:, None] * stride_dy + colh[None, :], mask=m2, other=0.0).to(ACC)
                dh += tl.load(dhs_ptr + lane[:, None] * stride_dhs + colh[None, :],
                              mask=cont[:, None] & mh[None, :], other=0.0).to(ACC)
                dh += tl.load(dhn_ptr + orig[:, None] * stride_dhn + colh[None, :],
                              mask=last[:, None] & mh[None, :], other=0.0).to(ACC)
            g_tile = g_ptr + row[:, None] * stride_g + colh[None, :]
            gi = tl.load(g_tile, mask=m2, other=0.0).to(ACC)
            gf = tl.load(g_tile + H, mask=m2, other=0.0).to(ACC)
            gg = tl.load(g_tile + 2 * H, mask=m2, other=0.0).to(ACC)
            go = tl.load(g_tile + 3 * H, mask=m2, other=0.0).to(ACC)
            c = tl.load(c_ptr + row[:, None] * stride_c + colh[None, :], mask=m2, other=0.0).to(ACC)
            c_c = tl.load(c_ptr + rowp[:, None] * stride_c + colh[None, :],
                          mask=(valid & validp)[:, None] & mh[None, :], other=0.0).to(ACC)
            c_0 = tl.load(c0_ptr + orig[:, None] * stride_c0 + colh[None, :],
                          mask=first[:, None] & mh[None, :], other=0.0).to(ACC)
            c_prev = tl.where(validp[:, None], c_c, c_0)
            dc = tl.load(dcs_ptr + lane[:, None] * stride_dcs + colh[None, :],
                         mask=cont[:, None] & mh[None, :], other=0.0).to(ACC)
            dc += tl.load(dcn_ptr + orig[:, None] * stride_dcn + colh[None, :],
                          mask=last[:, None] & mh[None, :], other=0.0).to(ACC)
            tc = _tanh(c)
            dc += dh * go * (1.0 - tc * tc)
            dzo = dh * tc * go * (1.0 - go)
            dzi = dc * gg * gi * (1.0 - gi)
            dzg = dc * gi * (1.0 - gg * gg)
            dzf = dc * c_prev * gf * (1.0 - gf)
            dc_prev = dc * gf
            dg_tile = dg_ptr + row[:, None] * stride_dg + colh[None, :]
            DT: tl.constexpr = dg_ptr.dtype.element_ty
            tl.store(dg_tile, cast_to(dzi, DT), mask=m2)
            tl.store(dg_tile + H, cast_to(dzf, DT), mask=m2)
            tl.store(dg_tile + 2 * H, cast_to(dzg, DT), mask=m2)
            tl.store(dg_tile + 3 * H, cast_to(dzo, DT), mask=m2)
            tl.store(dcs_ptr + lane[:, None] * stride_dcs + colh[None, :], dc_prev, mask=m2)
            tl.store(dc0_ptr + orig[:, None] * stride_dc0 + colh[None, :], cast_to(dc_prev, dc0_ptr.dtype.element_ty),
                     mask=first[:, None] & mh[None, :])
        tl.debug_barrier()

        # 3. dh_{t-1} = dz @ W_hh (K = 4H) -> DHS (next step), or dh_0 at the row's first step
        for p in range(0, R, BLOCK_H):
            colp = p + ar_h
            mp = colp < R
            acc = tl.zeros((BLOCK_B, BLOCK_H), dtype=ACC)
            for k in range(0, 4 * H, BLOCK_K):
                colk = k + ar_k
                mk = colk < 4 * H
                dz = tl.load(dg_ptr + row[:, None] * stride_dg + colk[None, :],
                             mask=valid[:, None] & mk[None, :], other=0.0)
                w = tl.load(whh_ptr + colk[:, None].to(tl.int64) * stride_whh + colp[None, :],
                            mask=mk[:, None] & mp[None, :], other=0.0)
                acc = _dot(acc, dz, w, INPUT_PRECISION)
            tl.store(dhs_ptr + lane[:, None] * stride_dhs + colp[None, :], acc, mask=valid[:, None] & mp[None, :])
            tl.store(dh0_ptr + orig[:, None] * stride_dh0 + colp[None, :], cast_to(acc, dh0_ptr.dtype.element_ty),
                     mask=first[:, None] & mp[None, :])
        tl.debug_barrier()

