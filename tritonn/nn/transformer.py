"""tritonn's Transformer family: torch.nn.Transformer* on tritonn kernels.

Each class subclasses its torch class (same constructor, submodule names, state_dict)
and swaps its submodules for the tritonn ones in place (``tritonize``): Linear ->
tritonn.Linear, MultiheadAttention -> tritonn.MultiheadAttention, LayerNorm ->
tritonn.LayerNorm, Dropout -> tritonn.Dropout. The tritonn classes add no state, so
the swap keeps every parameter. The forwards mirror torch's ``_sa_block`` /
``_mha_block`` / ``_ff_block`` and never take torch's fast path
(``torch._transformer_encoder_layer_fwd``) or nested tensors.

Fused: bias + relu/gelu + the dropout after it in the first feed-forward GEMM's epilogue
(string activations and F.relu / F.gelu; any other callable is applied as given, on the
GEMM's output, then the dropout kernel);
residual add + the sublayer's dropout + the LayerNorm that follows in one kernel
(``add_dropout_layer_norm``, forward and backward): post-norm's ``norm(x + drop(f(x)))``
and pre-norm's ``x + drop(f(norm_a(x)))`` followed by the next sublayer's ``norm_b``.
Not fused: a pre-norm layer's first LayerNorm (norm1, its own kernel), its last
residual add + dropout (``residual_dropout``, one elementwise kernel).
Residual branch points (x feeding a sublayer and the skip) go through ``fork``, whose
backward sums the two gradients in Triton, so that autograd adds nothing natively.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.modules.transformer import _detect_is_causal_mask, _get_seq_len

from ..ops.dropout import dropout, fork, residual_dropout
from ..ops.layer_norm import add_dropout_layer_norm
from ..ops.linear import linear
from .activation import MultiheadAttention
from .linear import Linear
from .normalization import Dropout, LayerNorm

_SWAPS = {
    torch.nn.Linear: Linear,
    torch.nn.MultiheadAttention: MultiheadAttention,
    torch.nn.LayerNorm: LayerNorm,
    torch.nn.Dropout: Dropout,
}


def tritonize(module: torch.nn.Module) -> torch.nn.Module:
    """Swap, in place, every torch submodule (exact class) that has a tritonn
    counterpart for it; returns ``module``."""
    swaps = dict(_SWAPS)
    swaps.update({torch.nn.TransformerEncoderLayer: TransformerEncoderLayer,
                  torch.nn.TransformerDecoderLayer: TransformerDecoderLayer,
                  torch.nn.TransformerEncoder: TransformerEncoder,
                  torch.nn.TransformerDecoder: TransformerDecoder})
    for m in module.modules():
        cls = swaps.get(type(m))
        if cls is not None:
            m.__class__ = cls
    return module


_GLOBAL_HOOKS = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
                 "_global_backward_pre_hooks")


def _plain(module: torch.nn.Module, cls: type) -> bool:
    """Whether calling ``module`` is exactly ``cls.forward``: no subclass, replacement,
    parametrization or hook (weight_norm, pruning, LoRA wrappers work through those).
    Only then may a fused kernel read its parameters instead of calling it."""
    hooks = (module._forward_hooks, module._forward_pre_hooks, module._backward_hooks, module._backward_pre_hooks)
    global_hooks = (getattr(torch.nn.modules.module, name, None) for name in _GLOBAL_HOOKS)
    return type(module) is cls and not any(hooks) and not any(h for h in global_hooks if h)


def _feed_forward(layer, x: Tensor) -> Tensor:
    """linear2(dropout(activation(linear1(x)))): relu/gelu and the dropout fused into
    linear1's epilogue (unless linear1 or the dropout is hooked or replaced: then each
    is called)."""
    act = layer.activation
    fusable = (act is F.relu or act is F.gelu) and _plain(layer.linear1, Linear)
    if fusable and _plain(layer.dropout, Dropout):
        p = layer.dropout.p if layer.dropout.training else 0.0
        return layer.linear2(linear(x, layer.linear1.weight, layer.linear1.bias, activation=act, dropout=p))
    if fusable:
        h = linear(x, layer.linear1.weight, layer.linear1.bias, activation=act)
    else:
        h = act(layer.linear1(x))
    if _plain(layer.dropout, Dropout):
        h = dropout(h, layer.dropout.p, layer.dropout.training)
    else:
        h = layer.dropout(h)
    return layer.linear2(h)


def _attention(attn, x: Tensor, mem: Tensor, mask, key_padding_mask, is_causal: bool) -> Tensor:
    return attn(x, mem, mem, attn_mask=mask, key_padding_mask=key_padding_mask, need_weights=False,
                is_causal=is_causal)[0]


def _promote(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """x and y in their promoted dtype (under autocast a sublayer may return another
    dtype than the residual stream; torch's ``x + y`` promotes)."""
    if x.dtype == y.dtype:
        return x, y
    dtype = torch.promote_types(x.dtype, y.dtype)
    return x.to(dtype), y.to(dtype)


def _resid(x: Tensor, y: Tensor, drop: torch.nn.Dropout) -> Tensor:
    x, y = _promote(x, y)
    if _plain(drop, Dropout):
        return residual_dropout(x, y, drop.p, drop.training)
    return residual_dropout(x, drop(y), 0.0, False)  # the module's own dropout, then the add


def _resid_norm(x: Tensor, y: Tensor, drop: torch.nn.Dropout, norm: torch.nn.Module) -> tuple[Tensor, Tensor]:
    """(h, norm(h)), h = x + dropout(y): one fused kernel when norm is a tritonn LayerNorm."""
    x, y = _promote(x, y)
    cuda_autocast = x.device.type == "cuda" and torch.is_autocast_enabled("cuda")  # norm's output: float32
    if _plain(norm, LayerNorm) and _plain(drop, Dropout) and not cuda_autocast and y.shape == x.shape:
        return add_dropout_layer_norm(x, y, norm.normalized_shape, norm.weight, norm.bias, norm.eps, drop.p,
                                      drop.training)
    h = _resid(x, y, drop)
    h, hn = fork(h)
    return h, norm(hn)


class TransformerEncoderLayer(torch.nn.TransformerEncoderLayer):
    """Drop-in for :class:`torch.nn.TransformerEncoderLayer` on tritonn kernels."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        tritonize(self)

    @classmethod
    def from_torch(cls, layer: torch.nn.TransformerEncoderLayer) -> "TransformerEncoderLayer":
        """A tritonn copy of a torch layer (weights copied, the torch layer untouched)."""
        return tritonize(copy.deepcopy(layer))

    def forward(self, src: Tensor, src_mask: Tensor | None = None, src_key_padding_mask: Tensor | None = None,
                is_causal: bool = False) -> Tensor:
        x, h = fork(src)
        if self.norm_first:
            h = self.norm1(h)
            x, h = _resid_norm(x, _attention(self.self_attn, h, h, src_mask, src_key_padding_mask, is_causal),
                               self.dropout1, self.norm2)
            return _resid(x, _feed_forward(self, h), self.dropout2)
        y = _resid_norm(x, _attention(self.self_attn, h, h, src_mask, src_key_padding_mask, is_causal),
                        self.dropout1, self.norm1)[1]
        x, h = fork(y)
        return _resid_norm(x, _feed_forward(self, h), self.dropout2, self.norm2)[1]


class TransformerDecoderLayer(torch.nn.TransformerDecoderLayer):
    """Drop-in for :class:`torch.nn.TransformerDecoderLayer` on tritonn kernels."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        tritonize(self)

    @classmethod
    def from_torch(cls, layer: torch.nn.TransformerDecoderLayer) -> "TransformerDecoderLayer":
        return tritonize(copy.deepcopy(layer))

    def forward(self, tgt: Tensor, memory: Tensor, tgt_mask: Tensor | None = None, memory_mask: Tensor | None = None,
                tgt_key_padding_mask: Tensor | None = None, memory_key_padding_mask: Tensor | None = None,
                tgt_is_causal: bool = False, memory_is_causal: bool = False) -> Tensor:
        x, h = fork(tgt)
        if self.norm_first:
            h = self.norm1(h)
            x, h = _resid_norm(x, _attention(self.self_attn, h, h, tgt_mask, tgt_key_padding_mask, tgt_is_causal),
                               self.dropout1, self.norm2)
            x, h = _resid_norm(x, _attention(self.multihead_attn, h, memory, memory_mask, memory_key_padding_mask,
                                             memory_is_causal), self.dropout2, self.norm3)
            return _resid(x, _feed_forward(self, h), self.dropout3)
        y = _resid_norm(x, _attention(self.self_attn, h, h, tgt_mask, tgt_key_padding_mask, tgt_is_causal),
                        self.dropout1, self.norm1)[1]
        x, h = fork(y)
        y = _resid_norm(x, _attention(self.multihead_attn, h, memory, memory_mask, memory_key_padding_mask,
                                      memory_is_causal), self.dropout2, self.norm2)[1]
        x, h = fork(y)
        return _resid_norm(x, _feed_forward(self, h), self.dropout3, self.norm3)[1]


class TransformerEncoder(torch.nn.TransformerEncoder):
    """Drop-in for :class:`torch.nn.TransformerEncoder`: a torch (or tritonn) layer is
    cloned ``num_layers`` times as tritonn layers. ``norm`` is used as given, as torch
    does (the same object), its torch submodules turned into their tritonn twins in
    place. No nested tensors. ``is_causal=None`` detects a causal ``mask`` like torch
    (one comparison of the mask), so attention can skip the masked tiles."""

    def __init__(self, encoder_layer, num_layers, norm=None, enable_nested_tensor=True, mask_check=True):
        super().__init__(encoder_layer, num_layers, norm, enable_nested_tensor=False, mask_check=mask_check)
        self.enable_nested_tensor = enable_nested_tensor
        self.use_nested_tensor = False
        tritonize(self)

    def forward(self, src: Tensor, mask: Tensor | None = None, src_key_padding_mask: Tensor | None = None,
                is_causal: bool | None = None) -> Tensor:
        is_causal = _detect_is_causal_mask(mask, is_causal, _get_seq_len(src, self.layers[0].self_attn.batch_first))
        out = src
        for mod in self.layers:
            out = mod(out, src_mask=mask, is_causal=is_causal, src_key_padding_mask=src_key_padding_mask)
        if self.norm is not None:
            out = self.norm(out)
        return out


class TransformerDecoder(torch.nn.TransformerDecoder):
    """Drop-in for :class:`torch.nn.TransformerDecoder`, built like TransformerEncoder."""

    def __init__(self, decoder_layer, num_layers, norm=None):
        super().__init__(decoder_layer, num_layers, norm)
        tritonize(self)

    def forward(self, tgt: Tensor, memory: Tensor, tgt_mask: Tensor | None = None, memory_mask: Tensor | None = None,
                tgt_key_padding_mask: Tensor | None = None, memory_key_padding_mask: Tensor | None = None,
                tgt_is_causal: bool | None = None, memory_is_causal: bool = False) -> Tensor:
        seq_len = _get_seq_len(tgt, self.layers[0].self_attn.batch_first)
        tgt_is_causal = _detect_is_causal_mask(tgt_mask, tgt_is_causal, seq_len)
        out = tgt
        for mod in self.layers:
            out = mod(out, memory, tgt_mask=tgt_mask, memory_mask=memory_mask,
                      tgt_key_padding_mask=tgt_key_padding_mask, memory_key_padding_mask=memory_key_padding_mask,
                      tgt_is_causal=tgt_is_causal, memory_is_causal=memory_is_causal)
        if self.norm is not None:
            out = self.norm(out)
        return out


class Transformer(torch.nn.Transformer):
    """Drop-in for :class:`torch.nn.Transformer` on tritonn layers. A custom encoder or
    decoder is used as given, as torch does (the same object); torch modules inside it
    become their tritonn twins in place. ``forward`` and
    ``generate_square_subsequent_mask`` are torch's."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        tritonize(self)
