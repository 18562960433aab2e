"""Linear: y = act(x W^T + b), forward and backward on the GEMM core.

Forward is one GEMM with bias and activation in the epilogue. Backward:
    dz = dy * act'(z)                (elementwise kernel; skipped without activation)
    dx = dz @ W                      (GEMM)
    dW = dz^T @ x, db = sum_m dz     (one GEMM; db comes from its ROW_SUM epilogue)
Only the gradients autograd asks for are computed, and only what they need is saved:
x for dW, W for dx, and z (or, for relu, the output itself) for the activation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from .. import runtime
from .compiled import apply, compilable
from .autograd import activation_input, first_order, keeps_preact
from .attention import new_seed
from .gemm import activation_backward, column_sum, gemm

_ACTIVATION_NAMES = {None: "none", "relu": "relu", "gelu": "gelu", "gelu_tanh": "gelu_tanh", "silu": "silu"}
_ACTIVATION_FUNCTIONS = {F.relu: "relu", F.gelu: "gelu", F.silu: "silu"}


def activation_name(activation) -> str:
    """The kernel's name for a user's activation: None, a name, or F.relu/F.gelu/F.silu."""
    if callable(activation) and activation in _ACTIVATION_FUNCTIONS:
        return _ACTIVATION_FUNCTIONS[activation]
    if isinstance(activation, str) or activation is None:
        if activation in _ACTIVATION_NAMES:
            return _ACTIVATION_NAMES[activation]
    raise ValueError(
        "activation must be one of None, 'relu', 'gelu', 'gelu_tanh', 'silu' "
        f"(or F.relu, F.gelu, F.silu), got {activation!r}"
    )


def torch_activation(x: torch.Tensor, name: str) -> torch.Tensor:
    """The native activation; only for the fallback path."""
    if name == "relu":
        return F.relu(x)
    if name in ("gelu", "gelu_tanh"):
        return F.gelu(x, approximate="tanh" if name == "gelu_tanh" else "none")
    if name == "silu":
        return F.silu(x)
    return x


@compilable("linear")
class LinearFunction(torch.autograd.Function):
    """x (M, K), weight (N, K), bias (N,) or None -> y (M, N); dropout p > 0 after the
    activation, in the epilogue, with the mask of ``seed`` (the backward redraws it)."""

    @staticmethod
    def forward(ctx, x, weight, bias, activation, needs_grad, p, seed):
        dropout = (p, seed) if p > 0 else None
        y, preact, _ = gemm(x, weight.t(), bias=bias, activation=activation,
                            store_preact=keeps_preact(activation, needs_grad), dropout=dropout)
        ctx.activation, ctx.dropout = activation, dropout
        if needs_grad:
            need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
            ctx.save_for_backward(x if need_w else None, weight if need_x else None,
                                  activation_input(activation, y, preact))
        return y

    @staticmethod
    @first_order("linear", linear=lambda ctx: ctx.activation == "none" and ctx.dropout is None)
    def backward(ctx, grad_y):
        x, weight, act_input = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        if ctx.activation == "none" and ctx.dropout is None:
            grad_z = grad_y
        else:  # relu reads its (dropped) output: zero where dropped, where the gradient is zero too
            grad_z = activation_backward(grad_y, act_input if act_input is not None else grad_y, ctx.activation,
                                         ctx.dropout)
        grad_x = grad_w = grad_b = None
        if need_x:
            grad_x, _, _ = gemm(grad_z, weight)
        # db rides on the dW GEMM's row sums, unless no dW GEMM runs over dz's columns.
        fused_b = need_b and need_w and x.shape[1] > 0
        if need_w:
            grad_w, _, grad_b = gemm(grad_z.t(), x, row_sum=fused_b)
        if need_b and not fused_b:
            grad_b = column_sum(grad_z, grad_z.dtype)
        return grad_x, grad_w, grad_b, None, None, None, None


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _check_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    """torch's errors for F.linear, with messages that say what was expected and what came."""
    if x.dim() == 0:
        raise RuntimeError(
            f"linear: expected input to be at least 1-D, got a 0-D tensor (weight is {weight.dim()}-D)"
        )
    if weight.dim() not in (1, 2):
        raise RuntimeError(f"linear: expected weight to be 1-D or 2-D, got {weight.dim()}-D")
    devices = {t.device for t in (x, weight, bias) if t is not None and t.device.type != "meta"}
    if len(devices) > 1:
        names = ", ".join(sorted(str(d) for d in devices))
        raise RuntimeError(f"Expected all tensors to be on the same device, but found at least two devices: {names}")
    in_features = weight.shape[-1]
    if x.shape[-1] != in_features:
        rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
        out_features = weight.shape[0] if weight.dim() == 2 else 1
        raise RuntimeError(
            f"mat1 and mat2 shapes cannot be multiplied ({rows}x{x.shape[-1]} and {in_features}x{out_features}): "
            f"input has {x.shape[-1]} features in its last dimension, weight expects {in_features}"
        )
    if x.dtype != weight.dtype:
        raise RuntimeError(
            f"mat1 and mat2 must have the same dtype, but got {_dtype_name(x.dtype)} (input) "
            f"and {_dtype_name(weight.dtype)} (weight)"
        )
    if bias is not None:
        if bias.dtype != weight.dtype:
            raise RuntimeError(
                f"self and mat2 must have the same dtype, but got {_dtype_name(bias.dtype)} (bias) "
                f"and {_dtype_name(weight.dtype)} (weight)"
            )
        out_features = weight.shape[0] if weight.dim() == 2 else 1
        if bias.dim() > 1 or bias.numel() not in (1, out_features):
            raise RuntimeError(
                f"linear: expected bias of shape ({out_features},) to match out_features, got {tuple(bias.shape)}"
            )


_FLOATING = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def linear(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation=None,
    *,
    dropout: float = 0.0,
) -> torch.Tensor:
    """``act(input @ weight.T + bias)``, like :func:`torch.nn.functional.linear` with an
    optional activation fused into the GEMM epilogue ("relu", "gelu", "gelu_tanh",
    "silu", or F.relu / F.gelu / F.silu), and optionally dropout with probability
    ``dropout`` after it, in the same epilogue (a Transformer's feed-forward; the mask
    ``tritonn.functional.dropout`` would draw; pass 0 outside training).

    input (*, in_features), weight (out_features, in_features) or (in_features,),
    bias (out_features,) or None -> (*, out_features) (or (*,) for a 1-D weight).
    Follows ``torch.autocast`` like ``nn.Linear``.
    """
    act = activation_name(activation)
    if not 0.0 <= dropout <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {dropout}")
    triton_path = runtime.runs_on_triton(input, weight, bias)
    if triton_path:  # autocast first, as torch does: a bf16 input meets an fp32 weight there
        input, weight, bias = runtime.autocast(input, weight, bias)
    _check_linear(input, weight, bias)
    if not triton_path:
        runtime.fallback("linear", input, weight, bias)
        return F.dropout(torch_activation(F.linear(input, weight, bias), act), dropout, dropout > 0)
    if input.dtype not in _FLOATING:
        raise NotImplementedError(
            f"tritonn linear: expected a floating dtype (float16, bfloat16, float32, float64), got {input.dtype}"
        )

    lead = input.shape[:-1]
    w2 = weight if weight.dim() == 2 else weight.unsqueeze(0)
    out_features = w2.shape[0]
    b = bias.reshape(-1).expand(out_features) if bias is not None else None
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (input, weight, bias))
    y = apply("linear", input.reshape(math.prod(lead), input.shape[-1]), w2, b, act, needs_grad, float(dropout),
              new_seed(dropout))
    return y.reshape(lead) if weight.dim() == 1 else y.reshape(*lead, out_features)
