"""tritonn.convert on nested models, and checkpoint / copy behaviour of tritonn modules.

Models run in float64 on the CPU, so tritonn and torch agree to rounding
(``assert_close`` with tolerances far below any real bug, far above float64 rounding).
"""

import copy
import io
import pickle

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

import tritonn
import tritonn.nn as tnn
from tritonn.convert import ConvertReport, supported

F64 = torch.float64
TOL = dict(rtol=1e-9, atol=1e-9)


# ----------------------------------------------------------------------------- models
class CNN(nn.Module):
    """Conv2d (grouped), BatchNorm2d, ReLU, MaxPool2d, Linear in nested containers."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=2), nn.MaxPool2d(2)),
        )
        self.blocks = nn.ModuleDict({
            "a": nn.ModuleList([nn.Conv2d(4, 4, 1, groups=4), nn.BatchNorm2d(4)]),
            "pool": nn.MaxPool2d(2, stride=1),
        })
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4 * 3 * 3, 5), nn.ReLU(), nn.Linear(5, 3))

    def forward(self, x):
        x = self.stem(x)
        for m in self.blocks["a"]:
            x = m(x)
        x = self.blocks["pool"](x)
        return self.head(x)


class SeqModel(nn.Module):
    """LSTM, then self-attention, then a Linear."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(4, 6, num_layers=2, batch_first=True, bidirectional=True)
        self.attn = nn.MultiheadAttention(12, 2, batch_first=True)
        self.out = nn.Linear(12, 3)

    def forward(self, x):
        h, _ = self.lstm(x)
        a, _ = self.attn(h, h, h, need_weights=False)
        return self.out(a + h)


class MyLinear(nn.Linear):
    """A user subclass with its own forward: must be left alone."""

    def forward(self, x):
        return super().forward(x) * 2


class PlainSubLinear(nn.Linear):
    """A user subclass without its own forward: also left alone (exact types only)."""


def _cnn():
    return CNN().to(F64)


def _seq():
    return SeqModel().to(F64)


def _cnn_x():
    return torch.randn(2, 3, 8, 8, dtype=F64)


def _seq_x():
    return torch.randn(2, 5, 4, dtype=F64)


def _grads(model):
    return {n: p.grad for n, p in model.named_parameters()}


def assert_same_run(ours, theirs, x):
    """Same outputs, input gradient and parameter gradients."""
    xo, xt = x.clone().requires_grad_(), x.clone().requires_grad_()
    yo, yt = ours(xo), theirs(xt)
    torch.testing.assert_close(yo, yt, **TOL)
    g = torch.randn_like(yt)
    yo.backward(g)
    yt.backward(g)
    torch.testing.assert_close(xo.grad, xt.grad, **TOL)
    go, gt = _grads(ours), _grads(theirs)
    assert go.keys() == gt.keys()
    for n in gt:
        torch.testing.assert_close(go[n], gt[n], **TOL, msg=lambda m, n=n: f"grad {n}: {m}")


def expected_twins(model):
    """{name: tritonn class} for the modules convert must replace (exact types)."""
    mapping = supported()
    return {n: mapping[type(m)] for n, m in model.named_modules() if type(m) in mapping}


def assert_converted(converted, expected):
    mods = dict(converted.named_modules())
    for name, twin in expected.items():
        assert type(mods[name]) is twin, f"{name}: {type(mods[name])}, expected {twin}"


# ----------------------------------------------------------------------------- mapping
def test_mapping_is_discovered_from_tritonn_nn():
    mapping = supported()
    for name in tnn.__all__:
        cls = getattr(tnn, name)
        torch_base = next(b for b in cls.__bases__ if b.__module__.startswith("torch.nn"))
        assert mapping[torch_base] is cls
    for torch_cls in (nn.Linear, nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.LSTM, nn.MultiheadAttention):
        assert torch_cls in mapping


# ----------------------------------------------------------------------------- models, end to end
def test_cnn_convert_copy():
    torch_model = _cnn()
    before = copy.deepcopy(torch_model.state_dict())
    expected = expected_twins(torch_model)
    assert len(expected) == 9  # 3 Conv2d, 2 BatchNorm2d, 2 MaxPool2d, 2 Linear
    model = tritonn.convert(torch_model)
    assert model is not torch_model
    assert_converted(model, expected)
    # The original keeps its classes, and shares no tensor with the copy.
    for m in torch_model.modules():
        assert not isinstance(m, tuple(supported().values()))
    ours = {id(t) for t in [*model.parameters(), *model.buffers()]}
    assert not ours & {id(t) for t in [*torch_model.parameters(), *torch_model.buffers()]}
    assert not {p.data_ptr() for p in model.parameters()} & {p.data_ptr() for p in torch_model.parameters()}
    # Training mode: batch statistics, running statistics updated alike.
    x = _cnn_x()
    assert_same_run(model, torch_model, x)
    for (n, a), (_, b) in zip(model.named_buffers(), torch_model.named_buffers()):
        torch.testing.assert_close(a, b, **TOL, msg=lambda m, n=n: f"buffer {n}: {m}")
    assert not torch.equal(torch_model.state_dict()["stem.1.running_mean"], before["stem.1.running_mean"])
    # Eval mode.
    model.eval(), torch_model.eval()
    for p in [*model.parameters(), *torch_model.parameters()]:
        p.grad = None
    assert_same_run(model, torch_model, x)


def test_seq_convert_lstm_attention():
    torch_model = _seq()
    model, rep = tritonn.convert(torch_model, report=True)
    assert type(model.lstm) is tritonn.LSTM
    assert type(model.attn) is tritonn.MultiheadAttention
    assert type(model.out) is tritonn.Linear
    # LSTM's flattened weights are the module's own parameters.
    assert all(w is getattr(model.lstm, n) for w, n in zip(model.lstm._flat_weights, model.lstm._flat_weights_names))
    assert_same_run(model, torch_model, _seq_x())
    # MultiheadAttention's out_proj is a torch subclass of Linear, only read for its weights.
    left = {n: reason for n, _, reason in rep.left}
    assert "out_proj" in left["attn.out_proj"]


def test_transformer_encoder_recursion():
    layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0, batch_first=True)
    torch_model = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False).to(F64)
    expected = expected_twins(torch_model)
    assert {"layers.0.self_attn", "layers.1.linear2"} <= expected.keys()
    model = tritonn.convert(torch_model)
    assert_converted(model, expected)
    assert_same_run(model, torch_model, torch.randn(2, 3, 8, dtype=F64))


def test_inplace_keeps_objects():
    model = _seq()
    params = dict(model.named_parameters())
    lstm, flat = model.lstm, model.lstm._flat_weights
    out = tritonn.convert(model, inplace=True)
    assert out is model
    assert model.lstm is lstm and type(lstm) is tritonn.LSTM  # outside references now see the twin
    assert model.lstm._flat_weights is flat
    for n, p in model.named_parameters():
        assert p is params[n], n
    # The optimizer built on the torch model still trains the converted one.
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    w = model.out.weight.detach().clone()
    model(_seq_x()).sum().backward()
    opt.step()
    assert not torch.equal(model.out.weight, w)


def test_root_module_and_shared_modules():
    lin = nn.Linear(3, 3).to(F64)
    assert type(tritonn.convert(lin)) is tritonn.Linear
    shared = nn.Linear(3, 3).to(F64)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    out, rep = tritonn.convert(model, report=True)
    assert out[0] is out[2] and type(out[0]) is tritonn.Linear
    assert [r[0] for r in rep.replaced] == ["0"]
    assert tritonn.convert(out, report=True)[1].replaced == []  # already converted: nothing to do


def test_mode_device_dtype_memory_format_preserved():
    model = _cnn()
    model.stem[0].to(memory_format=torch.channels_last)
    model.stem[1].eval()
    model.head[1].float()
    model.head.requires_grad_(False)
    conv = tritonn.convert(model)
    assert conv.training and not conv.stem[1].training and conv.stem[3][0].training
    assert conv.stem[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert not conv.stem[0].weight.is_contiguous()
    assert conv.head[1].weight.dtype == torch.float32 and conv.head[3].weight.dtype == F64
    assert conv.stem[1].running_mean.dtype == F64
    assert all(p.device == q.device for p, q in zip(conv.parameters(), model.parameters()))
    assert [p.requires_grad for p in conv.parameters()] == [p.requires_grad for p in model.parameters()]


@pytest.mark.parametrize("inplace", [False, True])
def test_hooks_preserved(inplace):
    model = _seq()
    calls = []
    model.out.register_forward_pre_hook(lambda m, args: calls.append(("pre", type(m))))
    model.out.register_forward_hook(lambda m, args, out: calls.append(("fwd", type(m))))
    model.out.register_full_backward_hook(lambda m, gin, gout: calls.append(("bwd", type(m))))
    model.lstm.register_forward_hook(lambda m, args, out: calls.append(("lstm", type(m))))
    # A hook changing the output keeps doing so.
    model.attn.register_forward_hook(lambda m, args, out: (out[0] * 0, out[1]))
    conv = tritonn.convert(model, inplace=inplace)
    conv(_seq_x()).sum().backward()
    assert calls == [("lstm", tritonn.LSTM), ("pre", tritonn.Linear), ("fwd", tritonn.Linear),
                     ("bwd", tritonn.Linear)]
    assert torch.count_nonzero(conv.attn.in_proj_weight.grad) == 0  # attention output zeroed by the hook


def test_parametrized_module():
    class Sym(nn.Module):
        def forward(self, w):
            return (w + w.T) / 2

    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU()).to(F64)
    parametrize.register_parametrization(model[0], "weight", Sym())
    x = torch.randn(3, 4, dtype=F64)
    want = model(x)
    conv, rep = tritonn.convert(model, report=True)
    assert isinstance(conv[0], tritonn.Linear) and parametrize.is_parametrized(conv[0], "weight")
    assert rep.replaced == [("0", "torch.nn.Linear (parametrized)", "tritonn.Linear")]
    torch.testing.assert_close(conv(x), want, **TOL)
    torch.testing.assert_close(conv[0].weight, conv[0].weight.T)
    parametrize.remove_parametrizations(conv[0], "weight")
    assert type(conv[0]) is tritonn.Linear


# ----------------------------------------------------------------------------- report
def test_subclasses_left_alone_and_report():
    model = nn.Sequential(MyLinear(4, 4), PlainSubLinear(4, 4), nn.ReLU(), nn.Sequential(nn.Linear(4, 2))).to(F64)
    conv, rep = tritonn.convert(model, report=True)
    assert isinstance(rep, ConvertReport)
    assert type(conv[0]) is MyLinear and type(conv[1]) is PlainSubLinear and type(conv[3][0]) is tritonn.Linear
    assert rep.replaced == [("3.0", "torch.nn.Linear", "tritonn.Linear")]
    left = {n: (cls, reason) for n, cls, reason in rep.left}
    assert set(left) == {"0", "1", "2"}  # plain containers are not listed
    assert left["0"][0].endswith("MyLinear") and "with its own forward" in left["0"][1]
    assert "torch.nn.Linear" in left["0"][1]
    assert "without its own forward" in left["1"][1]
    assert left["2"] == ("torch.nn.ReLU", "no tritonn twin")
    text = str(rep)
    assert "1 replaced, 3 left as torch" in text and "3.0: torch.nn.Linear -> tritonn.Linear" in text
    torch.testing.assert_close(conv(torch.ones(1, 4, dtype=F64)), model(torch.ones(1, 4, dtype=F64)))


def test_report_false_returns_model_only():
    m = nn.Linear(2, 2)
    assert isinstance(tritonn.convert(m), nn.Linear)
    with pytest.raises(TypeError):
        tritonn.convert(torch.zeros(2))


# ----------------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("make,x", [(_cnn, _cnn_x), (_seq, _seq_x)])
def test_state_dict_round_trip_after_training(make, x):
    x = x()
    torch_model = make()
    model = tritonn.convert(torch_model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model(x).square().sum().backward()
    opt.step()
    # tritonn -> plain torch
    plain = make()
    plain.load_state_dict(model.state_dict())
    model.eval(), plain.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), plain(x), **TOL)
    # plain torch (trained a step) -> tritonn
    plain.train()
    opt = torch.optim.SGD(plain.parameters(), lr=0.1)
    plain(x).square().sum().backward()
    opt.step()
    fresh = tritonn.convert(make())
    fresh.load_state_dict(plain.state_dict())
    fresh.eval(), plain.eval()
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), plain(x), **TOL)


def _saved(model):
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=False)


@pytest.mark.parametrize("how", ["deepcopy", "pickle", "torch.save"])
def test_copies_of_converted_model(how):
    torch_model = _seq()
    model = tritonn.convert(torch_model).eval()
    torch_model.eval()
    copier = {"deepcopy": copy.deepcopy, "pickle": lambda m: pickle.loads(pickle.dumps(m)), "torch.save": _saved}
    clone = copier[how](model)
    assert type(clone.lstm) is tritonn.LSTM and type(clone.attn) is tritonn.MultiheadAttention
    assert all(w is getattr(clone.lstm, n) for w, n in zip(clone.lstm._flat_weights, clone.lstm._flat_weights_names))
    assert not {id(p) for p in clone.parameters()} & {id(p) for p in model.parameters()}
    x = _seq_x()
    with torch.no_grad():
        torch.testing.assert_close(clone(x), torch_model(x), **TOL)
    # The copy's LSTM reads its own weights: changing them changes its output only.
    with torch.no_grad():
        clone.lstm.weight_hh_l0.zero_()
        assert not torch.allclose(clone(x), model(x))


def test_half_and_to_float64():
    torch_model = _seq().float()
    model = tritonn.convert(torch_model).half()
    for t in [*model.parameters(), *model.lstm._flat_weights]:
        assert t.dtype == torch.float16
    model = model.to(torch.float64)
    for t in [*model.parameters(), *model.lstm._flat_weights]:
        assert t.dtype == F64
    assert all(w is getattr(model.lstm, n) for w, n in zip(model.lstm._flat_weights, model.lstm._flat_weights_names))
    assert_same_run(model, torch_model.half().to(F64), _seq_x())  # both rounded through fp16


def test_half_forward_linear():
    lin = nn.Linear(8, 4)
    conv = tritonn.convert(lin).half()
    x = torch.randn(3, 8, dtype=torch.float16)
    torch.testing.assert_close(conv(x), torch.nn.functional.linear(x.double(), lin.weight.double(),
                                                                   lin.bias.double()).half(), rtol=1e-2, atol=1e-2)


def test_frozen():
    torch_model = _cnn()
    model = tritonn.convert(torch_model)
    model.requires_grad_(False)
    torch_model.requires_grad_(False)
    x = _cnn_x()
    xo, xt = x.clone().requires_grad_(), x.clone().requires_grad_()
    yo, yt = model(xo), torch_model(xt)
    torch.testing.assert_close(yo, yt, **TOL)
    yo.sum().backward()
    yt.sum().backward()
    torch.testing.assert_close(xo.grad, xt.grad, **TOL)
    assert all(p.grad is None for p in model.parameters())
    with torch.no_grad():  # frozen and no input grad: no graph at all
        assert not model(x).requires_grad


# ----------------------------------------------------------------------------- every layer
# Constructor arguments (args, kwargs) for every torch class tritonn may replace (planned ones included).
SAMPLES = {
    "Linear": lambda: ((4, 3), {}),
    "Conv2d": lambda: ((4, 6, 3), dict(groups=2)),
    "BatchNorm2d": lambda: ((4,), {}),
    "MaxPool2d": lambda: ((2,), {}),
    "LSTM": lambda: ((3, 4), dict(num_layers=2, proj_size=2, bidirectional=True)),
    "MultiheadAttention": lambda: ((8, 2), dict(kdim=5, vdim=6, add_bias_kv=True)),
    "Dropout": lambda: ((0.25,), {}),
    "LayerNorm": lambda: ((6,), {}),
    "RMSNorm": lambda: ((6,), {}),
    "GroupNorm": lambda: ((2, 4), {}),
    "TransformerEncoderLayer": lambda: ((8, 2, 16), {}),
    "TransformerDecoderLayer": lambda: ((8, 2, 16), {}),
    "TransformerEncoder": lambda: ((nn.TransformerEncoderLayer(8, 2, 16), 2), dict(enable_nested_tensor=False)),
    "TransformerDecoder": lambda: ((nn.TransformerDecoderLayer(8, 2, 16), 2), {}),
    "Transformer": lambda: ((8, 2, 1, 1, 16), dict(batch_first=True)),
}


def _build(cls, name):
    torch.manual_seed(0)
    args, kwargs = SAMPLES[name]()
    return cls(*args, **kwargs)


@pytest.mark.parametrize("torch_cls", sorted(supported(), key=lambda c: c.__name__), ids=lambda c: c.__name__)
def test_every_layer_round_trips(torch_cls):
    assert torch_cls.__name__ in SAMPLES, f"add constructor arguments for {torch_cls.__name__} to SAMPLES"
    twin = supported()[torch_cls]
    name = torch_cls.__name__
    plain = _build(torch_cls, name)
    assert type(plain) is torch_cls
    ours = tritonn.convert(plain)
    assert type(ours) is twin
    # convert runs no constructor: what the twin's own __init__ would build (submodule
    # classes, attributes) must come out of the class swaps alone.
    native = _build(twin, name)
    assert {n: type(m) for n, m in ours.named_modules()} == {n: type(m) for n, m in native.named_modules()}
    for (n, m), (_, k) in zip(ours.named_modules(), native.named_modules()):
        assert set(vars(m)) == set(vars(k)), f"{n}: attributes {set(vars(m)) ^ set(vars(k))} differ"
    # state_dict both ways (values moved off the shared seed first).
    with torch.no_grad():
        for p in [*ours.parameters(), *plain.parameters()]:
            p.add_(torch.rand_like(p))
    sd = ours.state_dict()
    assert list(sd) == list(plain.state_dict())
    back = _build(torch_cls, name)
    back.load_state_dict(sd)
    for k, v in back.state_dict().items():
        assert torch.equal(v, sd[k]), k
    again = tritonn.convert(_build(torch_cls, name))
    again.load_state_dict(plain.state_dict())
    assert all(torch.equal(v, plain.state_dict()[k]) for k, v in again.state_dict().items())
    # Whole-module copies keep the class and the values.
    for clone in (copy.deepcopy(ours), pickle.loads(pickle.dumps(ours)), _saved(ours)):
        assert type(clone) is twin
        for k, v in clone.state_dict().items():
            assert torch.equal(v, sd[k]), k
    # dtype moves and freezing.
    half = copy.deepcopy(ours).half()
    assert type(half) is twin and all(p.dtype == torch.float16 for p in half.parameters())
    dbl = copy.deepcopy(ours).to(torch.float64)
    assert all(p.dtype == F64 for p in dbl.parameters())
    frozen = copy.deepcopy(ours).requires_grad_(False)
    assert not any(p.requires_grad for p in frozen.parameters())
    assert repr(ours) == repr(plain)


IN_PLACE_CASES = {
    "linear": (lambda: nn.Linear(4, 5), (2, 3, 4)),
    "conv1x1": (lambda: nn.Conv2d(3, 4, 1), (2, 3, 4, 4)),
    "batch_norm": (lambda: nn.BatchNorm2d(3), (2, 3, 4, 4)),
    "max_pool": (lambda: nn.MaxPool2d(2), (2, 3, 4, 4)),
    "layer_norm": (lambda: nn.LayerNorm(4), (3, 4)),
    "encoder_layer": (lambda: nn.TransformerEncoderLayer(4, 2, 8, dropout=0.0), (3, 2, 4)),
}


@pytest.mark.parametrize("case", list(IN_PLACE_CASES))
def test_in_place_ops_on_layer_outputs_like_torch(case):
    """nn.ReLU(inplace=True) after a layer (VGG's classifier, ResNet's stem): a layer's
    output must not be a view made inside an autograd Function, which autograd would
    refuse to modify in place."""
    make, shape = IN_PLACE_CASES[case]
    torch.manual_seed(0)
    ref = nn.Sequential(make(), nn.ReLU(inplace=True)).double()
    ours = tritonn.convert(ref)
    x = torch.randn(shape, dtype=F64, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    out_ref, out = ref(x), ours(x2)  # the ReLU writes into the layer's output
    torch.testing.assert_close(out, out_ref, **TOL)
    out_ref.sum().backward()
    out.sum().backward()
    torch.testing.assert_close(x2.grad, x.grad, **TOL)


def test_in_place_on_attention_and_lstm_outputs():
    mha = tritonn.MultiheadAttention(4, 2)
    x = torch.randn(3, 2, 4, requires_grad=True)
    mha(x, x, x)[0].relu_().sum().backward()
    lstm = tritonn.LSTM(4, 3)
    y, (h, c) = lstm(x)
    (y.relu_().sum() + h.mul_(2).sum() + c.add_(1).sum()).backward()
    assert x.grad is not None and all(p.grad is not None for p in lstm.parameters())


AUTOCAST_MODELS = {
    "conv_bn_pool": (lambda: nn.Sequential(nn.Conv2d(3, 4, 3, groups=1), nn.BatchNorm2d(4), nn.MaxPool2d(2)),
                     lambda: (torch.randn(2, 3, 6, 6),)),
    "linear_layer_norm": (lambda: nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8)), lambda: (torch.randn(4, 8),)),
    "lstm": (lambda: nn.LSTM(8, 6, num_layers=2), lambda: (torch.randn(5, 2, 8),)),
    "multihead_attention": (lambda: nn.MultiheadAttention(8, 2), lambda: (torch.randn(5, 2, 8),) * 3),
    "decoder_layer": (lambda: nn.TransformerDecoderLayer(8, 2, 16, dropout=0.0),
                      lambda: (torch.randn(5, 2, 8), torch.randn(4, 2, 8))),
    "transformer": (lambda: nn.Transformer(8, 2, 1, 1, 16, dropout=0.0),
                    lambda: (torch.randn(5, 2, 8), torch.randn(4, 2, 8))),
}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("model", list(AUTOCAST_MODELS))
def test_autocast_gives_torch_dtypes_for_every_layer(model, dtype, device):
    """Under torch.autocast each converted layer returns torch's output dtypes (and its
    parameters get torch's gradient dtypes), with values as close to a float64 run as
    torch's own (tritonn.testing's rule)."""
    from tritonn.testing import _flatten, assert_close_to_reference

    make, inputs = AUTOCAST_MODELS[model]
    torch.manual_seed(0)
    ref = make().to(device)
    ours = tritonn.convert(ref)
    ref64 = copy.deepcopy(ref).double()
    xs = [x.to(device) for x in inputs()]
    with torch.no_grad():
        expected = _flatten(ref64(*(x.double() for x in xs)))
    with torch.autocast(device_type=device, dtype=dtype):
        theirs, got = _flatten(ref(*xs)), _flatten(ours(*xs))
    assert [t.dtype for t in got] == [t.dtype for t in theirs]
    for i, (o, t, e) in enumerate(zip(got, theirs, expected)):
        if e.is_floating_point():
            assert_close_to_reference(f"{model} output {i}", o.float(), t.float(), e, dtype, reduction=16)
    sum(o.float().sum() for o in got if o.requires_grad).backward()
    sum(t.float().sum() for t in theirs if t.requires_grad).backward()
    for (name, p), q in zip(ours.named_parameters(), ref.parameters()):
        assert (p.grad is None) == (q.grad is None), name
        if p.grad is not None:
            assert p.grad.dtype == q.grad.dtype, name
            assert p.grad.isfinite().all(), name
