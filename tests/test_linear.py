"""tritonn.Linear and tritonn.functional.linear against torch."""

import copy
import inspect
import io
import warnings

import pytest
import torch
import torch.nn.functional as F

import tritonn
import tritonn.functional as TF
from tritonn import runtime
from tritonn.ops.linear import torch_activation

from .helpers import compare, no_native_compute, raises_like_torch

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]


def linear_leaves(lead, in_features, out_features, bias=True, need=(True, True, True)):
    leaves = {
        "x": torch.randn(*lead, in_features, dtype=torch.float64).requires_grad_(need[0]),
        "w": (torch.randn(out_features, in_features, dtype=torch.float64) / max(in_features, 1) ** 0.5).requires_grad_(need[1]),
    }
    if bias:
        leaves["b"] = torch.randn(out_features, dtype=torch.float64).requires_grad_(need[2])
    return leaves


def reductions(lead, in_features, out_features):
    rows = 1
    for d in lead:
        rows *= d
    return {"out0": in_features, "x": out_features, "w": rows, "b": rows}


def both(activation=None):
    ours = lambda x, w, b=None: TF.linear(x, w, b, activation=activation)  # noqa: E731
    name = {None: "none"}.get(activation, activation)
    theirs = lambda x, w, b=None: torch_activation(F.linear(x, w, b), name)  # noqa: E731
    return ours, theirs


# ---------------------------------------------------------------- the module


def test_linear_is_a_torch_linear_with_the_same_signature_and_init():
    assert issubclass(tritonn.Linear, torch.nn.Linear)
    assert inspect.signature(tritonn.Linear.__init__) == inspect.signature(torch.nn.Linear.__init__)
    torch.manual_seed(3)
    ours = tritonn.Linear(13, 7)
    torch.manual_seed(3)
    theirs = torch.nn.Linear(13, 7)
    assert repr(ours) == repr(theirs)
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    for k, v in theirs.state_dict().items():
        assert torch.equal(ours.state_dict()[k], v), k
    no_bias = tritonn.Linear(4, 3, bias=False, dtype=torch.float64)
    assert no_bias.bias is None and no_bias.weight.dtype == torch.float64


def test_state_dict_loads_both_ways_and_module_survives_copies():
    theirs = torch.nn.Linear(6, 5)
    ours = tritonn.Linear(6, 5)
    ours.load_state_dict(theirs.state_dict())
    back = torch.nn.Linear(6, 5)
    back.load_state_dict(ours.state_dict())
    x = torch.randn(4, 6)
    with torch.no_grad():
        assert torch.allclose(ours(x), theirs(x), atol=1e-6)
        assert torch.allclose(back(x), theirs(x), atol=1e-6)
    buf = io.BytesIO()
    torch.save(ours, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    clone = copy.deepcopy(ours)
    for m in (loaded, clone):
        assert type(m) is tritonn.Linear
        assert torch.equal(m(x), ours(x))


@pytest.mark.parametrize("dtype", DTYPES)
def test_module_forward_backward(dtype, device):
    torch_layer = torch.nn.Linear(37, 29, dtype=torch.float64)
    ours_layer = tritonn.Linear(37, 29, dtype=torch.float64)
    ours_layer.load_state_dict(torch_layer.state_dict())

    def run(layer):
        def fn(x, weight, bias):
            return torch.func.functional_call(layer, {"weight": weight, "bias": bias}, (x,))
        return fn

    leaves = {"x": torch.randn(3, 11, 37, dtype=torch.float64, requires_grad=True),
              "weight": torch_layer.weight.detach().clone().requires_grad_(),
              "bias": torch_layer.bias.detach().clone().requires_grad_()}
    compare(run(ours_layer), run(torch_layer), leaves, dtype, device,
            {"out0": 37, "x": 29, "weight": 33, "bias": 33})


# ---------------------------------------------------------------- shapes and dtypes


SHAPES = [  # (leading dims, in_features, out_features)
    ((67,), 131, 53),       # primes, several tiles in every direction
    ((3, 5), 7, 11),        # extra leading dim
    ((), 9, 4),             # 1-D input
    ((1,), 1, 1),           # size-1 everything
    ((0,), 7, 5),           # empty batch: dW and db are zeros
    ((2, 0, 3), 6, 5),      # empty middle dim
    ((3,), 0, 5),           # no input features: y = b
    ((5,), 2053, 3),        # large K, not a multiple of the block
]


@pytest.mark.parametrize("lead,in_f,out_f", SHAPES)
@pytest.mark.parametrize("bias", [True, False])
def test_shapes(lead, in_f, out_f, bias, device):
    ours, theirs = both()
    compare(ours, theirs, linear_leaves(lead, in_f, out_f, bias), torch.float32, device, reductions(lead, in_f, out_f))


@pytest.mark.parametrize("dtype", DTYPES)
def test_dtypes(dtype, device):
    ours, theirs = both()
    lead = (70,)
    compare(ours, theirs, linear_leaves(lead, 96, 65), dtype, device, reductions(lead, 96, 65))


@pytest.mark.parametrize("activation", ["relu", "gelu", "gelu_tanh", "silu"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_activation(activation, dtype, device):
    ours, theirs = both(activation)
    lead = (4, 17)
    compare(ours, theirs, linear_leaves(lead, 45, 38), dtype, device, reductions(lead, 45, 38))


@pytest.mark.parametrize("activation", [F.relu, F.gelu, F.silu])
def test_activation_given_as_torch_function(activation, device):
    name = {F.relu: "relu", F.gelu: "gelu", F.silu: "silu"}[activation]
    ours = lambda x, w, b: TF.linear(x, w, b, activation=activation)  # noqa: E731
    _, theirs = both(name)
    compare(ours, theirs, linear_leaves((9,), 12, 10), torch.float16, device, reductions((9,), 12, 10))


def test_activation_at_zero_and_nan_follows_torch(device):
    # The pre-activation is the bias alone: 0, -1, NaN, 2.
    x = torch.ones(1, 1, device=device)
    w = torch.zeros(4, 1, device=device)
    b = torch.tensor([0.0, -1.0, float("nan"), 2.0], device=device, requires_grad=True)
    y = TF.linear(x, w, b, activation="relu")
    y_ref = torch.relu(b.detach().clone().requires_grad_())
    assert torch.equal(y.isnan(), y_ref.isnan()[None]) and y[0, 3] == 2
    y.backward(torch.ones_like(y))
    y_ref.backward(torch.ones_like(y_ref))
    assert torch.equal(b.grad, torch.tensor([0.0, 0.0, 0.0, 1.0], device=device))


# ---------------------------------------------------------------- strides


def test_non_contiguous_operands_and_broadcast_grad(device):
    def ours(x, w, b):
        return TF.linear(x.transpose(0, 1), w[:, ::2], b[::3])

    def theirs(x, w, b):
        return F.linear(x.transpose(0, 1), w[:, ::2], b[::3])

    leaves = {"x": torch.randn(6, 5, 10, dtype=torch.float64, requires_grad=True),
              "w": torch.randn(7, 20, dtype=torch.float64, requires_grad=True),
              "b": torch.randn(21, dtype=torch.float64, requires_grad=True)}
    compare(ours, theirs, leaves, torch.float32, device, {"out0": 10, "x": 7, "w": 30, "b": 30})

    x = torch.randn(4, 8, device=device, requires_grad=True)
    w = torch.randn(3, 8, device=device, requires_grad=True)
    TF.linear(x, w, activation="gelu").sum().backward()  # grad_output is a stride-0 expand
    x64, w64 = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    F.gelu(F.linear(x64, w64)).sum().backward()
    assert torch.allclose(x.grad.double(), x64.grad, atol=1e-5)
    assert torch.allclose(w.grad.double(), w64.grad, atol=1e-5)


def test_one_dimensional_weight_and_broadcast_bias(device):
    leaves = {"x": torch.randn(3, 4, 6, dtype=torch.float64, requires_grad=True),
              "w": torch.randn(6, dtype=torch.float64, requires_grad=True),
              "b": torch.randn((), dtype=torch.float64, requires_grad=True)}
    compare(lambda x, w, b: TF.linear(x, w, b), lambda x, w, b: F.linear(x, w, b), leaves, torch.float32, device,
            {"out0": 6, "w": 12, "b": 12})
    leaves = {"x": torch.randn(5, 6, dtype=torch.float64, requires_grad=True),
              "w": torch.randn(4, 6, dtype=torch.float64, requires_grad=True),
              "b": torch.randn(1, dtype=torch.float64, requires_grad=True)}
    compare(lambda x, w, b: TF.linear(x, w, b), lambda x, w, b: F.linear(x, w, b), leaves, torch.float32, device,
            {"out0": 6, "w": 5, "b": 20})


# ---------------------------------------------------------------- autograd semantics


class SavedTensors:
    """Counts the tensors autograd saves for backward."""

    def __init__(self):
        self.saved = []

    def __enter__(self):
        self.ctx = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self.ctx.__enter__()
        return self

    def _pack(self, t):
        self.saved.append(t)
        return t

    def __exit__(self, *exc):
        self.ctx.__exit__(*exc)


@pytest.mark.parametrize("need", [(True, False, False), (False, True, True), (False, False, True), (True, True, False)])
def test_only_requested_gradients_are_computed(need, device):
    ours, theirs = both("gelu")
    compare(ours, theirs, linear_leaves((13,), 10, 6, need=need), torch.float32, device, reductions((13,), 10, 6))


def test_saves_only_what_backward_needs(device):
    x = torch.randn(8, 5, device=device)
    w = torch.randn(3, 5, device=device, requires_grad=True)
    with SavedTensors() as s:
        TF.linear(x, w)
    assert [t.shape for t in s.saved] == [x.shape], "dW needs x only"
    x.requires_grad_()
    w.requires_grad_(False)
    with SavedTensors() as s:
        TF.linear(x, w)
    assert [t.shape for t in s.saved] == [w.shape], "dx needs W only"
    with SavedTensors() as s:
        TF.linear(x, w, activation="relu")
    assert len(s.saved) == 2, "relu's backward reuses the output, nothing else"
    for mode in (torch.no_grad, torch.inference_mode):
        with mode(), SavedTensors() as s:
            y = TF.linear(x, w, activation="gelu")
        assert s.saved == [] and not y.requires_grad


def test_frozen_weight_trainable_bias(device):
    layer = tritonn.Linear(12, 7).to(device)
    ref = torch.nn.Linear(12, 7).to(device)
    ref.load_state_dict(layer.state_dict())
    for m in (layer, ref):
        m.weight.requires_grad_(False)
    x = torch.randn(33, 12, device=device)
    g = torch.randn(33, 7, device=device)
    layer(x).backward(g)
    ref(x).backward(g)
    assert layer.weight.grad is None
    assert torch.allclose(layer.bias.grad, ref.bias.grad, atol=1e-5)


def test_backward_twice_with_retain_graph_and_detach(device):
    x = torch.randn(6, 9, device=device, requires_grad=True)
    layer = tritonn.Linear(9, 4).to(device)
    y = layer(x)
    g = torch.randn_like(y)
    y.backward(g, retain_graph=True)
    first = (x.grad.clone(), layer.weight.grad.clone(), layer.bias.grad.clone())
    y.backward(g)
    for once, twice in zip(first, (x.grad, layer.weight.grad, layer.bias.grad)):
        assert torch.allclose(twice, 2 * once, atol=1e-5)
    assert not layer(x.detach()).detach().requires_grad
    with pytest.raises(RuntimeError, match="backward"):
        y.backward(g)


def test_double_backward_refuses_instead_of_lying(device):
    x = torch.randn(3, 4, device=device, requires_grad=True)
    w = torch.randn(2, 4, device=device, requires_grad=True)
    with pytest.raises(RuntimeError, match="double backward is not supported"):
        torch.autograd.grad(TF.linear(x, w, activation="gelu").sum(), x, create_graph=True)
    # a frozen layer with a fused activation after a trainable one: the saved pre-activation
    # depends on w but carries no graph, so a second derivative would silently lose that path
    w_frozen = torch.randn(3, 2, device=device)
    with pytest.raises(RuntimeError, match="double backward is not supported"):
        torch.autograd.grad(TF.linear(TF.linear(x, w), w_frozen, activation="gelu").sum(), w, create_graph=True)
    # a backward linear in the incoming gradient with constant coefficients is exact, as torch's
    (gx,) = torch.autograd.grad(TF.linear(x, w.detach()).sum(), x, create_graph=True)
    assert not gx.requires_grad


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_matches_nn_linear(dtype, device):
    torch_layer = torch.nn.Linear(10, 6).to(device)
    ours = tritonn.Linear(10, 6).to(device)
    ours.load_state_dict(torch_layer.state_dict())
    x = torch.randn(5, 10, device=device, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    with torch.autocast(device_type=device, dtype=dtype):
        y = ours(x)
        y_ref = torch_layer(x_ref)
    assert y.dtype == y_ref.dtype == dtype
    assert torch.allclose(y.float(), y_ref.float(), atol=4 * 2.0**-7 * y_ref.abs().max().item())
    y.float().sum().backward()
    y_ref.float().sum().backward()
    assert ours.weight.grad.dtype == torch_layer.weight.grad.dtype == torch.float32
    assert x.grad.dtype == torch.float32
    assert torch.allclose(ours.weight.grad, torch_layer.weight.grad, atol=0.1, rtol=0.02)
    with torch.autocast(device_type=device, dtype=dtype):  # a low-precision input meets fp32 weights
        x_low = x.detach().to(dtype)
        assert ours(x_low).dtype == torch_layer(x_low).dtype == dtype


# ---------------------------------------------------------------- errors


def test_wrong_feature_size(device):
    layer = tritonn.Linear(4, 3).to(device)
    msg = raises_like_torch(lambda: layer(torch.randn(2, 5, device=device)),
                             lambda: torch.nn.Linear(4, 3).to(device)(torch.randn(2, 5, device=device)))
    assert "5" in msg and "4" in msg and "features" in msg


def test_wrong_dtypes(device):
    x, w, b = torch.randn(2, 4, device=device), torch.randn(3, 4, device=device), torch.randn(3, device=device)
    msg = raises_like_torch(lambda: TF.linear(x.half(), w, b), lambda: F.linear(x.half(), w, b))
    assert "float16" in msg and "float32" in msg
    msg = raises_like_torch(lambda: TF.linear(x, w, b.double()), lambda: F.linear(x, w, b.double()))
    assert "float64" in msg and "float32" in msg


def test_wrong_ranks_and_bias_shape(device):
    x, w = torch.randn(2, 4, device=device), torch.randn(3, 4, device=device)
    raises_like_torch(lambda: TF.linear(torch.tensor(1.0, device=device), w),
                       lambda: F.linear(torch.tensor(1.0, device=device), w))
    raises_like_torch(lambda: TF.linear(x, w.unsqueeze(0)), lambda: F.linear(x, w.unsqueeze(0)))
    msg = raises_like_torch(lambda: TF.linear(x, w, torch.randn(4, device=device)),
                             lambda: F.linear(x, w, torch.randn(4, device=device)))
    assert "(3,)" in msg and "(4,)" in msg


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs two devices")
def test_wrong_devices():
    x, w = torch.randn(2, 4, device="cuda"), torch.randn(3, 4)
    msg = raises_like_torch(lambda: TF.linear(x, w), lambda: F.linear(x, w))
    assert "cpu" in msg and "cuda" in msg


def test_integer_and_unknown_activation(device):
    x, w = torch.randint(0, 3, (2, 4), device=device), torch.randint(0, 3, (3, 4), device=device)
    with pytest.raises(NotImplementedError, match="int64"):
        TF.linear(x, w)
    with pytest.raises(ValueError, match="tanh"):
        TF.linear(x.float(), w.float(), activation="tanh")


# ---------------------------------------------------------------- the Triton path


def test_only_triton_kernels_compute(device):
    x = torch.randn(5, 7, 13, device=device, requires_grad=True)
    w = torch.randn(11, 13, device=device, requires_grad=True)
    b = torch.randn(11, device=device, requires_grad=True)
    g = torch.randn(5, 7, 11, device=device)
    for activation in (None, "gelu"):
        with no_native_compute():
            y = TF.linear(x, w, b, activation=activation)
            torch.autograd.grad(y, (x, w, b), g)
    layer = tritonn.Linear(13, 11).to(device)
    layer.weight.requires_grad_(False)
    with no_native_compute():
        layer(x).backward(g)


def test_meta_tensors_give_shapes_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = TF.linear(torch.randn(2, 3, 4, device="meta"), torch.randn(5, 4, device="meta"))
    assert y.shape == (2, 3, 5) and y.device.type == "meta"


def test_fallback_warns_once_or_raises_when_strict(monkeypatch):
    monkeypatch.setattr(runtime, "INTERPRETING", False)
    monkeypatch.setattr(runtime, "_warned", set())
    x, w = torch.randn(3, 4), torch.randn(2, 4)
    with pytest.raises(tritonn.FallbackError, match="TRITONN_STRICT"):
        TF.linear(x, w)
    monkeypatch.setenv("TRITONN_STRICT", "0")
    with pytest.warns(RuntimeWarning, match="computing with torch"):
        y = TF.linear(x, w, activation="silu")
    assert torch.allclose(y, F.silu(F.linear(x, w)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TF.linear(x, w)  # once per op


def test_outputs_are_poisoned_before_kernels_write_them():
    buf = runtime.empty((3, 2), dtype=torch.float32, device=torch.device("cpu"))
    assert runtime.POISON and buf.isnan().all()


@pytest.mark.parametrize("activation", [None, "relu", "gelu"])
def test_fused_dropout_is_the_dropout_of_the_activation(activation, device):
    """dropout=p in the epilogue: the mask functional.dropout draws for the same seed,
    forward and every gradient, against the unfused chain (linear, then dropout)."""
    from tritonn.ops.attention import new_seed
    from tritonn.ops.compiled import apply

    p = 0.3
    x = torch.randn(37, 20, dtype=torch.float64, device=device, requires_grad=True)
    w = torch.randn(45, 20, dtype=torch.float64, device=device, requires_grad=True)
    b = torch.randn(45, dtype=torch.float64, device=device, requires_grad=True)
    torch.manual_seed(11)
    y = TF.linear(x, w, b, activation=activation, dropout=p)
    torch.manual_seed(11)
    seed = new_seed(p)
    leaves = [t.detach().clone().requires_grad_() for t in (x, w, b)]
    expected = apply("dropout", TF.linear(*leaves, activation=activation), p, seed)
    torch.testing.assert_close(y, expected, rtol=1e-15, atol=0)
    dropped = (y == 0).double().mean().item()
    assert 0.2 < dropped < (0.45 if activation != "relu" else 0.75)
    g = torch.randn_like(y)
    y.backward(g)
    expected.backward(g)
    for ours, ref in zip((x, w, b), leaves):
        torch.testing.assert_close(ours.grad, ref.grad, rtol=1e-13, atol=1e-13)


def test_fused_dropout_edges(device):
    x = torch.randn(8, 16, device=device, requires_grad=True)
    w = torch.randn(12, 16, device=device, requires_grad=True)
    y = TF.linear(x, w, activation="relu", dropout=1.0)
    assert (y == 0).all()
    y.sum().backward()
    assert (x.grad == 0).all() and (w.grad == 0).all()
    torch.testing.assert_close(TF.linear(x, w, dropout=0.0), TF.linear(x, w))
    with pytest.raises(ValueError, match="between 0 and 1"):
        TF.linear(x, w, dropout=1.5)
