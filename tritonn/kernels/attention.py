"""Flash attention: forward, backward and the attention-weights kernel.

Shapes, as the launcher (``ops/attention.py``) presents them, every tensor addressed
by (batch, head, row, column) strides, so transposed/permuted views need no copy:

    q (B, H, L, D), k (B, HK, S, D), v (B, HK, S, DV), o (B, H, L, DV)
    lse, delta (B * H, L) float32/float64, contiguous

Query head ``h`` reads key/value head ``h // G`` (grouped-query attention; G = H / HK).
Grids are flat: program ``pid`` owns row block ``pid % blocks`` of batch x head
``pid // blocks`` (``_split_grid``), so one head's blocks run together and batch x
head is not bound by the 65535 limit of grid axes 1 and 2.

Scores live in the log2 domain: ``s = (q . k) * scale * log2(e) (+ mask * log2(e))``,
a finite mask clamped to stay finite (``_additive_log2``)
(``scale`` is read from a 1-element tensor in the accumulator dtype, float64 for float64),
so the softmax is ``exp2(s - lse)`` with ``lse`` the row's log2-sum-exp2, saved by the
forward. The L x S matrix is never stored: the forward keeps a running max and sum
per row (online softmax); the backward recomputes P tile by tile from ``lse``.

Masks: two slots (``MASK1``, ``MASK2``), each streamed tile by tile through its own
(batch, head, row, column) strides (0 on broadcast axes) and kind:
    0 none, 1 bool keep-where-true (SDPA), 2 bool drop-where-true (MultiheadAttention),
    3 additive float.
Columns at or past a mask's ``N`` (MN1 / MN2) are not masked: that is how
MultiheadAttention's bias_k / zero-attention columns extend a mask without a copy.
``IS_CAUSAL`` keeps key j for query i when j <= i (torch's top-left tril) and skips
the key tiles past the diagonal.

Rows with every key masked: the output is 0 (SDPA's behaviour) and their gradients
are 0, through ``lse = +inf`` (so every P entry is exp2(-inf) = 0); with
``NAN_ROWS`` (MultiheadAttention with need_weights, whose softmax gives NaN) the
output and ``lse`` are NaN instead.

Dropout: keep (i, j) when ``rand(seed + bh * 1000003, i * S + j) >= p`` (Philox,
``tl.rand``); kept probabilities are scaled by 1 / (1 - p). The backward and the
weights kernel regenerate the same bits.

Backward (FA2): ``attention_preprocess_kernel`` writes delta = rowsum(dO * O);
``attention_dkdv_kernel`` owns a key block of one key/value head and loops over the
query blocks of every query head of its group (no atomics, deterministic);
``attention_dq_kernel`` owns a query block and loops over the key blocks.
"""

import triton
import triton.language as tl

from .common import cast_to, dot_operand

LOG2E = tl.constexpr(1.4426950408889634)
SEED_STRIDE = tl.constexpr(1000003)


@triton.jit
def _log2e(dtype: tl.constexpr):
    """log2(e) in ``dtype`` (a bare Python float would become a float32 constant)."""
    return tl.full((), LOG2E, dtype)


@triton.jit
def _additive_log2(add):
    """An additive mask in the log2 units of the scores. A finite mask stays finite:
    torch.finfo(dtype).min, the usual padding mask, would overflow to -inf once
    multiplied by log2(e) and turn a row torch softmaxes uniformly into an empty one."""
    scaled = add * _log2e(add.dtype)
    if add.dtype == tl.float64:
        lowest = tl.full((), -1.7976931348623157e308, tl.float64)
    else:
        lowest = tl.full((), -3.4028234663852886e38, tl.float32)
    return tl.where((scaled == float("-inf")) & (add != float("-inf")), lowest, scaled)


@triton.jit
def _mask_tile(s, mask_ptr, off_b, off_h, rows, cols, L, MN, stride_b, stride_h, stride_m, stride_n,
               KIND: tl.constexpr):
    """Apply one mask slot to a (rows x cols) score tile (``rows``/``cols`` broadcast
    as [:, None] / [None, :] by the caller, or transposed for the backward)."""
    if KIND != 0:
        ptrs = mask_ptr + off_b * stride_b + off_h * stride_h + rows.to(tl.int64) * stride_m \
            + cols.to(tl.int64) * stride_n
        inb = (rows < L) & (cols < MN)
        if KIND == 3:
            add = tl.load(ptrs, mask=inb, other=0.0).to(s.dtype)
            s = s + _additive_log2(add)
        else:
            m = tl.load(ptrs, mask=inb, other=0)
            if KIND == 1:
                s = tl.where((m != 0) | (cols >= MN), s, float("-inf"))
            else:
                s = tl.where((m != 0) & (cols < MN), float("-inf"), s)
    return s


@triton.jit
def _masked_scores(s, rows, cols, L, S, off_b, off_h, mask1_ptr, MN1, stride_m1b, stride_m1h, stride_m1m, stride_m1n,
                   mask2_ptr, MN2, stride_m2b, stride_m2h, stride_m2m, stride_m2n,
                   MASK1: tl.constexpr, MASK2: tl.constexpr, IS_CAUSAL: tl.constexpr):
    """A score tile with both mask slots applied and -inf past the last key and, causal,
    above the diagonal. ``rows``/``cols`` come broadcast ([:, None] / [None, :], or
    transposed in the dK/dV kernel, whose tiles have keys as rows)."""
    s = _mask_tile(s, mask1_ptr, off_b, off_h, rows, cols, L, MN1, stride_m1b, stride_m1h, stride_m1m, stride_m1n,
                   MASK1)
    s = _mask_tile(s, mask2_ptr, off_b, off_h, rows, cols, L, MN2, stride_m2b, stride_m2h, stride_m2m, stride_m2n,
                   MASK2)
    keep = cols < S
    if IS_CAUSAL:
        keep = keep & (cols <= rows)
    return tl.where(keep, s, float("-inf"))


@triton.jit
def _split_grid(length, BLOCK: tl.constexpr):
    """(block along ``length``, batch x head) from a flat 1-D grid, blocks fastest, so
    programs of one head run together (K/V stay in L2) and batch x head can pass
    CUDA's 65535 limit on grid axes 1 and 2."""
    blocks = tl.cdiv(length, BLOCK)
    pid = tl.program_id(0)
    return pid % blocks, pid // blocks


@triton.jit
def _keep(seed, bh, rows, cols, S, dropout_p):
    """Dropout's keep decision for (rows, cols), broadcast by the caller."""
    offsets = rows * S + cols
    return tl.rand(seed.to(tl.int64) + bh.to(tl.int64) * SEED_STRIDE, offsets) >= dropout_p


@triton.jit
def _inv_keep(dropout_p):
    """1 / (1 - p), and 1 (any finite value: nothing is kept) for p = 1."""
    return 1.0 / (1.0 - dropout_p + (dropout_p >= 1.0) * 1.0)


@triton.jit
def attention_forward_kernel(
    q_ptr, k_ptr, v_ptr, o_ptr, lse_ptr, mask1_ptr, mask2_ptr,
    seed, dropout_p, scale_ptr,
    H, G, L, S, D, DV, MN1, MN2,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_om, stride_od,
    stride_m1b, stride_m1h, stride_m1m, stride_m1n,
    stride_m2b, stride_m2h, stride_m2m, stride_m2n,
    MASK1: tl.constexpr, MASK2: tl.constexpr, IS_CAUSAL: tl.constexpr, DROPOUT: tl.constexpr,
    NAN_ROWS: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
):
    ACC: tl.constexpr = tl.float64 if q_ptr.dtype.element_ty == tl.float64 else tl.float32
    pid_m, bh = _split_grid(L, BLOCK_M)
    off_b = (bh // H).to(tl.int64)
    off_h = (bh % H).to(tl.int64)
    off_hk = off_h // G
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    row_ok = rows < L

    q = tl.load(q_ptr + off_b * stride_qb + off_h * stride_qh + rows[:, None].to(tl.int64) * stride_qm
                + offs_d[None, :] * stride_qd, mask=row_ok[:, None] & (offs_d[None, :] < D), other=0.0)
    q = dot_operand(q)
    k_base = k_ptr + off_b * stride_kb + off_hk * stride_kh + offs_d[:, None] * stride_kd
    v_base = v_ptr + off_b * stride_vb + off_hk * stride_vh + offs_dv[None, :] * stride_vd
    scale = tl.load(scale_ptr)
    qk_scale = scale * _log2e(ACC)

    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=ACC)
    l_i = tl.zeros((BLOCK_M,), dtype=ACC)
    acc = tl.zeros((BLOCK_M, BLOCK_DV), dtype=ACC)
    hi = S
    if IS_CAUSAL:
        hi = tl.minimum(S, (pid_m + 1) * BLOCK_M)
    for start_n in range(0, hi, BLOCK_N):
        cols = start_n + offs_n
        col_ok = cols < S
        kt = tl.load(k_base + cols[None, :].to(tl.int64) * stride_kn,
                     mask=(offs_d[:, None] < D) & col_ok[None, :], other=0.0)
        s = tl.dot(q, dot_operand(kt), input_precision=INPUT_PRECISION, out_dtype=ACC) * qk_scale
        s = _masked_scores(s, rows[:, None], cols[None, :], L, S, off_b, off_h,
                           mask1_ptr, MN1, stride_m1b, stride_m1h, stride_m1m, stride_m1n,
                           mask2_ptr, MN2, stride_m2b, stride_m2h, stride_m2m, stride_m2n, MASK1, MASK2, IS_CAUSAL)
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp2(m_i - m_safe)
        p = tl.exp2(s - m_safe[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        if DROPOUT:
            p = tl.where(_keep(seed, bh, rows[:, None], cols[None, :], S, dropout_p), p, 0.0)
        v = tl.load(v_base + cols[:, None].to(tl.int64) * stride_vn,
                    mask=col_ok[:, None] & (offs_dv[None, :] < DV), other=0.0)
        acc = acc * alpha[:, None]
        acc += tl.dot(dot_operand(p.to(v.dtype)), dot_operand(v), input_precision=INPUT_PRECISION,
                      out_dtype=ACC)
        m_i = m_new

    empty_row = l_i == 0.0
    l_div = tl.where(empty_row, 1.0, l_i)
    out = acc / l_div[:, None]
    if DROPOUT:
        out = out * _inv_keep(dropout_p)
    lse = m_i + tl.log2(l_div)
    if NAN_ROWS:
        out = tl.where(empty_row[:, None], float("nan"), out)
        lse = tl.where(empty_row, float("nan"), lse)
    else:
        lse = tl.where(empty_row, float("inf"), lse)
    tl.store(o_ptr + off_b * stride_ob + off_h * stride_oh + rows[:, None].to(tl.int64) * stride_om
             + offs_dv[None, :] * stride_od, cast_to(out, o_ptr.dtype.element_ty),
             mask=row_ok[:, None] & (offs_dv[None, :] < DV))
    tl.store(lse_ptr + bh.to(tl.int64) * L + rows, lse, mask=row_ok)


@triton.jit
def attention_preprocess_kernel(
    o_ptr, do_ptr, delta_ptr, H, L, DV,
    stride_ob, stride_oh, stride_om, stride_od,
    stride_dob, stride_doh, stride_dom, stride_dod,
    BLOCK_M: tl.constexpr, BLOCK_DV: tl.constexpr,
):
    """delta[bh, i] = sum_d dO[i, d] * O[i, d]."""
    ACC: tl.constexpr = tl.float64 if o_ptr.dtype.element_ty == tl.float64 else tl.float32
    pid_m, bh = _split_grid(L, BLOCK_M)
    off_b = (bh // H).to(tl.int64)
    off_h = (bh % H).to(tl.int64)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_dv = tl.arange(0, BLOCK_DV)
    mask = (rows[:, None] < L) & (offs_dv[None, :] < DV)
    rows64 = rows[:, None].to(tl.int64)
    o = tl.load(o_ptr + off_b * stride_ob + off_h * stride_oh + rows64 * stride_om + offs_dv[None, :] * stride_od,
                mask=mask, other=0.0).to(ACC)
    do = tl.load(do_ptr + off_b * stride_dob + off_h * stride_doh + rows64 * stride_dom
                 + offs_dv[None, :] * stride_dod, mask=mask, other=0.0).to(ACC)
    tl.store(delta_ptr + bh.to(tl.int64) * L + rows, tl.sum(o * do, axis=1), mask=rows < L)


@triton.jit
def attention_dkdv_kernel(
    q_ptr, k_ptr, v_ptr, do_ptr, lse_ptr, delta_ptr, dk_ptr, dv_ptr, mask1_ptr, mask2_ptr,
    seed, dropout_p, scale_ptr,
    H, G, L, S, D, DV, MN1, MN2,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_dob, stride_doh, stride_dom, stride_dod,
    stride_dkb, stride_dkh, stride_dkn, stride_dkd,
    stride_dvb, stride_dvh, stride_dvn, stride_dvd,
    stride_m1b, stride_m1h, stride_m1m, stride_m1n,
    stride_m2b, stride_m2h, stride_m2m, stride_m2n,
    MASK1: tl.constexpr, MASK2: tl.constexpr, IS_CAUSAL: tl.constexpr, DROPOUT: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
):
    """dK, dV of one key block of one key/value head: loops over the G query heads
    of its group and their query blocks (transposed tiles: keys are rows here)."""
    ACC: tl.constexpr = tl.float64 if q_ptr.dtype.element_ty == tl.float64 else tl.float32
    HK = H // G
    pid_n, bhk = _split_grid(S, BLOCK_N)
    off_b = (bhk // HK).to(tl.int64)
    off_hk = (bhk % HK).to(tl.int64)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # key positions, the rows of every tile here
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    col_ok = cols < S
    cols64 = cols[:, None].to(tl.int64)
    k = tl.load(k_ptr + off_b * stride_kb + off_hk * stride_kh + cols64 * stride_kn + offs_d[None, :] * stride_kd,
                mask=col_ok[:, None] & (offs_d[None, :] < D), other=0.0)
    v = tl.load(v_ptr + off_b * stride_vb + off_hk * stride_vh + cols64 * stride_vn + offs_dv[None, :] * stride_vd,
                mask=col_ok[:, None] & (offs_dv[None, :] < DV), other=0.0)
    k = dot_operand(k)
    v = dot_operand(v)
    scale = tl.load(scale_ptr)
    qk_scale = scale * _log2e(ACC)
    dk = tl.zeros((BLOCK_N, BLOCK_D), dtype=ACC)
    dv = tl.zeros((BLOCK_N, BLOCK_DV), dtype=ACC)
    lo = 0
    if IS_CAUSAL:
        lo = (pid_n * BLOCK_N // BLOCK_M) * BLOCK_M
    for g in range(0, G):
        off_h = off_hk * G + g
        bh = off_b * H + off_h
        q_base = q_ptr + off_b * stride_qb + off_h * stride_qh + offs_d[None, :] * stride_qd
        do_base = do_ptr + off_b * stride_dob + off_h * stride_doh + offs_dv[None, :] * stride_dod
        for start_m in range(lo, L, BLOCK_M):
            rows = start_m + offs_m
            row_ok = rows < L
            rows64 = rows[:, None].to(tl.int64)
            q = tl.load(q_base + rows64 * stride_qm, mask=row_ok[:, None] & (offs_d[None, :] < D), other=0.0)
            q = dot_operand(q)
            do = tl.load(do_base + rows64 * stride_dom, mask=row_ok[:, None] & (offs_dv[None, :] < DV), other=0.0)
            do = dot_operand(do)
            lse = tl.load(lse_ptr + bh * L + rows, mask=row_ok, other=float("inf"))
            delta = tl.load(delta_ptr + bh * L + rows, mask=row_ok, other=0.0)
            st = tl.dot(k, tl.trans(q), input_precision=INPUT_PRECISION, out_dtype=ACC) * qk_scale
            st = _masked_scores(st, rows[None, :], cols[:, None], L, S, off_b, off_h,
                                mask1_ptr, MN1, stride_m1b, stride_m1h, stride_m1m, stride_m1n,
                                mask2_ptr, MN2, stride_m2b, stride_m2h, stride_m2m, stride_m2n, MASK1, MASK2,
                                IS_CAUSAL)
            pt = tl.exp2(st - lse[None, :])
            dpt = tl.dot(v, tl.trans(do), input_precision=INPUT_PRECISION, out_dtype=ACC)
            if DROPOUT:
                kept = _keep(seed, bh, rows[None, :], cols[:, None], S, dropout_p)
                inv = _inv_keep(dropout_p)
                pdt = tl.where(kept, pt * inv, 0.0)
                dpt = tl.where(kept, dpt * inv, 0.0)
            else:
                pdt = pt
            dv += tl.dot(dot_operand(pdt.to(do.dtype)), do, input_precision=INPUT_PRECISION, out_dtype=ACC)
            dst = pt * (dpt - delta[None, :])
            dk += tl.dot(dot_operand(dst.to(q.dtype)), q, input_precision=INPUT_PRECISION, out_dtype=ACC)
    dk = dk * scale
    tl.store(dk_ptr + off_b * stride_dkb + off_hk * stride_dkh + cols64 * stride_dkn + offs_d[None, :] * stride_dkd,
             cast_to(dk, dk_ptr.dtype.element_ty), mask=col_ok[:, None] & (offs_d[None, :] < D))
    tl.store(dv_ptr + off_b * stride_dvb + off_hk * stride_dvh + cols64 * stride_dvn + offs_dv[None, :] * stride_dvd,
             cast_to(dv, dv_ptr.dtype.element_ty), mask=col_ok[:, None] & (offs_dv[None, :] < DV))


@triton.jit
def attention_dq_kernel(
    q_ptr, k_ptr, v_ptr, do_ptr, lse_ptr, delta_ptr, dq_ptr, mask1_ptr, mask2_ptr,
    seed, dropout_p, scale_ptr,
    H, G, L, S, D, DV, MN1, MN2,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_dob, stride_doh, stride_dom, stride_dod,
    stride_dqb, stride_dqh, stride_dqm, stride_dqd,
    stride_m1b, stride_m1h, stride_m1m, stride_m1n,
    stride_m2b, stride_m2h, stride_m2m, stride_m2n,
    MASK1: tl.constexpr, MASK2: tl.constexpr, IS_CAUSAL: tl.constexpr, DROPOUT: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
):
    """dQ of one query block: loops over the key blocks."""
    ACC: tl.constexpr = tl.float64 if q_ptr.dtype.element_ty == tl.float64 else tl.float32
    pid_m, bh = _split_grid(L, BLOCK_M)
    off_b = (bh // H).to(tl.int64)
    off_h = (bh % H).to(tl.int64)
    off_hk = off_h // G
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    row_ok = rows < L
    rows64 = rows[:, None].to(tl.int64)
    q = tl.load(q_ptr + off_b * stride_qb + off_h * stride_qh + rows64 * stride_qm + offs_d[None, :] * stride_qd,
                mask=row_ok[:, None] & (offs_d[None, :] < D), other=0.0)
    q = dot_operand(q)
    do = tl.load(do_ptr + off_b * stride_dob + off_h * stride_doh + rows64 * stride_dom
                 + offs_dv[None, :] * stride_dod, mask=row_ok[:, None] & (offs_dv[None, :] < DV), other=0.0)
    do = dot_operand(do)
    lse = tl.load(lse_ptr + bh.to(tl.int64) * L + rows, mask=row_ok, other=float("inf"))
    delta = tl.load(delta_ptr + bh.to(tl.int64) * L + rows, mask=row_ok, other=0.0)
    k_base = k_ptr + off_b * stride_kb + off_hk * stride_kh + offs_d[None, :] * stride_kd
    v_base = v_ptr + off_b * stride_vb + off_hk * stride_vh + offs_dv[None, :] * stride_vd
    scale = tl.load(scale_ptr)
    qk_scale = scale * _log2e(ACC)
    dq = tl.zeros((BLOCK_M, BLOCK_D), dtype=ACC)
    hi = S
    if IS_CAUSAL:
        hi = tl.minimum(S, (pid_m + 1) * BLOCK_M)
    for start_n in range(0, hi, BLOCK_N):
        cols = start_n + offs_n
        col_ok = cols < S
        cols64 = cols[:, None].to(tl.int64)
        k = tl.load(k_base + cols64 * stride_kn, mask=col_ok[:, None] & (offs_d[None, :] < D), other=0.0)
        k = dot_operand(k)
        v = tl.load(v_base + cols64 * stride_vn, mask=col_ok[:, None] & (offs_dv[None, :] < DV), other=0.0)
        v = dot_operand(v)
        s = tl.dot(q, tl.trans(k), input_precision=INPUT_PRECISION, out_dtype=ACC) * qk_scale
        s = _masked_scores(s, rows[:, None], cols[None, :], L, S, off_b, off_h,
                           mask1_ptr, MN1, stride_m1b, stride_m1h, stride_m1m, stride_m1n,
                           mask2_ptr, MN2, stride_m2b, stride_m2h, stride_m2m, stride_m2n, MASK1, MASK2, IS_CAUSAL)
        p = tl.exp2(s - lse[:, None])
        dp = tl.dot(do, tl.trans(v), input_precision=INPUT_PRECISION, out_dtype=ACC)
        if DROPOUT:
            kept = _keep(seed, bh, rows[:, None], cols[None, :], S, dropout_p)
            dp = tl.where(kept, dp * _inv_keep(dropout_p), 0.0)
        ds = p * (dp - delta[:, None])
        dq += tl.dot(dot_operand(ds.to(k.dtype)), k, input_precision=INPUT_PRECISION, out_dtype=ACC)
    dq = dq * scale
    tl.store(dq_ptr + off_b * stride_dqb + off_h * stride_dqh + rows64 * stride_dqm + offs_d[None, :] * stride_dqd,
             cast_to(dq, dq_ptr.dtype.element_ty), mask=row_ok[:, None] & (offs_d[None, :] < D))


@triton.jit
def attention_weights_kernel(
    q_ptr, k_ptr, lse_ptr, w_ptr, mask1_ptr, mask2_ptr,
    seed, dropout_p, scale_ptr,
    H, G, L, S, D, MN1, MN2,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_wb, stride_wh, stride_wm, stride_wn,
    stride_m1b, stride_m1h, stride_m1m, stride_m1n,
    stride_m2b, stride_m2h, stride_m2m, stride_m2n,
    MASK1: tl.constexpr, MASK2: tl.constexpr, IS_CAUSAL: tl.constexpr, DROPOUT: tl.constexpr,
    AVERAGE: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """The attention probabilities (after dropout, as MultiheadAttention returns them)
    of one (query block, key block) tile, from the forward's lse: per head, or the
    mean over the H heads (``AVERAGE``: the heads are looped inside the program)."""
    ACC: tl.constexpr = tl.float64 if q_ptr.dtype.element_ty == tl.float64 else tl.float32
    n_blocks = tl.cdiv(S, BLOCK_N)
    tiles = tl.cdiv(L, BLOCK_M) * n_blocks
    pid = tl.program_id(0)  # flat: (batch x head) can pass CUDA's 65535 limit on axes 1 and 2
    pid_z = pid // tiles
    pid_m = (pid % tiles) // n_blocks
    pid_n = pid % n_blocks
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    row_ok = rows < L
    col_ok = cols < S
    scale = tl.load(scale_ptr)
    qk_scale = scale * _log2e(ACC)
    if AVERAGE:
        off_b = pid_z.to(tl.int64)
        h_lo = 0
        h_hi = H
    else:
        off_b = (pid_z // H).to(tl.int64)
        h_lo = pid_z % H
        h_hi = h_lo + 1
    total = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    for h in range(h_lo, h_hi):
        off_h = off_b * 0 + h  # int64
        bh = off_b * H + off_h
        q = tl.load(q_ptr + off_b * stride_qb + off_h * stride_qh + rows[:, None].to(tl.int64) * stride_qm
                    + offs_d[None, :] * stride_qd, mask=row_ok[:, None] & (offs_d[None, :] < D), other=0.0)
        kt = tl.load(k_ptr + off_b * stride_kb + (off_h // G) * stride_kh + cols[None, :].to(tl.int64) * stride_kn
                     + offs_d[:, None] * stride_kd, mask=(offs_d[:, None] < D) & col_ok[None, :], other=0.0)
        lse = tl.load(lse_ptr + bh * L + rows, mask=row_ok, other=float("inf"))
        s = tl.dot(dot_operand(q), dot_operand(kt), input_precision=INPUT_PRECISION, out_dtype=ACC) * qk_scale
        s = _masked_scores(s, rows[:, None], cols[None, :], L, S, off_b, off_h,
                           mask1_ptr, MN1, stride_m1b, stride_m1h, stride_m1m, stride_m1n,
                           mask2_ptr, MN2, stride_m2b, stride_m2h, stride_m2m, stride_m2n, MASK1, MASK2, IS_CAUSAL)
        p = tl.exp2(s - lse[:, None])
        if DROPOUT:
            kept = _keep(seed, bh, rows[:, None], cols[None, :], S, dropout_p)
            p = tl.where(kept, p * _inv_keep(dropout_p), 0.0)
        if AVERAGE:
            total += p
        else:
            total = p
    if AVERAGE:
        total = total / H
        off_h = 0
    else:
        off_h = (pid_z % H).to(tl.int64)
    tl.store(w_ptr + off_b * stride_wb + off_h * stride_wh + rows[:, None].to(tl.int64) * stride_wm
             + cols[None, :].to(tl.int64) * stride_wn, cast_to(total, w_ptr.dtype.element_ty),
             mask=row_ok[:, None] & col_ok[None, :])
