"""Activations applied in kernel epilogues, their derivatives, and the elementwise
backward kernel that turns dL/dy into dL/dz for y = act(z).

``ACTIVATION`` is a constexpr string: "none", "relu", "gelu" (exact, erf), "gelu_tanh",
"silu". Everything is computed in float32 (float64 for float64 tensors). tanh is expressed through the sigmoid
(0.5 * (1 + tanh(u)) == sigmoid(2u)), which avoids libdevice (absent in the
interpreter) and the cancellation of 2 * sigmoid(2u) - 1 near zero.
"""

import triton
import triton.language as tl

from .common import cast_to
from .dropout import dropped

ACTIVATIONS = ("none", "relu", "gelu", "gelu_tanh", "silu")

_SQRT1_2 = tl.constexpr(0.7071067811865476)  # 1/sqrt(2)
_INV_SQRT_2PI = tl.constexpr(0.3989422804014327)  # 1/sqrt(2*pi)
_SQRT_2_OVER_PI = tl.constexpr(0.7978845608028654)  # sqrt(2/pi)
_GELU_CUBIC = tl.constexpr(0.044715)


@triton.jit
def apply_activation(z, ACTIVATION: tl.constexpr):
    """y = act(z), z in float32 or float64."""
    if ACTIVATION == "relu":
        # NaN must propagate like torch.relu, which a plain maximum(z, 0) would not guarantee.
        return tl.where(z > 0, z, tl.where(z != z, z, 0.0))
    elif ACTIVATION == "gelu":
        return 0.5 * z * (1.0 + tl.math.erf(z * _SQRT1_2))
    elif ACTIVATION == "gelu_tanh":
        u = _SQRT_2_OVER_PI * (z + _GELU_CUBIC * z * z * z)
        return z * tl.sigmoid(2.0 * u)
    elif ACTIVATION == "silu":
        return z * tl.sigmoid(z)
    else:
        return z


@triton.jit
def activation_grad(dy, z, ACTIVATION: tl.constexpr):
    """dL/dz = dL/dy * act'(z), both in float32 or float64. For relu, ``z`` may be the output y
    (relu'(z) == relu'(y) as torch defines it: 0 at z == 0)."""
    if ACTIVATION == "relu":
        return tl.where(z > 0, dy, 0.0)
    elif ACTIVATION == "gelu":
        cdf = 0.5 * (1.0 + tl.math.erf(z * _SQRT1_2))
        pdf = tl.exp(-0.5 * z * z) * _INV_SQRT_2PI
        return dy * (cdf + z * pdf)
    elif ACTIVATION == "gelu_tanh":
        u = _SQRT_2_OVER_PI * (z + _GELU_CUBIC * z * z * z)
        du = _SQRT_2_OVER_PI * (1.0 + 3.0 * _GELU_CUBIC * z * z)
        s = tl.sigmoid(2.0 * u)
        return dy * (s + 2.0 * z * s * (1.0 - s) * du)
    elif ACTIVATION == "silu":
        s = tl.sigmoid(z)
        return dy * s * (1.0 + z * (1.0 - s))
    else:
        return dy


@triton.jit
def activation_backward_kernel(
    dy_ptr, z_ptr, dz_ptr,
    M, N,
    stride_dym, stride_dyn,
    stride_zm, stride_zn,
    stride_dzm, stride_dzn,
    p, scale_hi, scale_lo, seed,
    ACTIVATION: tl.constexpr, DROPOUT: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """dz = dy * act'(z) over an M x N matrix given by (row, column) strides; with
    DROPOUT, dy first goes through the dropout that followed the activation (the mask
    of element m * N + n, as the GEMM epilogue drew it).

    Program (pid_m, pid_n) handles one BLOCK_M x BLOCK_N tile. Strides are free, so
    a broadcast (stride-0) grad_output needs no copy.
    """
    ACC: tl.constexpr = tl.float64 if dz_ptr.dtype.element_ty == tl.float64 else tl.float32
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    rows = offs_m[:, None].to(tl.int64)
    cols = offs_n[None, :].to(tl.int64)
    dy = tl.load(dy_ptr + rows * stride_dym + cols * stride_dyn, mask=mask, other=0.0).to(ACC)
    if DROPOUT:
        dy = dropped(dy, seed, rows * N + cols, p, scale_hi, scale_lo)
    z = tl.load(z_ptr + rows * stride_zm + cols * stride_zn, mask=mask, other=0.0).to(ACC)
    dz = activation_grad(dy, z, ACTIVATION)
    tl.store(dz_ptr + rows * stride_dzm + cols * stride_dzn, cast_to(dz, dz_ptr.dtype.element_ty), mask=mask)
