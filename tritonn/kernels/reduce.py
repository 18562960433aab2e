"""Reductions that are not part of a GEMM.

``column_sum_kernel``: out[n] = sum_m x[m, n] for an M x N matrix given by strides,
accumulated in float32 (float64 for float64). Program pid handles BLOCK_N columns and walks all M rows in
BLOCK_M steps, so the sum is deterministic. Used for a bias gradient when no
weight-gradient GEMM runs to produce it (frozen weight, trainable bias).
"""

import triton
import triton.language as tl

from .common import cast_to


@triton.jit
def column_sum_kernel(
    x_ptr, out_ptr,
    M, N,
    stride_xm, stride_xn,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    ACC: tl.constexpr = tl.float64 if x_ptr.dtype.element_ty == tl.float64 else tl.float32
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_n < N
    offs_m = tl.arange(0, BLOCK_M)
    ptrs = x_ptr + offs_m[:, None].to(tl.int64) * stride_xm + offs_n[None, :].to(tl.int64) * stride_xn
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    for m in range(0, tl.cdiv(M, BLOCK_M)):
        mask = (offs_m[:, None] < M - m * BLOCK_M) & mask_n[None, :]
        acc += tl.load(ptrs, mask=mask, other=0.0).to(ACC)
        ptrs += BLOCK_M * stride_xm
    tl.store(out_ptr + offs_n, cast_to(tl.sum(acc, axis=0), out_ptr.dtype.element_ty), mask=mask_n)
