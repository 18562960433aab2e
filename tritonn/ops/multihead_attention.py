"""Multi-head attention: torch's ``F.multi_head_attention_forward`` on tritonn kernels.

Projections run on the GEMM core (``ops.linear``); attention on the flash kernels
(``ops.attention``). Differences from torch's implementation, none visible in the results:
* masks are never converted, merged or padded: the bool/float ``attn_mask`` and
  ``key_padding_mask`` go to the kernels as two mask slots, read by strides
  (broadcast over batch and heads), and the bias_k / zero-attention key columns are
  simply past the masks' width (unmasked), as torch's zero padding makes them;
* q, k, v stay in the projections' (L, N, E) layout: the kernels read (N, H, L, D)
  by strides, and write the output as (L, N, H, D), which the output projection reads
  without a copy;
* the attention weights (``need_weights``) come from their own kernel, recomputed from
  the forward's logsumexp, and carry no gradient (torch's do).
Fully masked rows follow torch: NaN with ``need_weights=True`` (torch's softmax path),
0 otherwise (torch's SDPA path).
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F

from .. import runtime
from .attention import ADDITIVE, DROP_TRUE, MAX_HEAD_DIM, Mask, Options, attention, new_seed
from .autograd import first_order
from .gemm import column_sum
from .linear import linear


class Split(torch.autograd.Function):
    """Split ``x`` along ``dim`` into views of the given sizes: a packed projection's
    output (q|k|v) or the packed in_proj weight and bias. Its backward copies the
    parts' gradients into one buffer; autograd's own slice backward would zero-fill
    each part's gradient and add them natively."""

    @staticmethod
    def forward(ctx, x, sizes, dim):
        ctx.sizes, ctx.dim, ctx.shape = sizes, dim, x.shape
        return tuple(x.split(sizes, dim))

    @staticmethod
    @first_order("multi_head_attention_forward", linear=True)
    def backward(ctx, *grads):
        ref = next(g for g in grads if g is not None)
        out = runtime.empty(ctx.shape, dtype=ref.dtype, device=ref.device)
        for part, g in zip(out.split(ctx.sizes, ctx.dim), grads):
            if g is None:
                part.zero_()
            else:
                part.copy_(g)
        return out, None, None


def _split(x, sizes, dim):
    """Split.apply; under torch.compile plain views, whose gradient copies the compiler
    generates itself (Split only keeps autograd's native ones out of eager mode)."""
    if torch.compiler.is_compiling():
        return tuple(x.split(sizes, dim))
    return Split.apply(x, sizes, dim)


def _split_bias(in_proj_bias, embed_dim):
    return _split(in_proj_bias, [embed_dim] * 3, 0) if in_proj_bias is not None else (None, None, None)


class AppendBias(torch.autograd.Function):
    """cat([x (S, N, E), bias (1, 1, E) broadcast over N]): bias_k / bias_v. Its backward
    sums the bias gradient over the batch on a Triton kernel (autograd's expand
    backward would be a native sum)."""

    @staticmethod
    def forward(ctx, x, bias):
        return torch.cat([x, bias.expand(1, x.shape[1], x.shape[2])])

    @staticmethod
    @first_order("multi_head_attention_forward", linear=True)
    def backward(ctx, grad):
        rows = grad.shape[0] - 1
        grad_bias = column_sum(grad[rows], grad.dtype).view(1, 1, -1) if ctx.needs_input_grad[1] else None
        return grad[:rows], grad_bias


def _append_bias(x, bias):
    if torch.compiler.is_compiling():  # as _split: the compiler generates the batch sum itself
        return torch.cat([x, bias.expand(1, x.shape[1], x.shape[2])])
    return AppendBias.apply(x, bias)


def _check_mask(mask, name, other, other_name):
    if mask is None:
        return
    if mask.dtype != torch.bool and not torch.is_floating_point(mask):
        raise AssertionError(f"only bool and floating types of {name} are supported")
    if other is not None and mask.dtype != other.dtype:
        warnings.warn(f"Support for mismatched {name} and {other_name} is deprecated. Use same type for both instead.",
                      stacklevel=3)


def _kind(mask):
    return DROP_TRUE if mask.dtype == torch.bool else ADDITIVE


def multi_head_attention_forward(
    query, key, value, embed_dim_to_check, num_heads, in_proj_weight, in_proj_bias, bias_k, bias_v,
    add_zero_attn, dropout_p, out_proj_weight, out_proj_bias, training=True, key_padding_mask=None,
    need_weights=True, attn_mask=None, use_separate_proj_weight=False, q_proj_weight=None, k_proj_weight=None,
    v_proj_weight=None, static_k=None, static_v=None, average_attn_weights=True, is_causal=False,
):
    """:func:`torch.nn.functional.multi_head_attention_forward`, same arguments and results."""
    tensors = (query, key, value, in_proj_weight, in_proj_bias, bias_k, bias_v, out_proj_weight, out_proj_bias,
               q_proj_weight, k_proj_weight, v_proj_weight, static_k, static_v, key_padding_mask, attn_mask)
    if not runtime.runs_on_triton(*tensors):
        runtime.fallback("multi_head_attention_forward", *tensors)
        return F.multi_head_attention_forward(
            query, key, value, embed_dim_to_check, num_heads, in_proj_weight, in_proj_bias, bias_k, bias_v,
            add_zero_attn, dropout_p, out_proj_weight, out_proj_bias, training=training,
            key_padding_mask=key_padding_mask, need_weights=need_weights, attn_mask=attn_mask,
            use_separate_proj_weight=use_separate_proj_weight, q_proj_weight=q_proj_weight,
            k_proj_weight=k_proj_weight, v_proj_weight=v_proj_weight, static_k=static_k, static_v=static_v,
            average_attn_weights=average_attn_weights, is_causal=is_causal)
    is_batched = F._mha_shape_check(query, key, value, key_padding_mask, attn_mask, num_heads)
    if not is_batched:
        query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
        if key_padding_mask is not None:
            key_padding_mask = key_padding_mask.unsqueeze(0)
    tgt_len, bsz, embed_dim = query.shape
    src_len = key.shape[0]
    _check_mask(key_padding_mask, "key_padding_mask", attn_mask, "attn_mask")
    if is_causal and attn_mask is None:
        raise RuntimeError(
            "Need attn_mask if specifying the is_causal hint. You may use the Transformer module method "
            "`generate_square_subsequent_mask` to create this mask.")
    for name, m in (("attn_mask", attn_mask), ("key_padding_mask", key_padding_mask)):
        if m is not None and m.requires_grad and torch.is_grad_enabled():
            raise NotImplementedError(f"tritonn MultiheadAttention: no gradient for a {name} that requires grad")
    use_causal = bool(is_causal and key_padding_mask is None and not need_weights)
    if use_causal:
        attn_mask = None  # torch trusts the hint and drops the mask here
    else:
        _check_mask(attn_mask, "attn_mask", None, "")
    if embed_dim != embed_dim_to_check:
        raise AssertionError(f"was expecting embedding dimension of {embed_dim_to_check}, but got {embed_dim}")
    head_dim = embed_dim // num_heads
    if head_dim * num_heads != embed_dim:
        raise AssertionError(f"embed_dim {embed_dim} not divisible by num_heads {num_heads}")
    if head_dim > MAX_HEAD_DIM:
        raise NotImplementedError(f"tritonn MultiheadAttention: head dims up to {MAX_HEAD_DIM}, got {head_dim}")
    if use_separate_proj_weight:
        if key.shape[:2] != value.shape[:2]:
            raise AssertionError(
                f"key's sequence and batch dims {key.shape[:2]} do not match value's {value.shape[:2]}")
    elif key.shape != value.shape:
        raise AssertionError(f"key shape {key.shape} does not match value shape {value.shape}")

    # input projections on the GEMM core
    if not use_separate_proj_weight:
        if in_proj_weight is None:
            raise AssertionError("use_separate_proj_weight is False but in_proj_weight is None")
        if query is key and key is value:  # self-attention: one GEMM for q, k and v
            qkv = linear(query, in_proj_weight, in_proj_bias)
            q, k, v = _split(qkv, [embed_dim] * 3, -1)
        elif key is value:  # cross-attention: q from the query, k and v from one GEMM
            sizes = [embed_dim, 2 * embed_dim]
            w_q, w_kv = _split(in_proj_weight, sizes, 0)
            b_q, b_kv = _split(in_proj_bias, sizes, 0) if in_proj_bias is not None else (None, None)
            q = linear(query, w_q, b_q)
            k, v = _split(linear(key, w_kv, b_kv), [embed_dim] * 2, -1)
        else:
            w_q, w_k, w_v = _split(in_proj_weight, [embed_dim] * 3, 0)
            b_q, b_k, b_v = _split_bias(in_proj_bias, embed_dim)
            q, k, v = linear(query, w_q, b_q), linear(key, w_k, b_k), linear(value, w_v, b_v)
    else:
        for name, w in (("q", q_proj_weight), ("k", k_proj_weight), ("v", v_proj_weight)):
            if w is None:
                raise AssertionError(f"use_separate_proj_weight is True but {name}_proj_weight is None")
        b_q, b_k, b_v = _split_bias(in_proj_bias, embed_dim)
        q, k, v = linear(query, q_proj_weight, b_q), linear(key, k_proj_weight, b_k), linear(value, v_proj_weight, b_v)

    if attn_mask is not None:
        if attn_mask.dim() == 2:
            if attn_mask.shape != (tgt_len, src_len):
                raise RuntimeError(
                    f"The shape of the 2D attn_mask is {attn_mask.shape}, but should be {(tgt_len, src_len)}.")
            mask_view = attn_mask.view(1, 1, tgt_len, src_len).expand(bsz, num_heads, tgt_len, src_len)
        elif attn_mask.dim() == 3:
            if attn_mask.shape != (bsz * num_heads, tgt_len, src_len):
                raise RuntimeError(f"The shape of the 3D attn_mask is {attn_mask.shape}, but should be "
                                   f"{(bsz * num_heads, tgt_len, src_len)}.")
            mask_view = attn_mask.view(bsz, num_heads, tgt_len, src_len)
        else:
            raise RuntimeError(f"attn_mask's dimension {attn_mask.dim()} is not supported")

    if bias_k is not None and bias_v is not None:
        if static_k is not None:
            raise AssertionError("bias cannot be added to static key.")
        if static_v is not None:
            raise AssertionError("bias cannot be added to static value.")
        k, v = _append_bias(k, bias_k), _append_bias(v, bias_v)
    elif bias_k is not None:
        raise AssertionError("bias_k is set but bias_v is None")
    elif bias_v is not None:
        raise AssertionError("bias_v is set but bias_k is None")

    # (L, N, E) -> (N, H, L, D) views
    q4 = q.reshape(tgt_len, bsz, num_heads, head_dim).permute(1, 2, 0, 3)
    if static_k is None:
        k4 = k.reshape(k.shape[0], bsz, num_heads, head_dim).permute(1, 2, 0, 3)
    else:
        if static_k.size(0) != bsz * num_heads:
            raise AssertionError(f"expecting static_k.size(0) of {bsz * num_heads}, but got {static_k.size(0)}")
        if static_k.size(2) != head_dim:
            raise AssertionError(f"expecting static_k.size(2) of {head_dim}, but got {static_k.size(2)}")
        k4 = static_k.view(bsz, num_heads, static_k.shape[1], head_dim)
    if static_v is None:
        v4 = v.reshape(v.shape[0], bsz, num_heads, head_dim).permute(1, 2, 0, 3)
    else:
        if static_v.size(0) != bsz * num_heads:
            raise AssertionError(f"expecting static_v.size(0) of {bsz * num_heads}, but got {static_v.size(0)}")
        if static_v.size(2) != head_dim:
            raise AssertionError(f"expecting static_v.size(2) of {head_dim}, but got {static_v.size(2)}")
        v4 = static_v.view(bsz, num_heads, static_v.shape[1], head_dim)
    if add_zero_attn:
        zeros = torch.zeros((bsz, num_heads, 1, head_dim), dtype=k4.dtype, device=k4.device)
        k4 = torch.cat([k4, zeros], dim=2)
        v4 = torch.cat([v4, zeros], dim=2)

    masks = [None, None]
    if attn_mask is not None:
        masks[0] = Mask(mask_view, _kind(attn_mask))
    if key_padding_mask is not None:
        # the keys it masks: static_k's when given (bias_k / zero-attention columns lie past it)
        keys = static_k.shape[1] if static_k is not None else src_len
        for dim, expected in ((0, bsz), (1, keys)):  # torch's check, as a plain raise (Dynamo traces it)
            if key_padding_mask.shape[dim] != expected:
                raise AssertionError(f"Expected key_padded_mask.shape[{dim}] to be {expected}, "
                                     f"but got {key_padding_mask.shape[dim]}")
        kpm = key_padding_mask.view(bsz, 1, 1, keys).expand(bsz, num_heads, tgt_len, keys)
        masks[1] = Mask(kpm, _kind(key_padding_mask))

    if not training:
        dropout_p = 0.0
    opt = Options(scale=1.0 / math.sqrt(head_dim), is_causal=use_causal, dropout_p=float(dropout_p),
                  seed=new_seed(dropout_p), nan_rows=bool(need_weights), out_lbhd=True)
    o, weights = attention(q4, k4, v4, masks, opt, need_weights=need_weights, average=average_attn_weights)
    o = o.permute(2, 0, 1, 3).reshape(tgt_len * bsz, embed_dim)  # a view: o was written as (L, N, H, D)
    out = linear(o, out_proj_weight, out_proj_bias).view(tgt_len, bsz, -1)
    if not is_batched:
        out = out.squeeze(1)
        if weights is not None:
            weights = weights.squeeze(0)
    return out, weights
