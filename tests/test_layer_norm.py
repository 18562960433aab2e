"""tritonn.LayerNorm and tritonn.functional.layer_norm against torch in float64.

Outputs and the gradients of input, weight and bias follow the rule of
tritonn.testing; statistics reduce over the row (N = prod(normalized_shape)),
weight/bias gradients over the M rows.
"""

import math

import pytest
import torch
import torch.nn.functional as F

import tritonn
import tritonn.functional as TF
from tritonn.ops import layer_norm as ln_ops

from .helpers import compare, no_native_compute, raises_like_torch

F64 = torch.float64


def _leaves(shape, ns, weight=True, bias=True, mean=0.0, std=2.0):
    leaves = {"x": (torch.randn(*shape, dtype=F64) * std + mean).requires_grad_()}
    if weight:
        leaves["w"] = (torch.rand(ns, dtype=F64) + 0.5).requires_grad_()
    if bias:
        leaves["b"] = torch.randn(ns, dtype=F64).requires_grad_()
    return leaves


def _fns(ns, eps=1e-5):
    def ours(x, w=None, b=None):
        return TF.layer_norm(x, ns, w, b, eps)

    def theirs(x, w=None, b=None):
        return F.layer_norm(x, ns, w, b, eps)

    return ours, theirs


def _check(shape, ns, dtype, device, **kw):
    ns_t = (ns,) if isinstance(ns, int) else tuple(ns)
    n = math.prod(ns_t)
    m = math.prod(shape) // max(n, 1)
    ours, theirs = _fns(ns_t)
    leaves = _leaves(shape, ns_t, **kw)
    compare(ours, theirs, leaves, dtype, device, reductions={"out0": n, "x": n, "w": m, "b": m})


@pytest.mark.parametrize("shape,ns", [((3, 5, 7), 7), ((4, 130), 130), ((2, 3, 4, 5), (4, 5)), ((5, 1), 1),
                                      ((6,), 6)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_layer_norm_shapes(shape, ns, dtype, device):
    if ns == 1 and dtype == F64:
        pytest.skip("rows of one: grad x is 0 up to torch's own float64 noise, no reference to compare with")
    _check(shape, ns, dtype, device)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_layer_norm_half(dtype, device):
    _check((3, 4, 33), 33, dtype, device)


@pytest.mark.parametrize("weight,bias", [(False, False), (True, False), (False, True)])
def test_layer_norm_affine_options(weight, bias, device):
    _check((4, 3, 10), (3, 10), torch.float32, device, weight=weight, bias=bias)


def test_layer_norm_large_mean(device):
    _check((4, 65), 65, torch.float32, device, mean=1000.0, std=0.5)


def test_layer_norm_chunked_rows_and_programs(device, monkeypatch):
    """Rows longer than a tile (the three-loop path) and several backward programs
    with their partial sums, on small shapes."""
    monkeypatch.setattr(ln_ops, "INTERPRETER_TILE", 32)
    monkeypatch.setattr(ln_ops, "INTERPRETER_PROGRAMS", 3)
    _check((7, 130), 130, torch.float32, device)
    _check((9, 3, 5), (3, 5), torch.float32, device)


def test_layer_norm_deterministic_param_grads(device, monkeypatch):
    monkeypatch.setattr(ln_ops, "INTERPRETER_PROGRAMS", 4)
    x = torch.randn(33, 40, device=device)
    grads = []
    for _ in range(2):
        m = tritonn.LayerNorm(40).to(device)
        m.weight.data.copy_(torch.linspace(0.5, 1.5, 40))
        m(x).square().sum().backward()
        grads.append((m.weight.grad.clone(), m.bias.grad.clone()))
    assert torch.equal(grads[0][0], grads[1][0]) and torch.equal(grads[0][1], grads[1][1])


def test_layer_norm_module_like_torch(device):
    for kwargs in ({}, {"elementwise_affine": False}, {"bias": False}, {"eps": 1e-3}):
        ref = torch.nn.LayerNorm((3, 6), **kwargs)
        ours = tritonn.LayerNorm((3, 6), **kwargs)
        assert isinstance(ours, torch.nn.LayerNorm)
        assert repr(ours) == repr(ref)
        assert ours.state_dict().keys() == ref.state_dict().keys()
        ours.load_state_dict(ref.state_dict())
        x = torch.randn(2, 3, 6, dtype=F64)
        torch.testing.assert_close(ours.double()(x), ref.double()(x))


def test_layer_norm_empty_batch(device):
    m = tritonn.LayerNorm(5).to(device)
    x = torch.randn(0, 5, device=device, requires_grad=True)
    y = m(x)
    assert y.shape == (0, 5)
    y.sum().backward()
    assert m.weight.grad.shape == (5,) and (m.weight.grad == 0).all()


@pytest.mark.parametrize("shape,ns", [((3, 0), (0,)), ((2, 3, 0, 5), (0, 5)), ((2, 0, 4), (4,))])
def test_layer_norm_zero_sized_normalized_shape(shape, ns, device):
    """Rows of zero elements (or zero rows): empty outputs and zero parameter grads, as torch."""
    ours, ref = tritonn.LayerNorm(ns).to(device), torch.nn.LayerNorm(ns).to(device)
    x = torch.randn(shape, device=device, requires_grad=True)
    y = ours(x)
    assert y.shape == ref(x).shape == shape
    y.sum().backward()
    assert x.grad.shape == shape
    assert ours.weight.grad.shape == ours.bias.grad.shape == ns
    assert (ours.weight.grad == 0).all() and (ours.bias.grad == 0).all()
    h, z = ln_ops.add_dropout_layer_norm(x, x.detach(), ns, ours.weight, ours.bias, 1e-5, 0.2)
    assert h.shape == z.shape == shape


def test_layer_norm_no_native_compute(device):
    m = tritonn.LayerNorm(12).to(device)
    x = torch.randn(3, 12, device=device, requires_grad=True)
    g = torch.randn(3, 12, device=device)
    with no_native_compute():
        m(x).backward(g)


def test_layer_norm_errors_like_torch(device):
    x = torch.randn(2, 5, device=device)
    raises_like_torch(lambda: TF.layer_norm(x, (4,)), lambda: F.layer_norm(x, (4,)))
    w = torch.ones(4, device=device)
    raises_like_torch(lambda: TF.layer_norm(x, (5,), w), lambda: F.layer_norm(x, (5,), w))
    xi = torch.ones(2, 5, dtype=torch.long, device=device)
    raises_like_torch(lambda: TF.layer_norm(xi, (5,)), lambda: F.layer_norm(xi, (5,)))


# ---------------------------------------------------------------- residual add + dropout + LayerNorm, fused


@pytest.mark.parametrize("tile", [16384, 32])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_add_dropout_layer_norm_against_torch(tile, dtype, device, monkeypatch):
    """p = 0: (h, y) = (r + x, layer_norm(r + x)), both outputs with gradients (pre-norm uses both)."""
    monkeypatch.setattr(ln_ops, "INTERPRETER_TILE", tile)
    monkeypatch.setattr(ln_ops, "INTERPRETER_PROGRAMS", 2)
    n = 37

    def ours(r, x, w, b):
        return ln_ops.add_dropout_layer_norm(r, x, (n,), w, b, 1e-5, 0.3, training=False)

    def theirs(r, x, w, b):
        h = r + x
        return h, F.layer_norm(h, (n,), w, b, 1e-5)

    leaves = {"r": torch.randn(3, 5, n, dtype=F64).requires_grad_(), "x": torch.randn(3, 5, n, dtype=F64).requires_grad_(),
              "w": (torch.rand(n, dtype=F64) + 0.5).requires_grad_(), "b": torch.randn(n, dtype=F64).requires_grad_()}
    compare(ours, theirs, leaves, dtype, device, reductions={"out1": n, "r": n, "x": n, "w": 15, "b": 15})


def test_add_dropout_layer_norm_dropout(device, monkeypatch):
    monkeypatch.setattr(ln_ops, "INTERPRETER_TILE", 64)
    p, n = 0.4, 100
    r = torch.randn(30, n, device=device, requires_grad=True)
    x = torch.randn(30, n, device=device, requires_grad=True)
    w = torch.rand(n, device=device).add(0.5).requires_grad_()
    h, y = ln_ops.add_dropout_layer_norm(r, x, n, w, None, 1e-5, p, training=True)
    kept = (h.detach() - r.detach()) != 0
    assert abs((1 - kept.double().mean().item()) - p) < 4 * (p * (1 - p) / x.numel()) ** 0.5
    xd = torch.where(kept, x.detach() / (1 - p), 0.0)
    torch.testing.assert_close(h.detach(), r.detach() + xd)
    # the same computation with the mask fixed, by torch
    r2, x2, w2 = (t.detach().clone().requires_grad_() for t in (r, x, w))
    h2 = r2 + torch.where(kept, x2 / (1 - p), 0.0)
    y2 = F.layer_norm(h2, (n,), w2)
    torch.testing.assert_close(y.detach(), y2.detach(), atol=1e-5, rtol=1e-5)
    gh, gy = torch.randn_like(h), torch.randn_like(y)
    torch.autograd.backward((h, y), (gh, gy))
    torch.autograd.backward((h2, y2), (gh, gy))
    for a, b in ((r, r2), (x, x2), (w, w2)):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-5)
