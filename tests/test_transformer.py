"""tritonn's Transformer family against torch's in float64.

Every case compares the output and the gradients of the inputs and of every
parameter (tritonn.testing's rule), the tritonn module loaded with the torch
module's state_dict and both called through torch.func.functional_call.
"""

import copy

import pytest
import torch
import torch.nn.functional as F

import tritonn
import tritonn.functional as TF

from .helpers import GLUE_OPS, _Watch, compare, no_native_compute, raises_like_torch

F64 = torch.float64
E, H, FF = 16, 2, 24


def _custom_act(x):  # not fused: applied as given
    return x * torch.sigmoid(x)


def _pair(torch_cls, tritonn_cls, *args, **kwargs):
    ref = torch_cls(*args, **kwargs)
    ours = tritonn_cls(*args, **kwargs)
    ours.load_state_dict(ref.state_dict())
    return ours, ref


def _compare_modules(ours, ref, inputs: dict, call, dtype=torch.float32, reduction=32):
    """inputs: name -> float64 tensor (leaves; floating ones with grad unless a mask);
    call(module, **inputs) -> output."""
    names = [n for n, _ in ref.named_parameters()]
    leaves = dict(inputs)
    leaves.update({"p_" + n.replace(".", "_"): p.detach().double().requires_grad_() for n, p in ref.named_parameters()})

    def make(mod):
        def f(**kw):
            dt = next(v.dtype for k, v in kw.items() if k.startswith("p_"))
            mod.to(dt)
            params = {n: kw["p_" + n.replace(".", "_")] for n in names}
            ins = {k: v for k, v in kw.items() if not k.startswith("p_")}
            return torch.func.functional_call(mod, params, (), ins) if False else _call(mod, params, ins)
        return f

    def _call(mod, params, ins):
        class Wrap(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.m = mod

            def forward(self, **kw):
                return call(self.m, **kw)
        return torch.func.functional_call(Wrap(), {"m." + n: p for n, p in params.items()}, (), ins)

    red = {k: reduction for k in leaves} | {"out0": reduction}
    return compare(make(ours), make(ref), leaves, dtype, "cpu", reductions=red)


def _x(*shape):
    return torch.randn(*shape, dtype=F64).requires_grad_()


def _enc_call(m, src, mask=None, kpm=None, is_causal=False):
    return m(src, src_mask=mask, src_key_padding_mask=kpm, is_causal=is_causal)


ACTIVATIONS = ["relu", "gelu", F.relu, F.gelu, _custom_act]


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ACTIVATIONS, ids=["relu", "gelu", "F.relu", "F.gelu", "custom"])
def test_encoder_layer_activations(norm_first, activation):
    ours, ref = _pair(torch.nn.TransformerEncoderLayer, tritonn.TransformerEncoderLayer, E, H, FF, dropout=0.0,
                      activation=activation, norm_first=norm_first, batch_first=True)
    _compare_modules(ours, ref, {"src": _x(2, 5, E)}, _enc_call)


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
def test_encoder_layer_masks_bias_free(norm_first, batch_first):
    S = 7
    ours, ref = _pair(torch.nn.TransformerEncoderLayer, tritonn.TransformerEncoderLayer, E, H, 12, dropout=0.0,
                      norm_first=norm_first, batch_first=batch_first, bias=False, layer_norm_eps=1e-4)
    src = _x(2, S, E) if batch_first else _x(S, 2, E)
    mask = torch.randn(S, S, dtype=F64)
    kpm = torch.zeros(2, S, dtype=torch.bool)
    kpm[0, -2:] = True
    _compare_modules(ours, ref, {"src": src, "mask": mask, "kpm": kpm}, _enc_call)


@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_layer_causal_and_unbatched(norm_first):
    S = 3
    ours, ref = _pair(torch.nn.TransformerEncoderLayer, tritonn.TransformerEncoderLayer, E, H, FF, dropout=0.0,
                      norm_first=norm_first)
    mask = torch.nn.Transformer.generate_square_subsequent_mask(S, dtype=F64)
    _compare_modules(ours, ref, {"src": _x(S, 2, E), "mask": mask},
                     lambda m, src, mask: _enc_call(m, src, mask, is_causal=True))
    _compare_modules(ours, ref, {"src": _x(5, E)}, _enc_call)


def _dec_call(m, tgt, memory, tgt_mask=None, memory_mask=None, tkpm=None, mkpm=None, tgt_is_causal=False):
    return m(tgt, memory, tgt_mask=tgt_mask, memory_mask=memory_mask, tgt_key_padding_mask=tkpm,
             memory_key_padding_mask=mkpm, tgt_is_causal=tgt_is_causal)


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
def test_decoder_layer(norm_first, batch_first):
    T, S = 5, 3
    ours, ref = _pair(torch.nn.TransformerDecoderLayer, tritonn.TransformerDecoderLayer, E, H, FF, dropout=0.0,
                      norm_first=norm_first, batch_first=batch_first, activation="gelu")
    shape = (lambda L: (2, L, E)) if batch_first else (lambda L: (L, 2, E))
    tgt_mask = torch.nn.Transformer.generate_square_subsequent_mask(T, dtype=F64)
    mkpm = torch.zeros(2, S, dtype=torch.bool)
    mkpm[1, -1] = True
    inputs = {"tgt": _x(*shape(T)), "memory": _x(*shape(S)), "tgt_mask": tgt_mask,
              "memory_mask": torch.randn(T, S, dtype=F64), "mkpm": mkpm}
    _compare_modules(ours, ref, inputs, lambda m, **kw: _dec_call(m, **kw, tgt_is_causal=True))


def test_decoder_layer_unbatched_custom_activation():
    ours, ref = _pair(torch.nn.TransformerDecoderLayer, tritonn.TransformerDecoderLayer, E, H, FF, dropout=0.0,
                      activation=_custom_act, bias=False)
    _compare_modules(ours, ref, {"tgt": _x(4, E), "memory": _x(3, E)}, _dec_call)


def test_encoder_stack_from_torch_layer():
    layer = torch.nn.TransformerEncoderLayer(E, H, FF, dropout=0.0, norm_first=True)
    norm = torch.nn.LayerNorm(E)
    ref = torch.nn.TransformerEncoder(layer, 2, norm, enable_nested_tensor=False)
    ours = tritonn.TransformerEncoder(layer, 2, torch.nn.LayerNorm(E))
    assert type(layer) is torch.nn.TransformerEncoderLayer  # cloned, as torch clones it
    assert all(type(m) is tritonn.TransformerEncoderLayer for m in ours.layers)
    assert type(ours.norm) is tritonn.LayerNorm and type(ours.layers[0].linear1) is tritonn.Linear
    assert ref.norm is norm  # torch keeps the caller's norm; so does tritonn, converted in place
    shared = torch.nn.LayerNorm(E)
    assert tritonn.TransformerEncoder(layer, 1, shared).norm is shared and type(shared) is tritonn.LayerNorm
    ours.load_state_dict(ref.state_dict())
    S = 5
    kpm = torch.zeros(2, S, dtype=torch.bool)
    kpm[1, 0] = True
    _compare_modules(ours, ref, {"src": _x(S, 2, E), "src_key_padding_mask": kpm},
                     lambda m, src, src_key_padding_mask: m(src, src_key_padding_mask=src_key_padding_mask))


def test_decoder_stack_from_torch_layer():
    layer = torch.nn.TransformerDecoderLayer(E, H, FF, dropout=0.0, batch_first=True)
    ref = torch.nn.TransformerDecoder(layer, 2, torch.nn.LayerNorm(E))
    ours = tritonn.TransformerDecoder(layer, 2, torch.nn.LayerNorm(E))
    ours.load_state_dict(ref.state_dict())
    T = 5
    mask = torch.nn.Transformer.generate_square_subsequent_mask(T, dtype=F64)
    _compare_modules(ours, ref, {"tgt": _x(2, T, E), "memory": _x(2, 3, E), "tgt_mask": mask},
                     lambda m, tgt, memory, tgt_mask: m(tgt, memory, tgt_mask=tgt_mask, tgt_is_causal=True))


@pytest.mark.parametrize("given", [None, False, True])
def test_containers_detect_a_causal_mask_like_torch(given):
    """is_causal=None: the containers compare the mask with the causal one, as torch does,
    and hand the layers the same flag torch hands them."""
    S = 5
    causal = torch.nn.Transformer.generate_square_subsequent_mask(S, dtype=F64)
    other = causal.clone()
    other[0, 1] = 0.0
    for mask in (causal, other, None):
        if given and mask is None:
            continue  # torch raises for is_causal=True without a mask
        layer = torch.nn.TransformerEncoderLayer(E, H, FF, dropout=0.0, batch_first=True)
        ref = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).double()
        ours = tritonn.TransformerEncoder(layer, 2).double()
        ours.load_state_dict(ref.state_dict())
        seen = {}
        for name, model in (("torch", ref), ("tritonn", ours)):
            model.layers[0].register_forward_pre_hook(
                lambda m, a, kw, name=name: seen.__setitem__(name, kw["is_causal"]), with_kwargs=True)
        x = _x(2, S, E)
        torch.testing.assert_close(ours(x, mask=mask, is_causal=given), ref(x, mask=mask, is_causal=given))
        assert seen["tritonn"] == seen["torch"] == (given if given is not None else mask is causal)
        tgt, mem = _x(S, 2, E), _x(3, 2, E)
        ref = torch.nn.TransformerDecoder(torch.nn.TransformerDecoderLayer(E, H, FF, dropout=0.0), 1).double()
        ours = tritonn.TransformerDecoder(torch.nn.TransformerDecoderLayer(E, H, FF, dropout=0.0), 1).double()
        ours.load_state_dict(ref.state_dict())
        for name, model in (("torch", ref), ("tritonn", ours)):
            model.layers[0].register_forward_pre_hook(
                lambda m, a, kw, name=name: seen.__setitem__(name, kw["tgt_is_causal"]), with_kwargs=True)
        torch.testing.assert_close(ours(tgt, mem, tgt_mask=mask, tgt_is_causal=given),
                                   ref(tgt, mem, tgt_mask=mask, tgt_is_causal=given))
        assert seen["tritonn"] == seen["torch"] == (given if given is not None else mask is causal)


def test_transformer_full():
    kw = dict(d_model=E, nhead=H, num_encoder_layers=2, num_decoder_layers=1, dim_feedforward=FF, dropout=0.0,
              batch_first=True)
    ours, ref = _pair(torch.nn.Transformer, tritonn.Transformer, **kw)
    assert ours.state_dict().keys() == ref.state_dict().keys()
    assert type(ours.encoder) is tritonn.TransformerEncoder and type(ours.decoder.norm) is tritonn.LayerNorm
    T = 3
    mask = tritonn.Transformer.generate_square_subsequent_mask(T, dtype=F64)
    _compare_modules(ours, ref, {"src": _x(2, 5, E), "tgt": _x(2, T, E), "tgt_mask": mask},
                     lambda m, src, tgt, tgt_mask: m(src, tgt, tgt_mask=tgt_mask), reduction=64)


def test_transformer_custom_encoder_decoder():
    enc = torch.nn.TransformerEncoder(torch.nn.TransformerEncoderLayer(E, H, FF, dropout=0.0), 1)
    dec = torch.nn.TransformerDecoder(torch.nn.TransformerDecoderLayer(E, H, FF, dropout=0.0, norm_first=True), 1,
                                      torch.nn.LayerNorm(E))
    ref = torch.nn.Transformer(E, H, custom_encoder=enc, custom_decoder=dec)
    assert ref.encoder is enc and ref.decoder is dec
    ours = tritonn.Transformer(E, H, custom_encoder=copy.deepcopy(enc), custom_decoder=copy.deepcopy(dec))
    assert type(ours.encoder.layers[0].self_attn) is tritonn.MultiheadAttention
    assert type(ours.decoder.norm) is tritonn.LayerNorm
    ours.load_state_dict(ref.state_dict())
    _compare_modules(ours, ref, {"src": _x(4, 2, E), "tgt": _x(3, 2, E)}, lambda m, src, tgt: m(src, tgt),
                     reduction=64)


def test_modules_like_torch():
    ref = torch.nn.TransformerEncoderLayer(E, H, FF, activation="gelu")
    ours = tritonn.TransformerEncoderLayer(E, H, FF, activation="gelu")
    assert isinstance(ours, torch.nn.TransformerEncoderLayer)
    assert ours.state_dict().keys() == ref.state_dict().keys()
    assert [n for n, _ in ours.named_modules()] == [n for n, _ in ref.named_modules()]
    assert type(ours.norm1) is tritonn.LayerNorm and type(ours.self_attn) is tritonn.MultiheadAttention
    assert type(ours.dropout) is tritonn.Dropout
    copied = tritonn.TransformerEncoderLayer.from_torch(ref)
    assert type(ref.linear1) is torch.nn.Linear and type(copied.linear1) is tritonn.Linear
    assert torch.equal(copied.linear1.weight, ref.linear1.weight)


def test_never_takes_torch_fast_path(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("torch fast path taken")

    monkeypatch.setattr(torch, "_transformer_encoder_layer_fwd", boom)
    ref = torch.nn.TransformerEncoderLayer(E, H, FF, batch_first=True).eval()
    ours = tritonn.TransformerEncoderLayer(E, H, FF, batch_first=True).eval()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, 5, E)
    with torch.no_grad():
        y = ours(x)
        enc = tritonn.TransformerEncoder(ours, 2).eval()
        enc(x)
    monkeypatch.undo()
    with torch.no_grad():
        torch.testing.assert_close(y, ref(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_layer_no_native_compute(norm_first):
    m = tritonn.TransformerEncoderLayer(E, H, FF, dropout=0.0, batch_first=True, norm_first=norm_first,
                                        activation="gelu")
    x = torch.randn(2, 5, E, requires_grad=True)
    g = torch.randn(2, 5, E)
    with no_native_compute():
        m(x).backward(g)
    m = tritonn.TransformerDecoderLayer(E, H, FF, dropout=0.0, norm_first=norm_first, batch_first=True)
    memory = torch.randn(2, 3, E, requires_grad=True)
    x = x.detach().requires_grad_()  # a fresh leaf: accumulating into x.grad would be autograd's add
    with no_native_compute():  # cross-attention included: q and kv project from one packed weight
        m(x, memory).backward(g)


def test_encoder_layer_dropout_no_native_compute():
    """With dropout: only the seed draws (randint, .item()) besides glue."""
    m = tritonn.TransformerEncoderLayer(E, H, FF, dropout=0.25)
    x = torch.randn(5, 2, E, requires_grad=True)
    g = torch.randn(5, 2, E)
    with _Watch() as watch:
        m(x).backward(g)
    assert set(watch.ops) - GLUE_OPS <= {"randint", "_local_scalar_dense"}


# ---------------------------------------------------------------- dropout


def test_dropout_train_eval_and_statistics():
    p = 0.3
    x = torch.randn(64, 257, requires_grad=True)
    assert TF.dropout(x, p, training=False) is x
    torch.manual_seed(1)
    y = TF.dropout(x, p)
    torch.manual_seed(1)
    assert torch.equal(y, TF.dropout(x, p))  # torch's generator picks the seed
    kept = y != 0
    frac = 1 - kept.double().mean().item()
    assert abs(frac - p) < 4 * (p * (1 - p) / x.numel()) ** 0.5
    torch.testing.assert_close(y[kept], x[kept] / (1 - p))
    g = torch.randn_like(x)
    y.backward(g)
    torch.testing.assert_close(x.grad, torch.where(kept, g / (1 - p), torch.zeros_like(g)))
    assert (TF.dropout(x, 1.0) == 0).all()
    with pytest.raises(ValueError):
        TF.dropout(x, 1.5)


def test_dropout_of_nan_and_inf_is_nan_like_torch():
    """torch multiplies by the mask: a dropped NaN or inf gives NaN, not 0 (p = 1 too)."""
    from tritonn.ops.dropout import residual_dropout

    x = torch.tensor([float("nan"), float("inf"), -float("inf")] * 40)
    for p in (0.5, 1.0):
        for y in (TF.dropout(x, p), residual_dropout(torch.zeros_like(x), x, p, True),
                  TF.linear(x.view(-1, 1), torch.ones(1, 1), dropout=p).view(-1)):
            kept = ~y.isnan()
            assert torch.equal(y[kept], x[kept] / (1 - p)), (p, y)
            assert (~kept).any()  # dropped ones: NaN, as torch.nn.functional.dropout gives
    assert torch.nn.functional.dropout(x, 1.0).isnan().all()


def test_dropout_keeps_the_layout_and_refuses_integers_like_torch():
    x = torch.randn(2, 3, 4, 4).to(memory_format=torch.channels_last).requires_grad_()
    y = TF.dropout(x, 0.5)
    assert y.is_contiguous(memory_format=torch.channels_last)  # torch keeps a dense layout
    g = torch.randn(2, 3, 4, 4)  # contiguous: the backward redraws the mask in the forward's layout
    y.backward(g)
    torch.testing.assert_close(x.grad, torch.where(y != 0, g * 2, torch.zeros_like(g)))
    for bad in (torch.arange(4), torch.ones(3, dtype=torch.bool)):
        msg = raises_like_torch(lambda: TF.dropout(bad, 0.5), lambda: F.dropout(bad, 0.5))
        assert "result type Float" in msg


def test_encoder_layer_dropout_train_eval():
    ref = torch.nn.TransformerEncoderLayer(E, H, FF, dropout=0.5)
    ours = tritonn.TransformerEncoderLayer(E, H, FF, dropout=0.5)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(5, 2, E)
    y1, y2 = ours(x), ours(x)
    assert not torch.equal(y1, y2)  # fresh masks each call
    torch.manual_seed(3)
    a = ours(x)
    torch.manual_seed(3)
    assert torch.equal(a, ours(x))
    ours.eval()
    ref.eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=1e-5)


def test_residual_dropout_statistics_and_grads():
    from tritonn.ops.dropout import residual_dropout

    p = 0.25
    r = torch.randn(40, 101, requires_grad=True)
    x = torch.randn(40, 101, requires_grad=True)
    y = residual_dropout(r, x, p, True)
    d = y.detach() - r.detach()
    kept = d != 0
    assert abs((1 - kept.double().mean().item()) - p) < 4 * (p * (1 - p) / x.numel()) ** 0.5
    torch.testing.assert_close(d[kept], x.detach()[kept] / (1 - p))
    g = torch.randn_like(y)
    y.backward(g)
    torch.testing.assert_close(r.grad, g)
    torch.testing.assert_close(x.grad, torch.where(kept, g / (1 - p), torch.zeros_like(g)))


def test_float64_dropout_scale_is_float64():
    """1/(1-p) reaches the kernels as a float pair: a lone float argument is float32,
    which would leave float64 dropout off by ~5e-8 (relative) in every kept element;
    the pair carries 48 bits of the scale (2^-47 ~ 7e-15)."""
    from tritonn.ops.dropout import residual_dropout
    from tritonn.ops.layer_norm import add_dropout_layer_norm

    p = 0.1
    x = torch.randn(16, 64, dtype=F64, requires_grad=True)
    r = torch.zeros_like(x)
    exact = x.detach() / (1 - p)
    outputs = {"dropout": TF.dropout(x, p), "residual_dropout": residual_dropout(r, x, p, True),
               "add_dropout_layer_norm": add_dropout_layer_norm(r, x, 64, None, None, 1e-5, p)[0]}
    for name, y in outputs.items():
        kept = y.detach() != 0
        assert kept.any() and not kept.all(), name
        torch.testing.assert_close(y.detach()[kept], exact[kept], rtol=1e-14, atol=0, msg=name)
    g = torch.randn_like(x)
    outputs["dropout"].backward(g)
    kept = outputs["dropout"].detach() != 0
    torch.testing.assert_close(x.grad[kept], (g / (1 - p))[kept], rtol=1e-14, atol=0)


def test_encoder_layer_under_autocast_matches_torch_dtype(device):
    torch.manual_seed(0)
    theirs = torch.nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0).to(device)
    ours = tritonn.TransformerEncoderLayer(8, 2, 16, dropout=0.0).to(device)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(5, 2, 8, device=device)
    with torch.autocast(device_type=device, dtype=torch.bfloat16):
        y, y_ref = ours(x), theirs(x)
    assert y.dtype == y_ref.dtype
    assert torch.allclose(y.float(), y_ref.float(), atol=0.1)


def test_hooked_or_replaced_submodules_are_called_not_fused():
    """Fused paths read submodules' parameters; a hook (weight_norm, pruning, LoRA-style
    wrappers) must still run, so hooked submodules are called instead."""
    torch.manual_seed(0)
    for norm_first in (False, True):
        theirs = torch.nn.TransformerEncoderLayer(E, H, FF, dropout=0.0, norm_first=norm_first).double()
        ours = tritonn.TransformerEncoderLayer(E, H, FF, dropout=0.0, norm_first=norm_first).double()
        ours.load_state_dict(theirs.state_dict())
        for layer in (theirs, ours):
            for name in ("linear1", "norm1", "norm2", "dropout"):
                getattr(layer, name).register_forward_hook(lambda m, i, o: o * 1.5 + 0.25)
        x = torch.randn(5, 2, E, dtype=torch.float64)
        assert torch.allclose(ours(x), theirs(x), atol=1e-10)


def test_transformer_accepts_torch_positional_arguments():
    enc = torch.nn.TransformerEncoder(torch.nn.TransformerEncoderLayer(E, H, FF), 1)
    dec = torch.nn.TransformerDecoder(torch.nn.TransformerDecoderLayer(E, H, FF), 1)
    model = tritonn.Transformer(E, H, 1, 1, FF, 0.1, "relu", enc, dec)
    assert model.encoder is enc and model.decoder is dec  # the caller's objects, as in torch
    assert type(enc) is tritonn.TransformerEncoder and type(enc.layers[0]) is tritonn.TransformerEncoderLayer
    assert type(dec.layers[0].multihead_attn) is tritonn.MultiheadAttention
