"""Scaled dot-product attention on the flash-attention kernels (``kernels/attention.py``).

``scaled_dot_product_attention`` has torch's signature. Inputs are viewed as
(B, H, L, E) by their strides (every leading dim folded into B); the output and the
saved logsumexp come from one forward kernel; backward runs delta = rowsum(dO * O),
then dK/dV (one program per key block and key/value head, looping over its query
heads: deterministic, no atomics) and dQ (one program per query block).

``attention`` is the launcher-level entry MultiheadAttention uses: up to two masks
(each a (B, H, L, S)-broadcast view plus its kind, see the kernel module), torch's
NaN rows for need_weights, an output laid out as (L, B, H, Dv) so the output
projection reads it without a copy, and the attention weights from their own kernel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import triton

from .. import runtime
from .compiled import Seed, apply, compilable, static_type
from ..kernels.attention import (
    attention_dkdv_kernel,
    attention_dq_kernel,
    attention_forward_kernel,
    attention_preprocess_kernel,
    attention_weights_kernel,
)
from .autograd import first_order

MAX_HEAD_DIM = 256
INTERPRETER_BLOCKS = {"BLOCK_M": 64, "BLOCK_N": 64}
PREPROCESS_BLOCK_M = 64
WEIGHTS_BLOCKS = {"BLOCK_M": 64, "BLOCK_N": 64}

# Mask kinds, as the kernels read them.
NO_MASK, KEEP_TRUE, DROP_TRUE, ADDITIVE = 0, 1, 2, 3


def block_d(d: int) -> int:
    """Head dims are padded to a power of two, at least 16 (tl.dot's minimum K on GPU)."""
    return max(16, triton.next_power_of_2(d))


def gpu_config(kernel: str, d: int, element_size: int) -> dict:
    """Blocks, warps and stages for one kernel at (padded) head dim ``d`` on a GPU.
    Fixed per head dim (no autotuning: one compile per head dim and dtype)."""
    wide = element_size >= 4
    if kernel == "forward":
        if d <= 64:
            cfg = (64 if wide else 128, 64, 4, 3)
        elif d <= 128:
            cfg = (64 if wide else 128, 64 if not wide else 32, 8, 2)
        else:
            cfg = (64, 32 if not wide else 16, 8, 2)
    else:  # dkdv, dq, weights
        if d <= 64:
            cfg = (64, 64, 4, 2)
        elif d <= 128:
            cfg = (32 if wide else 64, 32 if wide else 64, 8, 2)
        else:
            cfg = (32 if not wide else 16, 32, 8, 1)
    bm, bn, warps, stages = cfg
    return {"BLOCK_M": bm, "BLOCK_N": bn, "num_warps": warps, "num_stages": stages}


def _config(kernel: str, d: int, dtype: torch.dtype) -> dict:
    if runtime.INTERPRETING:
        return dict(INTERPRETER_BLOCKS)
    return gpu_config(kernel, d, dtype.itemsize)


def _scale(opt, dtype: torch.dtype, device) -> torch.Tensor:
    """The softmax scale as a 1-element tensor in the accumulator dtype: a Python float
    argument reaches a kernel as float32, too coarse for float64 attention."""
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    return runtime.empty((1,), dtype=acc, device=device).fill_(opt.scale)


def _precision(dtype: torch.dtype, device: torch.device) -> str:
    return "tf32" if dtype == torch.float32 and device.type == "cuda" and runtime.tf32_enabled() else "ieee"


@static_type
@dataclass
class Mask:
    """One mask slot: ``view`` broadcast to (B, H, L, <=S) by strides; ``kind`` as in the
    kernels; columns at or past ``view.shape[-1]`` are not masked."""

    view: torch.Tensor
    kind: int

    def args(self):
        t = self.view.view(torch.uint8) if self.view.dtype == torch.bool else self.view
        return t, self.view.shape[-1], self.view.stride()


def _mask_args(masks):
    ptrs, kinds, widths, strides = [], [], [], []
    for m in masks:
        if m is None:
            ptrs.append(None)
            kinds.append(NO_MASK)
            widths.append(0)
            strides.append((0, 0, 0, 0))
        else:
            t, width, stride = m.args()
            ptrs.append(t)
            kinds.append(m.kind)
            widths.append(width)
            strides.append(stride)
    return ptrs, kinds, widths, strides


@static_type
@dataclass
class Options:
    scale: float
    is_causal: bool
    dropout_p: float
    seed: int
    nan_rows: bool
    out_lbhd: bool = False


def _forward(q, k, v, masks, opt: Options):
    B, H, L, D = q.shape
    HK, S, DV = k.shape[1], k.shape[2], v.shape[3]
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    if opt.out_lbhd:
        o = runtime.empty((L, B, H, DV), dtype=q.dtype, device=q.device).permute(1, 2, 0, 3)
    else:
        o = runtime.empty((B, H, L, DV), dtype=q.dtype, device=q.device)
    lse = runtime.empty((B * H, L), dtype=acc, device=q.device)
    if o.numel() == 0:
        return o, lse
    ptrs, kinds, widths, strides = _mask_args(masks)
    cfg = _config("forward", max(block_d(D), block_d(DV)), q.dtype)
    grid = (triton.cdiv(L, cfg["BLOCK_M"]) * B * H,)
    attention_forward_kernel[grid](
        q, k, v, o, lse, ptrs[0] if ptrs[0] is not None else q, ptrs[1] if ptrs[1] is not None else q,
        opt.seed, opt.dropout_p, _scale(opt, q.dtype, q.device),
        H, H // HK, L, S, D, DV, widths[0], widths[1],
        *q.stride(), *k.stride(), *v.stride(), *o.stride(), *strides[0], *strides[1],
        MASK1=kinds[0], MASK2=kinds[1], IS_CAUSAL=opt.is_causal, DROPOUT=opt.dropout_p > 0,
        NAN_ROWS=opt.nan_rows, INPUT_PRECISION=_precision(q.dtype, q.device),
        BLOCK_D=block_d(D), BLOCK_DV=block_d(DV), **cfg,
    )
    return o, lse


def _backward(q, k, v, o, lse, grad_o, masks, opt: Options, need_q, need_kv):
    B, H, L, D = q.shape
    HK, S, DV = k.shape[1], k.shape[2], v.shape[3]
    acc = lse.dtype
    dq = runtime.empty(q.shape, dtype=q.dtype, device=q.device) if need_q else None
    dk = runtime.empty(k.shape, dtype=k.dtype, device=k.device) if need_kv else None
    dv = runtime.empty(v.shape, dtype=v.dtype, device=v.device) if need_kv else None
    if L == 0 or S == 0 or B * H == 0 or DV == 0:  # (DV == 0: the forward wrote no lse)
        for t in (dq, dk, dv):
            if t is not None:
                t.zero_()
        return dq, dk, dv
    delta = runtime.empty((B * H, L), dtype=acc, device=q.device)
    attention_preprocess_kernel[(triton.cdiv(L, PREPROCESS_BLOCK_M) * B * H,)](
        o, grad_o, delta, H, L, DV, *o.stride(), *grad_o.stride(),
        BLOCK_M=PREPROCESS_BLOCK_M, BLOCK_DV=block_d(DV),
    )
    ptrs, kinds, widths, strides = _mask_args(masks)
    m1 = ptrs[0] if ptrs[0] is not None else q
    m2 = ptrs[1] if ptrs[1] is not None else q
    common = dict(MASK1=kinds[0], MASK2=kinds[1], IS_CAUSAL=opt.is_causal, DROPOUT=opt.dropout_p > 0,
                  INPUT_PRECISION=_precision(q.dtype, q.device), BLOCK_D=block_d(D), BLOCK_DV=block_d(DV))
    dims = (H, H // HK, L, S, D, DV, widths[0], widths[1])
    scalars = (opt.seed, opt.dropout_p, _scale(opt, q.dtype, q.device))
    if need_kv:
        cfg = _config("dkdv", max(block_d(D), block_d(DV)), q.dtype)
        grid = (triton.cdiv(S, cfg["BLOCK_N"]) * B * HK,)
        attention_dkdv_kernel[grid](
            q, k, v, grad_o, lse, delta, dk, dv, m1, m2, *scalars, *dims,
            *q.stride(), *k.stride(), *v.stride(), *grad_o.stride(), *dk.stride(), *dv.stride(),
            *strides[0], *strides[1], **common, **cfg,
        )
    if need_q:
        cfg = _config("dq", max(block_d(D), block_d(DV)), q.dtype)
        grid = (triton.cdiv(L, cfg["BLOCK_M"]) * B * H,)
        attention_dq_kernel[grid](
            q, k, v, grad_o, lse, delta, dq, m1, m2, *scalars, *dims,
            *q.stride(), *k.stride(), *v.stride(), *grad_o.stride(), *dq.stride(),
            *strides[0], *strides[1], **common, **cfg,
        )
    return dq, dk, dv


def attention_weights(q, k, lse, masks, opt: Options, average: bool) -> torch.Tensor:
    """softmax(q k^T * scale + masks) (after dropout), (B, L, S) averaged over heads or
    (B, H, L, S); from the forward's lse, no gradient."""
    B, H, L, D = q.shape
    HK, S = k.shape[1], k.shape[2]
    shape = (B, L, S) if average else (B, H, L, S)
    w = runtime.empty(shape, dtype=q.dtype, device=q.device)
    if w.numel() == 0:
        return w
    w4 = w.unsqueeze(1) if average else w
    ptrs, kinds, widths, strides = _mask_args(masks)
    cfg = dict(WEIGHTS_BLOCKS) if runtime.INTERPRETING else gpu_config("weights", block_d(D), q.element_size())
    grid = (triton.cdiv(L, cfg["BLOCK_M"]) * triton.cdiv(S, cfg["BLOCK_N"]) * (B if average else B * H),)
    attention_weights_kernel[grid](
        q, k, lse, w4, ptrs[0] if ptrs[0] is not None else q, ptrs[1] if ptrs[1] is not None else q,
        opt.seed, opt.dropout_p, _scale(opt, q.dtype, q.device), H, H // HK, L, S, D, widths[0], widths[1],
        *q.stride(), *k.stride(), *w4.stride(), *strides[0], *strides[1],
        MASK1=kinds[0], MASK2=kinds[1], IS_CAUSAL=opt.is_causal, DROPOUT=opt.dropout_p > 0, AVERAGE=average,
        INPUT_PRECISION=_precision(q.dtype, q.device), BLOCK_D=block_d(D), **cfg,
    )
    return w


@compilable("scaled_dot_product_attention")
class AttentionFunction(torch.autograd.Function):
    """q (B, H, L, D), k (B, HK, S, D), v (B, HK, S, DV) -> (o (B, H, L, DV), lse), and the
    attention weights (no gradient) when ``weights`` is "average" or "heads": computed
    here, from the same seed as o's dropout (one op under torch.compile, one seed)."""

    @staticmethod
    def forward(ctx, q, k, v, mask1, mask2, opt, needs_grad, weights):
        o, lse = _forward(q, k, v, (mask1, mask2), opt)
        ctx.mark_non_differentiable(lse)
        ctx.opt = opt
        ctx.masks = (mask1, mask2)
        if needs_grad:
            ctx.save_for_backward(q, k, v, o, lse)
        if weights == "none":
            return o, lse
        w = attention_weights(q, k, lse, (mask1, mask2), opt, weights == "average")
        ctx.mark_non_differentiable(w)
        return o, lse, w

    @staticmethod
    @first_order("scaled_dot_product_attention")
    def backward(ctx, grad_o, _grad_lse, _grad_weights=None):
        q, k, v, o, lse = ctx.saved_tensors
        need_q = ctx.needs_input_grad[0]
        need_kv = ctx.needs_input_grad[1] or ctx.needs_input_grad[2]
        dq, dk, dv = _backward(q, k, v, o, lse, grad_o, ctx.masks, ctx.opt, need_q, need_kv)
        return dq, dk if ctx.needs_input_grad[1] else None, dv if ctx.needs_input_grad[2] else None, \
            None, None, None, None, None


def attention(q, k, v, masks=(None, None), opt: Options | None = None, need_weights=False, average=True):
    """The launcher-level entry: 4-D strided q, k, v; returns (o, weights or None)."""
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    weights = ("average" if average else "heads") if need_weights else "none"
    out = apply("scaled_dot_product_attention", q, k, v, masks[0], masks[1], opt, needs_grad, weights)
    return out[0], (out[2] if need_weights else None)


def new_seed(dropout_p: float) -> int:
    """A Philox seed drawn from torch's generator (so torch.manual_seed reproduces dropout).
    Never 0 or 1: Triton turns an integer argument equal to 1 into a constant, which
    would compile a different kernel (and 0 marks "no dropout")."""
    if dropout_p <= 0:
        return 0
    seed = torch.randint(2, 2**31 - 1, (1,))
    if torch.compiler.is_compiling():
        return Seed(seed)  # drawn in the graph at every run, read by the custom op
    return int(seed.item())


_FLOATING = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _dt(t):
    return {torch.float32: "float", torch.float64: "double", torch.float16: "c10::Half",
            torch.bfloat16: "c10::BFloat16"}.get(t.dtype, str(t.dtype).replace("torch.", ""))


def _check_sdpa(query, key, value, attn_mask, dropout_p, is_causal, enable_gqa):
    if attn_mask is not None and is_causal:
        raise RuntimeError("_scaled_dot_product_attention: Explicit attn_mask should not be set when is_causal=True")
    if not (query.dtype == key.dtype == value.dtype):
        raise RuntimeError(
            "Expected query, key, and value to have the same dtype, but got query.dtype: "
            f"{_dt(query)} key.dtype: {_dt(key)} and value.dtype: {_dt(value)} instead.")
    for name, t in (("query", query), ("key", key), ("value", value)):
        if t.dim() < 2:
            raise RuntimeError(f"scaled_dot_product_attention: expected {name} to be at least 2-D, got {t.dim()}-D")
    if not (query.dim() == key.dim() == value.dim()):
        raise RuntimeError(
            f"scaled_dot_product_attention: expected query, key and value to have the same number of dims, got "
            f"{query.dim()}, {key.dim()} and {value.dim()}")
    if key.shape[-1] != query.shape[-1]:
        raise RuntimeError(
            f"scaled_dot_product_attention: key's last dim {key.shape[-1]} must equal query's {query.shape[-1]}")
    if key.shape[-2] != value.shape[-2]:
        raise RuntimeError(
            f"scaled_dot_product_attention: key has {key.shape[-2]} positions and value {value.shape[-2]}")
    if query.shape[:-3] != key.shape[:-3] or key.shape[:-2] != value.shape[:-2]:
        raise RuntimeError(
            "scaled_dot_product_attention: batch dims of query, key and value must match, got "
            f"{tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)}")
    if query.dim() >= 3:
        hq, hk = query.shape[-3], key.shape[-3]
        if hq != hk and hk != 1 and not (enable_gqa and hq % hk == 0):
            raise RuntimeError(
                "Number of heads in key and value must divide the number of heads in query "
                f"(with enable_gqa=True), got query {hq} heads, key/value {hk}")
    if attn_mask is not None and attn_mask.dtype not in (torch.bool, torch.float32, query.dtype):
        raise RuntimeError(
            "Expected attn_mask dtype to be bool or float or to match query dtype, but got attn_mask.dtype: "
            f"{_dt(attn_mask)} and  query.dtype: {_dt(query)} instead.")
    if not 0.0 <= dropout_p <= 1.0:
        raise RuntimeError(f"dropout probability has to be between 0 and 1, but got {dropout_p}")
    if attn_mask is not None and attn_mask.requires_grad and torch.is_grad_enabled():
        raise NotImplementedError(
            "tritonn scaled_dot_product_attention: no gradient for a float attn_mask that requires grad "
            "(pass attn_mask.detach(), or use torch's SDPA for a learned additive bias)")
    if max(query.shape[-1], value.shape[-1]) > MAX_HEAD_DIM:
        raise NotImplementedError(
            f"tritonn scaled_dot_product_attention: head dims up to {MAX_HEAD_DIM}, got "
            f"{query.shape[-1]} (query/key) and {value.shape[-1]} (value)")


def _as_bhld(t):
    """(*, H, L, E) -> (B, H, L, E) view (a copy only when leading dims do not fold)."""
    if t.dim() == 2:
        return t.unsqueeze(0).unsqueeze(0)
    if t.dim() == 3:
        return t.unsqueeze(0)
    return t.reshape(math.prod(t.shape[:-3]), *t.shape[-3:])


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                 enable_gqa=False):
    """:func:`torch.nn.functional.scaled_dot_product_attention` on flash-attention kernels.

    query (*, Hq, L, E), key (*, Hk, S, E), value (*, Hk, S, Ev); Hk == Hq, Hk == 1, or
    Hq % Hk == 0 with enable_gqa. attn_mask bool (True = attend) or float (added),
    broadcastable to (*, Hq, L, S). E, Ev <= 256. Rows with every key masked give 0.
    """
    _check_sdpa(query, key, value, attn_mask, dropout_p, is_causal, enable_gqa)
    if not runtime.runs_on_triton(query, key, value, attn_mask):
        runtime.fallback("scaled_dot_product_attention", query, key, value, attn_mask)
        return F.scaled_dot_product_attention(query, key, value, attn_mask, dropout_p, is_causal, scale,
                                              enable_gqa=enable_gqa)
    query, key, value = runtime.autocast(query, key, value)
    if query.dtype not in _FLOATING:
        raise NotImplementedError(
            f"tritonn scaled_dot_product_attention: expected a floating dtype, got {query.dtype}")
    q, k, v = _as_bhld(query), _as_bhld(key), _as_bhld(value)
    B, H, L, E = q.shape
    S = k.shape[2]
    masks = (None, None)
    if attn_mask is not None:
        lead = query.shape[:-2]
        try:
            m = attn_mask.expand(*lead, L, S)
        except RuntimeError as e:
            raise RuntimeError(
                f"scaled_dot_product_attention: attn_mask of shape {tuple(attn_mask.shape)} does not broadcast to "
                f"{(*lead, L, S)}") from e
        m = m.reshape(B, H, L, S) if m.dim() != 4 or m.shape[0] != B else m
        masks = (Mask(m, KEEP_TRUE if attn_mask.dtype == torch.bool else ADDITIVE), None)
    opt = Options(scale=float(scale) if scale is not None else 1.0 / math.sqrt(E), is_causal=bool(is_causal),
                  dropout_p=float(dropout_p), seed=new_seed(dropout_p), nan_rows=False)
    o, _ = attention(q, k, v, masks, opt)
    return o.reshape(*query.shape[:-1], value.shape[-1])
