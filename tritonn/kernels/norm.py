"""Normalization kernels. Batch norm today (``batch_norm_*``); LayerNorm joins later.

Batch norm reduces over every axis but the channel one. Each kernel sees its
tensors as 3-D ``(N, C, L)`` views given by strides (``L`` = the flattened spatial
dims), and walks them in 3-D tiles ``(BLOCK_N, BLOCK_C, BLOCK_L)``. The launcher
(``tritonn.ops.batch_norm``) picks the view and the tile so that the fastest axis in
memory is the tile's long axis: ``BLOCK_L`` long rows for NCHW, ``BLOCK_C`` long rows
for channels_last, whose ``(n, l)`` pairs it merges into rows of a ``(N * L, C, 1)``
view. Offsets are int64 before they meet a stride; every access is masked.

Work is split into a grid ``(channel blocks, chunks)``: a chunk is a range of
``CHUNK_N`` rows times ``CHUNK_L`` columns (``NCHUNK_L`` chunks across L), so even a
few channels spread over the whole GPU. Statistics and gradient sums are
reduced per (chunk, channel) into a small ``partial`` buffer, then merged per
channel in a fixed order by a second kernel: no atomics, results are reproducible.

Training forward: ``batch_norm_partial_stats_kernel`` (mean and M2 per chunk),
``batch_norm_finalize_stats_kernel`` (merge, running-stat update),
``batch_norm_forward_kernel`` (normalize, affine, activation). Backward:
``batch_norm_partial_grads_kernel`` (sums of dy and dy * (x - mean) per chunk),
``batch_norm_finalize_grads_kernel`` (merge; grad of weight and bias),
``batch_norm_backward_kernel`` (grad of the input, elementwise).

Everything is computed in float32 (float64 for float64 ``stats``), whatever the
input dtype. Statistics never use E[x^2] - E[x]^2 on raw values: a chunk sums
``x - shift`` (shift = the exact mean of the chunk's first tile), and chunks are
merged with Chan's formula around the merged mean.
"""

import triton
import triton.language as tl

from .activations import activation_grad, apply_activation
from .common import cast_to
from .dropout import dropped


@triton.jit
def _chunk_bounds(chunk, N, L, CHUNK_N, CHUNK_L, NCHUNK_L):
    # int64: merged channels_last rows (N * H * W) can pass 2^31
    n_start = (chunk // NCHUNK_L).to(tl.int64) * CHUNK_N
    l_start = (chunk % NCHUNK_L).to(tl.int64) * CHUNK_L
    n_end = tl.minimum(n_start + CHUNK_N, N)
    l_end = tl.minimum(l_start + CHUNK_L, L)
    return n_start, n_end, l_start, l_end


@triton.jit
def _tile_offsets(stride_n, stride_c, stride_l, offs_n, offs_c, offs_l):
    """int64 offsets of a (BLOCK_N, BLOCK_C, BLOCK_L) tile at the origin."""
    return (
        (offs_n.to(tl.int64) * stride_n)[:, None, None]
        + (offs_c.to(tl.int64) * stride_c)[None, :, None]
        + (offs_l.to(tl.int64) * stride_l)[None, None, :]
    )


@triton.jit
def _channel_params(stats_ptr, w_ptr, b_ptr, offs_c, mask_c, C, HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr):
    """Per channel: mean, invstd, scale = weight * invstd, shift = bias (ACC dtype)."""
    mean = tl.load(stats_ptr + offs_c, mask=mask_c, other=0.0)
    invstd = tl.load(stats_ptr + C + offs_c, mask=mask_c, other=0.0)
    scale = invstd
    if HAS_WEIGHT:
        scale = invstd * tl.load(w_ptr + offs_c, mask=mask_c, other=0.0).to(mean.dtype)
    shift = tl.zeros_like(mean)
    if HAS_BIAS:
        shift = tl.load(b_ptr + offs_c, mask=mask_c, other=0.0).to(mean.dtype)
    return mean, invstd, scale, shift


@triton.jit
def _preact(xmu, scale, shift):
    """z = (x - mean) * weight * invstd + bias; forward and backward use this one
    expression, so the backward of a fused activation sees the forward's z bit for bit."""
    return xmu * scale[None, :, None] + shift[None, :, None]


@triton.jit
def batch_norm_partial_stats_kernel(
    x_ptr, partial_ptr, nbt_ptr,
    N, C, L,
    stride_xn, stride_xc, stride_xl,
    CHUNK_N, CHUNK_L, NCHUNK_L,
    INCREMENT_NBT: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_L: tl.constexpr,
):
    """partial[chunk, 0, c] = mean, partial[chunk, 1, c] = sum of squared deviations,
    over the chunk's (n, l) range. Per lane, the loop sums d = x - shift and d^2 with
    shift = the exact mean of the chunk's first tile (two-pass over that tile), so
    the final M2 = S2 - S1^2 / n only cancels by (chunk mean - shift)^2 / variance.

    ``INCREMENT_NBT``: program (0, 0) adds 1 to the int64 counter at ``nbt_ptr``
    (a module's num_batches_tracked), before the finalize kernel reads it.
    """
    ACC: tl.constexpr = tl.float64 if partial_ptr.dtype.element_ty == tl.float64 else tl.float32
    pid_c = tl.program_id(0)
    chunk = tl.program_id(1)
    n_start, n_end, l_start, l_end = _chunk_bounds(chunk, N, L, CHUNK_N, CHUNK_L, NCHUNK_L)
    offs_n = tl.arange(0, BLOCK_N)
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    offs_l = tl.arange(0, BLOCK_L)
    mask_c = offs_c < C
    mc = mask_c[None, :, None]
    base = x_ptr + _tile_offsets(stride_xn, stride_xc, stride_xl, offs_n, offs_c, offs_l)

    # The shift: the exact mean of the first tile, per channel.
    mask = (offs_n < n_end - n_start)[:, None, None] & mc & (offs_l < l_end - l_start)[None, None, :]
    first = base + n_start.to(tl.int64) * stride_xn + l_start.to(tl.int64) * stride_xl
    x = tl.load(first, mask=mask, other=0.0).to(ACC)
    first_count = tl.minimum(n_end - n_start, BLOCK_N) * tl.minimum(l_end - l_start, BLOCK_L)
    shift = tl.sum(tl.sum(x, axis=2), axis=0) / tl.maximum(first_count, 1).to(ACC)

    s1 = tl.zeros((BLOCK_N, BLOCK_C, BLOCK_L), dtype=ACC)
    s2 = tl.zeros((BLOCK_N, BLOCK_C, BLOCK_L), dtype=ACC)
    for n in range(n_start, n_end, BLOCK_N):
        mask_n = (offs_n < n_end - n)[:, None, None] & mc
        row = base + tl.cast(n, tl.int64) * stride_xn
        for l in range(l_start, l_end, BLOCK_L):
            mask = mask_n & (offs_l < l_end - l)[None, None, :]
            x = tl.load(row + tl.cast(l, tl.int64) * stride_xl, mask=mask, other=0.0).to(ACC)
            d = tl.where(mask, x - shift[None, :, None], 0.0)
            s1 += d
            s2 += d * d
    S1 = tl.sum(tl.sum(s1, axis=2), axis=0)
    S2 = tl.sum(tl.sum(s2, axis=2), axis=0)
    count = tl.maximum((n_end - n_start).to(ACC) * (l_end - l_start).to(ACC), 1.0)
    mean = shift + S1 / count
    m2 = tl.maximum(S2 - S1 * (S1 / count), 0.0)
    out = partial_ptr + chunk.to(tl.int64) * 2 * C + offs_c
    tl.store(out, mean, mask=mask_c)
    tl.store(out + C, m2, mask=mask_c)
    if INCREMENT_NBT:
        is_first = (pid_c == 0) & (chunk == 0)
        tl.store(nbt_ptr, tl.load(nbt_ptr, mask=is_first, other=0) + 1, mask=is_first)


@triton.jit
def _chunk_counts(k, N, L, CHUNK_N, CHUNK_L, NCHUNK_L, ACC: tl.constexpr):
    """Elements in chunks ``k`` (a vector of chunk indices)."""
    rows = tl.minimum(CHUNK_N, N - (k // NCHUNK_L).to(tl.int64) * CHUNK_N)
    cols = tl.minimum(CHUNK_L, L - (k % NCHUNK_L).to(tl.int64) * CHUNK_L)
    return rows.to(ACC) * cols.to(ACC)


@triton.jit
def _rsqrt_rn(v):
    """1 / sqrt(v), correctly rounded steps (tl.rsqrt is approximate on GPUs)."""
    if v.dtype == tl.float64:
        return 1.0 / tl.sqrt(v)
    else:
        return tl.div_rn(tl.full(v.shape, 1.0, tl.float32), tl.sqrt_rn(v))


@triton.jit
def batch_norm_finalize_stats_kernel(
    partial_ptr, stats_ptr, rmean_ptr, rvar_ptr, nbt_ptr,
    N, C, L,
    CHUNK_N, CHUNK_L, NCHUNK_N, NCHUNK_L,
    momentum_hi, momentum_lo, eps_hi, eps_lo,
    BATCH_STATS: tl.constexpr, UPDATE_RUNNING: tl.constexpr, CUMULATIVE: tl.constexpr,
    BLOCK_K: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """stats[0, c] = mean, stats[1, c] = 1 / sqrt(var + eps) (biased variance).

    ``BATCH_STATS``: merge the chunks' (mean, M2) in chunk order (Chan et al.); with
    ``UPDATE_RUNNING`` also ``running = (1 - f) * running + f * batch`` with the
    unbiased variance, f = momentum or, ``CUMULATIVE``, 1 / num_batches_tracked.
    Otherwise the running statistics are the statistics.
    Floats arrive as (hi, lo) float32 pairs so a float64 kernel sees them whole.
    """
    ACC: tl.constexpr = tl.float64 if stats_ptr.dtype.element_ty == tl.float64 else tl.float32
    offs_c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = offs_c < C
    eps = tl.cast(eps_hi, ACC) + tl.cast(eps_lo, ACC)
    if BATCH_STATS:
        num_chunks = NCHUNK_N * NCHUNK_L
        total = tl.cast(N, ACC) * tl.cast(L, ACC)
        offs_k = tl.arange(0, BLOCK_K)
        # Chan's merge, one block of chunks at a time: a block's (count, mean, M2) is
        # exact two-pass over its chunks (mean around the first chunk's mean).
        shift = tl.load(partial_ptr + offs_c, mask=mask_c, other=0.0)
        count = tl.zeros((BLOCK_C,), dtype=ACC)
        mean = shift
        m2 = tl.zeros((BLOCK_C,), dtype=ACC)
        for k0 in range(0, num_chunks, BLOCK_K):
            k = k0 + offs_k
            mask = (k < num_chunks)[:, None] & mask_c[None, :]
            ptrs = partial_ptr + (k.to(tl.int64) * 2 * C)[:, None] + offs_c[None, :]
            m = tl.load(ptrs, mask=mask, other=0.0)
            q = tl.load(ptrs + C, mask=mask, other=0.0)
            w = tl.where(mask, _chunk_counts(k, N, L, CHUNK_N, CHUNK_L, NCHUNK_L, ACC)[:, None], 0.0)
            block_count = tl.sum(w, axis=0)
            block_mean = shift + tl.sum(w * (m - shift[None, :]), axis=0) / tl.maximum(block_count, 1.0)
            dev = m - block_mean[None, :]
            block_m2 = tl.sum(tl.where(mask, q + w * dev * dev, 0.0), axis=0)
            merged = count + block_count
            delta = block_mean - mean
            mean = mean + delta * (block_count / tl.maximum(merged, 1.0))
            m2 = m2 + block_m2 + delta * delta * (count * block_count / tl.maximum(merged, 1.0))
            count = merged
        var = m2 / total
        if UPDATE_RUNNING:
            if CUMULATIVE:
                factor = 1.0 / tl.load(nbt_ptr).to(ACC)
            else:
                factor = tl.cast(momentum_hi, ACC) + tl.cast(momentum_lo, ACC)
            running_mean = tl.load(rmean_ptr + offs_c, mask=mask_c, other=0.0).to(ACC)
            running_var = tl.load(rvar_ptr + offs_c, mask=mask_c, other=0.0).to(ACC)
            unbiased = m2 / tl.maximum(total - 1.0, 1.0)
            running_mean = (1.0 - factor) * running_mean + factor * mean
            running_var = (1.0 - factor) * running_var + factor * unbiased
            tl.store(rmean_ptr + offs_c, cast_to(running_mean, rmean_ptr.dtype.element_ty), mask=mask_c)
            tl.store(rvar_ptr + offs_c, cast_to(running_var, rvar_ptr.dtype.element_ty), mask=mask_c)
    else:
        mean = tl.load(rmean_ptr + offs_c, mask=mask_c, other=0.0).to(ACC)
        var = tl.load(rvar_ptr + offs_c, mask=mask_c, other=1.0).to(ACC)
    invstd = _rsqrt_rn(var + eps)
    tl.store(stats_ptr + offs_c, mean, mask=mask_c)
    tl.store(stats_ptr + C + offs_c, invstd, mask=mask_c)


@triton.jit
def batch_norm_forward_kernel(
    x_ptr, y_ptr, stats_ptr, w_ptr, b_ptr,
    N, C, L,
    stride_xn, stride_xc, stride_xl,
    stride_yn, stride_yc, stride_yl,
    CHUNK_N, CHUNK_L, NCHUNK_L,
    HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_L: tl.constexpr,
):
    """y = act((x - mean) * invstd * weight + bias) over the program's chunk."""
    ACC: tl.constexpr = stats_ptr.dtype.element_ty
    pid_c = tl.program_id(0)
    n_start, n_end, l_start, l_end = _chunk_bounds(tl.program_id(1), N, L, CHUNK_N, CHUNK_L, NCHUNK_L)
    offs_n = tl.arange(0, BLOCK_N)
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    offs_l = tl.arange(0, BLOCK_L)
    mask_c = offs_c < C
    mean, invstd, scale, shift = _channel_params(stats_ptr, w_ptr, b_ptr, offs_c, mask_c, C, HAS_WEIGHT, HAS_BIAS)
    x_base = x_ptr + _tile_offsets(stride_xn, stride_xc, stride_xl, offs_n, offs_c, offs_l)
    y_base = y_ptr + _tile_offsets(stride_yn, stride_yc, stride_yl, offs_n, offs_c, offs_l)
    for n in range(n_start, n_end, BLOCK_N):
        mask_n = (offs_n < n_end - n)[:, None, None] & mask_c[None, :, None]
        x_row = x_base + tl.cast(n, tl.int64) * stride_xn
        y_row = y_base + tl.cast(n, tl.int64) * stride_yn
        for l in range(l_start, l_end, BLOCK_L):
            mask = mask_n & (offs_l < l_end - l)[None, None, :]
            x = tl.load(x_row + tl.cast(l, tl.int64) * stride_xl, mask=mask, other=0.0).to(ACC)
            y = apply_activation(_preact(x - mean[None, :, None], scale, shift), ACTIVATION)
            tl.store(y_row + tl.cast(l, tl.int64) * stride_yl, cast_to(y, y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _grad_tile(dy_row, x_row, l, mask, mean, scale, shift, stride_dyl, stride_xl,
               NEED_XMU: tl.constexpr, ACTIVATION: tl.constexpr, ACC: tl.constexpr):
    """One (N, C, L) tile of the backward's inputs: dz = dy * act'(z) (z recomputed from x;
    dy without activation) and, when NEED_XMU, x - mean (else zeros, never read)."""
    dz = tl.load(dy_row + tl.cast(l, tl.int64) * stride_dyl, mask=mask, other=0.0).to(ACC)
    xmu = tl.zeros_like(dz)
    if NEED_XMU or ACTIVATION != "none":
        x = tl.load(x_row + tl.cast(l, tl.int64) * stride_xl, mask=mask, other=0.0).to(ACC)
        xmu = x - mean[None, :, None]
        if ACTIVATION != "none":
            dz = tl.where(mask, activation_grad(dz, _preact(xmu, scale, shift), ACTIVATION), 0.0)
    return dz, xmu


@triton.jit
def batch_norm_partial_grads_kernel(
    dy_ptr, x_ptr, stats_ptr, w_ptr, b_ptr, partial_ptr,
    N, C, L,
    stride_dyn, stride_dyc, stride_dyl,
    stride_xn, stride_xc, stride_xl,
    CHUNK_N, CHUNK_L, NCHUNK_L,
    NEED_XMU: tl.constexpr, HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_L: tl.constexpr,
):
    """partial[chunk, 0, c] = sum dz, partial[chunk, 1, c] = sum dz * (x - mean) (when
    ``NEED_XMU``), with dz = dy * act'(z) (z recomputed from x) or dy."""
    ACC: tl.constexpr = stats_ptr.dtype.element_ty
    pid_c = tl.program_id(0)
    chunk = tl.program_id(1)
    n_start, n_end, l_start, l_end = _chunk_bounds(chunk, N, L, CHUNK_N, CHUNK_L, NCHUNK_L)
    offs_n = tl.arange(0, BLOCK_N)
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    offs_l = tl.arange(0, BLOCK_L)
    mask_c = offs_c < C
    mean, invstd, scale, shift = _channel_params(stats_ptr, w_ptr, b_ptr, offs_c, mask_c, C, HAS_WEIGHT, HAS_BIAS)
    dy_base = dy_ptr + _tile_offsets(stride_dyn, stride_dyc, stride_dyl, offs_n, offs_c, offs_l)
    x_base = x_ptr + _tile_offsets(stride_xn, stride_xc, stride_xl, offs_n, offs_c, offs_l)
    s1 = tl.zeros((BLOCK_N, BLOCK_C, BLOCK_L), dtype=ACC)
    s2 = tl.zeros((BLOCK_N, BLOCK_C, BLOCK_L), dtype=ACC)
    for n in range(n_start, n_end, BLOCK_N):
        mask_n = (offs_n < n_end - n)[:, None, None] & mask_c[None, :, None]
        dy_row = dy_base + tl.cast(n, tl.int64) * stride_dyn
        x_row = x_base + tl.cast(n, tl.int64) * stride_xn
        for l in range(l_start, l_end, BLOCK_L):
            mask = mask_n & (offs_l < l_end - l)[None, None, :]
            dz, xmu = _grad_tile(dy_row, x_row, l, mask, mean, scale, shift, stride_dyl, stride_xl, NEED_XMU,
                                 ACTIVATION, ACC)
            if NEED_XMU:
                s2 += dz * xmu
            s1 += dz
    out = partial_ptr + chunk.to(tl.int64) * 2 * C + offs_c
    tl.store(out, tl.sum(tl.sum(s1, axis=2), axis=0), mask=mask_c)
    if NEED_XMU:
        tl.store(out + C, tl.sum(tl.sum(s2, axis=2), axis=0), mask=mask_c)


@triton.jit
def batch_norm_finalize_grads_kernel(
    partial_ptr, stats_ptr, sums_ptr, dw_ptr, db_ptr,
    C, NUM_CHUNKS,
    NEED_W: tl.constexpr, NEED_B: tl.constexpr, STORE_SUMS: tl.constexpr,
    BLOCK_K: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """Sum the chunks in chunk order: grad_bias = sum dz, grad_weight = invstd *
    sum dz (x - mean); ``STORE_SUMS`` keeps both sums for the input-gradient kernel."""
    ACC: tl.constexpr = stats_ptr.dtype.element_ty
    offs_c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = offs_c < C
    offs_k = tl.arange(0, BLOCK_K)
    acc1 = tl.zeros((BLOCK_K, BLOCK_C), dtype=ACC)
    acc2 = tl.zeros((BLOCK_K, BLOCK_C), dtype=ACC)
    for k0 in range(0, NUM_CHUNKS, BLOCK_K):
        k = k0 + offs_k
        mask = (k < NUM_CHUNKS)[:, None] & mask_c[None, :]
        ptrs = partial_ptr + (k.to(tl.int64) * 2 * C)[:, None] + offs_c[None, :]
        acc1 += tl.load(ptrs, mask=mask, other=0.0)
        if NEED_W or STORE_SUMS:
            acc2 += tl.load(ptrs + C, mask=mask, other=0.0)
    s1 = tl.sum(acc1, axis=0)
    s2 = tl.sum(acc2, axis=0)
    if NEED_W:
        invstd = tl.load(stats_ptr + C + offs_c, mask=mask_c, other=0.0)
        tl.store(dw_ptr + offs_c, cast_to(s2 * invstd, dw_ptr.dtype.element_ty), mask=mask_c)
    if NEED_B:
        tl.store(db_ptr + offs_c, cast_to(s1, db_ptr.dtype.element_ty), mask=mask_c)
    if STORE_SUMS:
        tl.store(sums_ptr + offs_c, s1, mask=mask_c)
        tl.store(sums_ptr + C + offs_c, s2, mask=mask_c)


@triton.jit
def batch_norm_backward_kernel(
    dy_ptr, x_ptr, dx_ptr, stats_ptr, sums_ptr, w_ptr, b_ptr,
    N, C, L,
    stride_dyn, stride_dyc, stride_dyl,
    stride_xn, stride_xc, stride_xl,
    stride_dxn, stride_dxc, stride_dxl,
    CHUNK_N, CHUNK_L, NCHUNK_L,
    BATCH_STATS: tl.constexpr, HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_L: tl.constexpr,
):
    """grad of the input, dz = dy * act'(z):
    batch statistics: dx = w * invstd * (dz - mean(dz) - (x - mean) * invstd^2 * mean(dz (x - mean)));
    running statistics: dx = w * invstd * dz."""
    ACC: tl.constexpr = stats_ptr.dtype.element_ty
    pid_c = tl.program_id(0)
    n_start, n_end, l_start, l_end = _chunk_bounds(tl.program_id(1), N, L, CHUNK_N, CHUNK_L, NCHUNK_L)
    offs_n = tl.arange(0, BLOCK_N)
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    offs_l = tl.arange(0, BLOCK_L)
    mask_c = offs_c < C
    mean, invstd, scale, shift = _channel_params(stats_ptr, w_ptr, b_ptr, offs_c, mask_c, C, HAS_WEIGHT, HAS_BIAS)
    mean_dz = tl.zeros_like(mean)
    proj = tl.zeros_like(mean)
    if BATCH_STATS:
        inv_count = 1.0 / (tl.cast(N, ACC) * tl.cast(L, ACC))
        mean_dz = tl.load(sums_ptr + offs_c, mask=mask_c, other=0.0) * inv_count
        proj = tl.load(sums_ptr + C + offs_c, mask=mask_c, other=0.0) * (invstd * invstd * inv_count)
    dy_base = dy_ptr + _tile_offsets(stride_dyn, stride_dyc, stride_dyl, offs_n, offs_c, offs_l)
    x_base = x_ptr + _tile_offsets(stride_xn, stride_xc, stride_xl, offs_n, offs_c, offs_l)
    dx_base = dx_ptr + _tile_offsets(stride_dxn, stride_dxc, stride_dxl, offs_n, offs_c, offs_l)
    for n in range(n_start, n_end, BLOCK_N):
        mask_n = (offs_n < n_end - n)[:, None, None] & mask_c[None, :, None]
        dy_row = dy_base + tl.cast(n, tl.int64) * stride_dyn
        x_row = x_base + tl.cast(n, tl.int64) * stride_xn
        dx_row = dx_base + tl.cast(n, tl.int64) * stride_dxn
        for l in range(l_start, l_end, BLOCK_L):
            mask = mask_n & (offs_l < l_end - l)[None, None, :]
            dz, xmu = _grad_tile(dy_row, x_row, l, mask, mean, scale, shift, stride_dyl, stride_xl, BATCH_STATS,
                                 ACTIVATION, ACC)
            if BATCH_STATS:
                dz = dz - mean_dz[None, :, None] - xmu * proj[None, :, None]
            dx = dz * scale[None, :, None]
            tl.store(dx_row + tl.cast(l, tl.int64) * stride_dxl, cast_to(dx, dx_ptr.dtype.element_ty), mask=mask)


# ---------------------------------------------------------------- layer norm
#
# LayerNorm normalizes each row of an (M, N) contiguous view (N = the product of
# normalized_shape). A program walks rows [row_start, row_end) in blocks of BLOCK_M
# rows and each row in chunks of BLOCK_N columns; ONE_PASS (N <= BLOCK_N) keeps the
# whole row in registers. Statistics are two-pass (mean, then the sum of squared
# deviations) in float32 (float64 for float64), saved as ``stats`` (2, M): mean, rstd.
# The backward writes grad_input and, per program, partial sums of dy * xhat and dy
# over its rows into ``partial`` (2, programs, N), which ``column_sum`` reduces in a
# fixed order: deterministic weight and bias gradients, no atomics.
#
# RESIDUAL fuses the transformer's residual add and dropout in front of the norm:
# h = r + dropout(x) (Philox keep = rand(seed, flat offset) >= p, the mask of
# ``kernels.dropout``), written to ``h_ptr``, then
# y = LayerNorm(h). Its backward (x_ptr = h) adds the gradient reaching h directly
# (HAS_DH, pre-norm's residual stream) to the norm's, writes it as the residual's
# gradient and, DROPOUT, the masked and scaled one as the sublayer output's.


@triton.jit
def _ln_rows(pid, M, ROWS_PER_PROGRAM, BLOCK_M: tl.constexpr):
    row_start = pid.to(tl.int64) * ROWS_PER_PROGRAM
    row_end = tl.minimum(row_start + ROWS_PER_PROGRAM, M)
    return row_start, row_end


@triton.jit
def _ln_load(x_ptr, r_ptr, offs, mask, p, scale_hi, scale_lo, seed, RESIDUAL: tl.constexpr,
             DROPOUT: tl.constexpr, ACC: tl.constexpr):
    """The row values normalized: x, or r + dropout(x) with RESIDUAL."""
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(ACC)
    if RESIDUAL:
        if DROPOUT:
            x = dropped(x, seed, offs, p, scale_hi, scale_lo)
        x = tl.load(r_ptr + offs, mask=mask, other=0.0).to(ACC) + x
        # h is stored rounded to the input dtype, and normalized as stored (the backward reads it back)
        x = cast_to(x, x_ptr.dtype.element_ty).to(ACC)
    return x


@triton.jit
def layer_norm_forward_kernel(
    x_ptr, r_ptr, h_ptr, y_ptr, w_ptr, b_ptr, stats_ptr,
    M, N, ROWS_PER_PROGRAM, eps_hi, eps_lo, p, scale_hi, scale_lo, seed,
    HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr, RESIDUAL: tl.constexpr, DROPOUT: tl.constexpr,
    ONE_PASS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    ACC: tl.constexpr = tl.float64 if x_ptr.dtype.element_ty == tl.float64 else tl.float32
    row_start, row_end = _ln_rows(tl.program_id(0), M, ROWS_PER_PROGRAM, BLOCK_M)
    offs_m = tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    eps = tl.cast(eps_hi, ACC) + tl.cast(eps_lo, ACC)
    inv_n = 1.0 / tl.cast(N, ACC)
    for r in range(row_start, row_end, BLOCK_M):
        rows = r + offs_m
        mask_m = rows < row_end
        row_off = (rows.to(tl.int64) * N)[:, None]
        if ONE_PASS:
            mask = mask_m[:, None] & (offs_n < N)[None, :]
            offs = row_off + offs_n[None, :]
            x = _ln_load(x_ptr, r_ptr, offs, mask, p, scale_hi, scale_lo, seed, RESIDUAL, DROPOUT, ACC)
            if RESIDUAL:
                tl.store(h_ptr + offs, cast_to(x, h_ptr.dtype.element_ty), mask=mask)
            mean = tl.sum(x, axis=1) * inv_n
            xmu = tl.where(mask, x - mean[:, None], 0.0)
            rstd = 1.0 / tl.sqrt(tl.sum(xmu * xmu, axis=1) * inv_n + eps)
            y = xmu * rstd[:, None]
            if HAS_WEIGHT:
                y = y * tl.load(w_ptr + offs_n, mask=offs_n < N, other=0.0).to(ACC)[None, :]
            if HAS_BIAS:
                y = y + tl.load(b_ptr + offs_n, mask=offs_n < N, other=0.0).to(ACC)[None, :]
            tl.store(y_ptr + offs, cast_to(y, y_ptr.dtype.element_ty), mask=mask)
        else:
            acc = tl.zeros((BLOCK_M,), dtype=ACC)
            for n in range(0, N, BLOCK_N):
                mask = mask_m[:, None] & (offs_n < N - n)[None, :]
                offs = row_off + (n + offs_n)[None, :]
                x = _ln_load(x_ptr, r_ptr, offs, mask, p, scale_hi, scale_lo, seed, RESIDUAL, DROPOUT, ACC)
                if RESIDUAL:
                    tl.store(h_ptr + offs, cast_to(x, h_ptr.dtype.element_ty), mask=mask)
                acc += tl.sum(x, axis=1)
            mean = acc * inv_n
            src_ptr = x_ptr
            if RESIDUAL:
                src_ptr = h_ptr  # later passes read h back (this program wrote it)
                tl.debug_barrier()
            acc = tl.zeros((BLOCK_M,), dtype=ACC)
            for n in range(0, N, BLOCK_N):
                mask = mask_m[:, None] & (offs_n < N - n)[None, :]
                x = tl.load(src_ptr + row_off + (n + offs_n)[None, :], mask=mask, other=0.0).to(ACC)
                xmu = tl.where(mask, x - mean[:, None], 0.0)
                acc += tl.sum(xmu * xmu, axis=1)
            rstd = 1.0 / tl.sqrt(acc * inv_n + eps)
            for n in range(0, N, BLOCK_N):
                cols = n + offs_n
                mask_n = cols < N
                mask = mask_m[:, None] & mask_n[None, :]
                x = tl.load(src_ptr + row_off + cols[None, :], mask=mask, other=0.0).to(ACC)
                y = (x - mean[:, None]) * rstd[:, None]
                if HAS_WEIGHT:
                    y = y * tl.load(w_ptr + cols, mask=mask_n, other=0.0).to(ACC)[None, :]
                if HAS_BIAS:
                    y = y + tl.load(b_ptr + cols, mask=mask_n, other=0.0).to(ACC)[None, :]
                tl.store(y_ptr + row_off + cols[None, :], cast_to(y, y_ptr.dtype.element_ty), mask=mask)
        tl.store(stats_ptr + rows, mean, mask=mask_m)
        tl.store(stats_ptr + M + rows, rstd, mask=mask_m)


@triton.jit
def layer_norm_backward_kernel(
    dy_ptr, x_ptr, w_ptr, stats_ptr, dx_ptr, partial_ptr, dh_ptr, dd_ptr,
    M, N, ROWS_PER_PROGRAM, NUM_PROGRAMS, p, scale_hi, scale_lo, seed,
    HAS_WEIGHT: tl.constexpr, NEED_X: tl.constexpr, NEED_PARAMS: tl.constexpr, HAS_DH: tl.constexpr,
    DROPOUT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """dx = rstd * (w dy - mean(w dy) - xhat * mean(w dy * xhat)) (+ dh) per row; partial
    sums of dy * xhat (slot 0) and dy (slot 1) over this program's rows (``partial``
    zeroed); DROPOUT: dd = dropout mask of dx, scaled."""
    ACC: tl.constexpr = stats_ptr.dtype.element_ty
    pid = tl.program_id(0)
    row_start, row_end = _ln_rows(pid, M, ROWS_PER_PROGRAM, BLOCK_M)
    offs_m = tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    inv_n = 1.0 / tl.cast(N, ACC)
    pw_base = partial_ptr + pid.to(tl.int64) * N
    pb_base = partial_ptr + (NUM_PROGRAMS + pid).to(tl.int64) * N
    for r in range(row_start, row_end, BLOCK_M):
        rows = r + offs_m
        mask_m = rows < row_end
        row_off = (rows.to(tl.int64) * N)[:, None]
        mean = tl.load(stats_ptr + rows, mask=mask_m, other=0.0)
        rstd = tl.load(stats_ptr + M + rows, mask=mask_m, other=0.0)
        c1 = tl.zeros((BLOCK_M,), dtype=ACC)
        c2 = tl.zeros((BLOCK_M,), dtype=ACC)
        if NEED_X:
            for n in range(0, N, BLOCK_N):
                cols = n + offs_n
                mask_n = cols < N
                mask = mask_m[:, None] & mask_n[None, :]
                x = tl.load(x_ptr + row_off + cols[None, :], mask=mask, other=0.0).to(ACC)
                wdy = tl.load(dy_ptr + row_off + cols[None, :], mask=mask, other=0.0).to(ACC)
                if HAS_WEIGHT:
                    wdy = wdy * tl.load(w_ptr + cols, mask=mask_n, other=0.0).to(ACC)[None, :]
                xhat = tl.where(mask, (x - mean[:, None]) * rstd[:, None], 0.0)
                c1 += tl.sum(wdy * xhat, axis=1)
                c2 += tl.sum(wdy, axis=1)
            c1 = c1 * inv_n
            c2 = c2 * inv_n
        for n in range(0, N, BLOCK_N):
            cols = n + offs_n
            mask_n = cols < N
            mask = mask_m[:, None] & mask_n[None, :]
            offs = row_off + cols[None, :]
            x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(ACC)
            dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(ACC)
            xhat = tl.where(mask, (x - mean[:, None]) * rstd[:, None], 0.0)
            if NEED_X:
                wdy = dy
                if HAS_WEIGHT:
                    wdy = dy * tl.load(w_ptr + cols, mask=mask_n, other=0.0).to(ACC)[None, :]
                dx = (wdy - (xhat * c1[:, None] + c2[:, None])) * rstd[:, None]
                if HAS_DH:
                    dx += tl.load(dh_ptr + offs, mask=mask, other=0.0).to(ACC)
                tl.store(dx_ptr + offs, cast_to(dx, dx_ptr.dtype.element_ty), mask=mask)
                if DROPOUT:
                    tl.store(dd_ptr + offs, cast_to(dropped(dx, seed, offs, p, scale_hi, scale_lo),
                                                    dd_ptr.dtype.element_ty), mask=mask)
            if NEED_PARAMS:
                pw = tl.load(pw_base + cols, mask=mask_n, other=0.0)
                pb = tl.load(pb_base + cols, mask=mask_n, other=0.0)
                tl.store(pw_base + cols, pw + tl.sum(dy * xhat, axis=0), mask=mask_n)
                tl.store(pb_base + cols, pb + tl.sum(dy, axis=0), mask=mask_n)

