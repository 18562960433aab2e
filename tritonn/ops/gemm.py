"""Launchers for the GEMM core and the small kernels around it. They take torch
tensors, check nothing the callers have not checked, allocate outputs, and launch.
Every op that needs a matrix product (Linear, and later Conv2d's 1x1 path, LSTM,
attention projections) calls :func:`gemm`."""

from __future__ import annotations

import torch
import triton

from .. import runtime
from ..kernels.activations import activation_backward_kernel
from ..kernels.gemm import gemm_kernel
from ..kernels.reduce import column_sum_kernel
from .dropout import dropout_scalars


ACTIVATION_BACKWARD_BLOCKS = {"BLOCK_M": 32, "BLOCK_N": 128}
COLUMN_SUM_BLOCKS = {"BLOCK_M": 64, "BLOCK_N": 64}


def _input_precision(dtype: torch.dtype, device: torch.device, tf32: bool | None = None) -> str:
    """The tl.dot precision: TF32 for float32 on GPU when torch's switch (matmul by
    default, cuDNN's for convolutions) allows it."""
    tf32 = runtime.tf32_enabled() if tf32 is None else tf32
    return "tf32" if dtype == torch.float32 and device.type == "cuda" and tf32 else "ieee"


def _batched(t: torch.Tensor) -> tuple[torch.Tensor, int]:
    """View a 2-D operand as batch 1; a 2-D operand next to a batched one is shared
    by every batch through a zero batch stride."""
    if t.dim() == 2:
        return t.unsqueeze(0), 0
    return t, t.stride(0)


def gemm(
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    activation: str = "none",
    out_dtype: torch.dtype | None = None,
    store_preact: bool = False,
    row_sum: bool = False,
    out: torch.Tensor | None = None,
    preact_out: torch.Tensor | None = None,
    dropout: tuple[float, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """``act(a @ b + bias)`` with a (M, K) or (B, M, K) and b (K, N) or (B, K, N), any strides.

    Returns ``(c, preact, rowsum)``: c is contiguous (B?, M, N), or ``out`` (any
    strides) when given; ``preact`` (when ``store_preact``) is ``a @ b + bias`` before
    the activation, in ``preact_out`` when given; ``rowsum`` (when ``row_sum``) is
    ``a.sum(-1)``, shaped (B?, M). bias is (N,) or (B, N). ``dropout`` = (p, seed):
    dropout after the activation, the mask of ``functional.dropout`` on a contiguous c.
    """
    batched = a.dim() == 3 or b.dim() == 3
    a3, stride_ab = _batched(a)
    b3, stride_bb = _batched(b)
    batch = max(a3.shape[0], b3.shape[0])
    M, K = a3.shape[1], a3.shape[2]
    N = b3.shape[2]
    out_dtype = out_dtype or a.dtype
    device = a.device
    c = out.view(batch, M, N) if out is not None else runtime.empty((batch, M, N), dtype=out_dtype, device=device)
    preact = None
    if store_preact:
        preact = preact_out.view(batch, M, N) if preact_out is not None else \
            runtime.empty((batch, M, N), dtype=out_dtype, device=device)
    rowsum = runtime.empty((batch, M), dtype=out_dtype, device=device) if row_sum else None
    stride_biasb = bias.stride(0) if bias is not None and bias.dim() == 2 else 0
    stride_biasn = bias.stride(-1) if bias is not None else 0
    if M > 0 and N > 0 and batch > 0:
        grid = lambda meta: (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]), batch)  # noqa: E731
        gemm_kernel[grid](
            a3, b3, c,
            bias if bias is not None else c,
            preact if preact is not None else c,
            rowsum if rowsum is not None else c,
            M, N, K,
            stride_ab, a3.stride(1), a3.stride(2),
            stride_bb, b3.stride(1), b3.stride(2),
            c.stride(0), c.stride(1), c.stride(2),
            stride_biasb, stride_biasn,
            rowsum.stride(0) if rowsum is not None else 0,
            *_dropout_args(dropout),
            HAS_BIAS=bias is not None,
            ACTIVATION=activation,
            STORE_PREACT=store_preact,
            ROW_SUM=row_sum,
            DROPOUT=dropout is not None,
            INPUT_PRECISION=_input_precision(a.dtype, device),
        )
    if out is not None:
        c = out
    elif not batched:
        c = c.squeeze(0)
    if preact_out is not None:
        preact = preact_out
    elif preact is not None and not batched:
        preact = preact.squeeze(0)
    if rowsum is not None and not batched:
        rowsum = rowsum.squeeze(0)
    return c, preact, rowsum


def _dropout_args(dropout: tuple[float, int] | None) -> tuple:
    """(p, scale_hi, scale_lo, seed) for a kernel's fused dropout (placeholders without)."""
    if dropout is None:
        return (0.0, 1.0, 0.0, 0)
    p, seed = dropout
    return (*dropout_scalars(p), seed)


def activation_backward(grad_out: torch.Tensor, z: torch.Tensor, activation: str,
                        dropout: tuple[float, int] | None = None) -> torch.Tensor:
    """dL/dz for y = act(z) (then dropout (p, seed), if given), given dL/dy; both (M, N)
    with any strides."""
    M, N = grad_out.shape
    dz = runtime.empty((M, N), dtype=z.dtype, device=z.device)
    if M > 0 and N > 0:
        blocks = ACTIVATION_BACKWARD_BLOCKS
        grid = (triton.cdiv(M, blocks["BLOCK_M"]), triton.cdiv(N, blocks["BLOCK_N"]))
        activation_backward_kernel[grid](
            grad_out, z, dz, M, N,
            grad_out.stride(0), grad_out.stride(1),
            z.stride(0), z.stride(1),
            dz.stride(0), dz.stride(1),
            *_dropout_args(dropout),
            ACTIVATION=activation, DROPOUT=dropout is not None, **blocks,
        )
    return dz


def column_sum(x: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
    """x.sum(0) for an (M, N) matrix with any strides, accumulated in float32."""
    M, N = x.shape
    out = runtime.empty((N,), dtype=out_dtype, device=x.device)
    if N > 0:
        column_sum_kernel[(triton.cdiv(N, COLUMN_SUM_BLOCKS["BLOCK_N"]),)](
            x, out, M, N, x.stride(0), x.stride(1), **COLUMN_SUM_BLOCKS,
        )
    return out
