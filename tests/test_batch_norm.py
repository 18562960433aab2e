"""tritonn.BatchNorm2d and tritonn.functional.batch_norm against torch.

Every value (outputs, grads of input/weight/bias, running statistics) is checked
against torch in float64 with the rule of tritonn.testing; the statistics are
reductions over N * H * W values, and so are the gradients of weight and bias.
"""

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
from tritonn.ops import batch_norm as bn_ops
from tritonn.ops.linear import torch_activation

from .helpers import assert_close_to_reference, compare, no_native_compute
from .test_linear import SavedTensors

F64 = torch.float64
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]


def _count(shape):
    n = shape[0]
    for s in shape[2:]:
        n *= s
    return n


def bn_leaves(shape, affine=True, mean=0.5, std=2.0, running=True, memory_format=None):
    C = shape[1]
    x = torch.randn(*shape, dtype=F64) * std + mean
    if memory_format is not None:
        x = x.contiguous(memory_format=memory_format)
    leaves = {"x": x.requires_grad_()}
    if affine:
        leaves["w"] = (torch.rand(C, dtype=F64) + 0.5).requires_grad_()
        leaves["b"] = torch.randn(C, dtype=F64).requires_grad_()
    if running:
        leaves["rm"] = torch.randn(C, dtype=F64)
        leaves["rv"] = torch.rand(C, dtype=F64) + 0.5
    return leaves


def both(training, momentum=0.1, eps=1e-5, activation=None):
    """ours/theirs(x, w, b, rm, rv) -> (y, running_mean, running_var after the call)."""
    name = {None: "none"}.get(activation, activation)

    def ours(x, w=None, b=None, rm=None, rv=None):
        y = TF.batch_norm(x, rm, rv, w, b, training, momentum, eps, activation=activation)
        return (y, *[t.clone() for t in (rm, rv) if t is not None])

    def theirs(x, w=None, b=None, rm=None, rv=None):
        y = torch_activation(F.batch_norm(x, rm, rv, w, b, training, momentum, eps), name)
        return (y, *[t.clone() for t in (rm, rv) if t is not None])

    return ours, theirs


def reductions(shape):
    n = _count(shape)
    return {"out0": n, "out1": n, "out2": n, "x": n, "w": n, "b": n}


# ---------------------------------------------------------------- the module


def test_module_is_a_torch_batchnorm_with_the_same_signature_state_and_repr():
    assert issubclass(tritonn.BatchNorm2d, torch.nn.BatchNorm2d)
    assert inspect.signature(tritonn.BatchNorm2d.__init__) == inspect.signature(torch.nn.BatchNorm2d.__init__)
    for kw in ({}, {"affine": False}, {"track_running_stats": False}, {"momentum": None, "eps": 1e-3},
               {"bias": False}):
        ours, theirs = tritonn.BatchNorm2d(7, **kw), torch.nn.BatchNorm2d(7, **kw)
        assert repr(ours) == repr(theirs)
        assert ours.state_dict().keys() == theirs.state_dict().keys()
        for k, v in theirs.state_dict().items():
            assert torch.equal(ours.state_dict()[k], v), k
        assert [n for n, _ in ours.named_buffers()] == [n for n, _ in theirs.named_buffers()]
        assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    half = tritonn.BatchNorm2d(3, dtype=torch.float16)
    assert half.weight.dtype == half.running_mean.dtype == torch.float16
    assert half.num_batches_tracked.dtype == torch.long


def test_state_dict_loads_both_ways_and_module_survives_copies():
    theirs = torch.nn.BatchNorm2d(4)
    theirs.train()(torch.randn(3, 4, 5, 5))
    ours = tritonn.BatchNorm2d(4)
    ours.load_state_dict(theirs.state_dict())
    back = torch.nn.BatchNorm2d(4)
    back.load_state_dict(ours.state_dict())
    x = torch.randn(2, 4, 3, 3)
    for m in (ours, theirs, back):
        m.eval()
    with torch.no_grad():
        assert torch.allclose(ours(x), theirs(x), atol=1e-5)
        assert torch.allclose(back(x), theirs(x), atol=1e-5)
    buf = io.BytesIO()
    torch.save(ours, buf)
    buf.seek(0)
    for m in (torch.load(buf, weights_only=False), copy.deepcopy(ours)):
        assert type(m) is tritonn.BatchNorm2d
        assert torch.equal(m(x), ours(x))


def _pair_of_modules(C, dtype, param_dtype, **kw):
    """(float64 torch reference, torch in dtype, tritonn in dtype), same parameters and buffers."""
    ref = torch.nn.BatchNorm2d(C, **kw).double()
    with torch.no_grad():
        if ref.weight is not None:
            ref.weight.uniform_(0.5, 1.5)
        if ref.bias is not None:
            ref.bias.normal_()
        if ref.running_mean is not None:
            ref.running_mean.normal_()
            ref.running_var.uniform_(0.5, 1.5)
    theirs = copy.deepcopy(ref).to(param_dtype)
    ours = tritonn.BatchNorm2d(C, **kw, dtype=F64)
    ours.load_state_dict(ref.state_dict())
    return ref, theirs, ours.to(param_dtype)


def _step(modules, dtypes, shape, device, memory_format=torch.contiguous_format):
    x64 = (torch.randn(shape, dtype=F64) * 2 + 0.5).contiguous(memory_format=memory_format)
    g64 = torch.randn(shape, dtype=F64)
    results = []
    for m, dt in zip(modules, dtypes):
        dev = "cpu" if dt == F64 else device
        x = x64.to(device=dev, dtype=dt).contiguous(memory_format=memory_format).detach().requires_grad_()
        y = m(x)
        y.backward(g64.to(device=dev, dtype=dt))
        params = {n: p.grad for n, p in m.named_parameters()}
        results.append((y, x.grad, params))
        for p in m.parameters():
            p.grad = None
    return results


def check_module_steps(ours, theirs, ref, dtype, shape, device, phases=(("train", 3), ("eval", 2)),
                       memory_format=torch.contiguous_format):
    n = _count(shape)
    ours.to(device)
    theirs.to(device)
    for phase, steps in phases:
        for m in (ours, theirs, ref):
            m.train(phase == "train")
        for step in range(steps):
            (yr, gxr, gpr), (yt, gxt, gpt), (yo, gxo, gpo) = _step([ref, theirs, ours], [F64, dtype, dtype], shape,
                                                                  device, memory_format)
            where = f"{phase} step {step}"
            assert_close_to_reference(f"y ({where})", yo, yt, yr, dtype, n)
            assert yo.stride() == yt.stride(), f"{where}: output strides {yo.stride()}, torch {yt.stride()}"
            assert_close_to_reference(f"grad x ({where})", gxo, gxt, gxr, dtype, n)
            assert gxo.stride() == gxt.stride(), f"{where}: grad x strides {gxo.stride()}, torch {gxt.stride()}"
            assert gpo.keys() == gpr.keys()
            for name in gpr:
                assert_close_to_reference(f"grad {name} ({where})", gpo[name], gpt[name], gpr[name], dtype, n)
            buffers = dict(ref.named_buffers())
            ours_buffers, theirs_buffers = dict(ours.named_buffers()), dict(theirs.named_buffers())
            assert ours_buffers.keys() == buffers.keys()
            for name, r in buffers.items():
                if name == "num_batches_tracked":
                    assert ours_buffers[name].item() == r.item(), f"{name} ({where})"
                else:
                    assert ours_buffers[name].dtype == theirs_buffers[name].dtype
                    assert_close_to_reference(f"{name} ({where})", ours_buffers[name], theirs_buffers[name], r,
                                              dtype, n)


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("track", [True, False])
def test_module_every_option_train_then_eval(momentum, affine, track, device):
    ref, theirs, ours = _pair_of_modules(5, torch.float32, torch.float32, momentum=momentum, affine=affine,
                                         track_running_stats=track, eps=1e-3)
    check_module_steps(ours, theirs, ref, torch.float32, (3, 5, 7, 9), device)


def test_module_without_bias_and_channels_last(device):
    ref, theirs, ours = _pair_of_modules(6, torch.float32, torch.float32, bias=False)
    check_module_steps(ours, theirs, ref, torch.float32, (4, 6, 5, 3), device, memory_format=torch.channels_last)


@pytest.mark.parametrize("dtype,param_dtype", [(torch.float16, torch.float32), (torch.bfloat16, torch.float32),
                                               (torch.float16, torch.float16), (torch.float64, torch.float64)])
def test_module_dtypes(dtype, param_dtype, device):
    """Half inputs with float32 parameters (what autocast leaves a BatchNorm) or half parameters."""
    ref, theirs, ours = _pair_of_modules(5, dtype, param_dtype, momentum=None)
    check_module_steps(ours, theirs, ref, dtype, (3, 5, 6, 7), device, phases=(("train", 2), ("eval", 1)))


# ---------------------------------------------------------------- functional: modes, dtypes, shapes


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("training", [True, False])
def test_functional_dtypes(dtype, training, device):
    shape = (4, 6, 5, 7)
    ours, theirs = both(training)
    compare(ours, theirs, bn_leaves(shape), dtype, device, reductions(shape))


SHAPES = [
    (3, 5, 7, 9),      # odd everything
    (4, 6, 1, 1),      # size-1 spatial
    (1, 3, 1, 5),
    (2, 3, 33, 65),    # rows longer than a tile row
    (9, 4),            # (N, C)
    (3, 4, 10),        # (N, C, L)
    (2, 3, 2, 3, 4),   # 5-D
]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("training", [True, False])
def test_shapes(shape, training, device):
    ours, theirs = both(training)
    compare(ours, theirs, bn_leaves(shape), torch.float32, device, reductions(shape))


@pytest.mark.parametrize("shape", [(3, 5, 7, 9), (2, 3, 1, 1), (5, 130, 3, 2)], ids=str)
@pytest.mark.parametrize("training", [True, False])
def test_channels_last_in_channels_last_out(shape, training, device):
    leaves = bn_leaves(shape, memory_format=torch.channels_last)
    ours, theirs = both(training, activation="relu")
    compare(ours, theirs, leaves, torch.float32, device, reductions(shape))
    x = leaves["x"].detach().float().to(device)
    y = TF.batch_norm(x, None, None, training=True)
    y_ref = F.batch_norm(x, None, None, training=True)
    assert y.stride() == y_ref.stride()
    assert y.is_contiguous(memory_format=torch.channels_last) == y_ref.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("view", ["channel slice", "transposed spatial", "batch slice cl", "permuted"])
def test_non_contiguous_inputs(view, device):
    def make(x):
        if view == "channel slice":
            return x[:, ::2]
        if view == "transposed spatial":
            return x.transpose(2, 3)
        if view == "batch slice cl":
            return x.contiguous(memory_format=torch.channels_last)[::2]
        return x.permute(1, 0, 2, 3)

    def ours(x, w, b, rm, rv):
        xv = make(x)
        return TF.batch_norm(xv, rm, rv, w, b, True, 0.1, 1e-5), rm.clone(), rv.clone()

    def theirs(x, w, b, rm, rv):
        return F.batch_norm(make(x), rm, rv, w, b, True, 0.1, 1e-5), rm.clone(), rv.clone()

    base = {"channel slice": (3, 10, 4, 5), "transposed spatial": (3, 5, 4, 6), "batch slice cl": (6, 5, 4, 3),
            "permuted": (5, 3, 4, 6)}[view]
    leaves = bn_leaves(base)
    view_shape = make(leaves["x"]).shape
    leaves.update({k: v for k, v in bn_leaves(view_shape).items() if k != "x"})
    n = _count(view_shape)
    compare(ours, theirs, leaves, torch.float32, device, {"out0": n, "out1": n, "out2": n, "x": n, "w": n, "b": n})


def test_grad_output_broadcast_and_non_contiguous(device):
    x = torch.randn(3, 4, 5, 6, device=device, requires_grad=True)
    w = torch.rand(4, device=device, requires_grad=True)
    TF.batch_norm(x, None, None, w, None, training=True).sum().backward()  # grad_output is a stride-0 expand
    x64, w64 = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    F.batch_norm(x64, None, None, w64, None, training=True).sum().backward()
    assert torch.allclose(x.grad.double(), x64.grad, atol=1e-5)
    assert torch.allclose(w.grad.double(), w64.grad, atol=1e-4)
    g = torch.randn(3, 4, 6, 5, device=device).transpose(2, 3)
    x.grad = None
    y = TF.batch_norm(x, None, None, w, None, training=True)
    (gx,) = torch.autograd.grad(y, x, g)
    (gx64,) = torch.autograd.grad(F.batch_norm(x64, None, None, w64, None, training=True), x64, g.double())
    assert torch.allclose(gx.double(), gx64, atol=1e-5)


# ---------------------------------------------------------------- numerics


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_large_mean_is_not_cancelled(layout, device, monkeypatch):
    """Mean 1e4, std 1 over 16K values per channel, split into tiles and chunks: the
    variance (and so the output) stays as accurate as torch's."""
    monkeypatch.setattr(bn_ops, "INTERPRETER_TILE", 4096)
    monkeypatch.setattr(bn_ops, "INTERPRETER_CHUNKS", 3)
    monkeypatch.setattr(bn_ops, "INTERPRETER_FINALIZE_K", 2)
    shape = (4, 3, 64, 64)
    leaves = bn_leaves(shape, mean=1e4, std=1.0, memory_format=layout)
    ours, theirs = both(True)
    compare(ours, theirs, leaves, torch.float32, device, reductions(shape))
    x = leaves["x"].detach().float()
    var = torch.empty(3)
    TF.batch_norm(x, torch.zeros(3), var.fill_(0.0), training=True, momentum=1.0)
    exact = leaves["x"].detach().transpose(0, 1).reshape(3, -1).var(dim=1)
    assert torch.allclose(var.double(), exact, rtol=1e-4), (var, exact)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("tile,chunks", [(64, 1), (64, 5), (1024, 3)])
def test_split_reduction_tiles_and_chunks(tile, chunks, layout, device, monkeypatch):
    """Several tiles per program, several chunks per channel (merged in the finalize kernels)."""
    monkeypatch.setattr(bn_ops, "INTERPRETER_TILE", tile)
    monkeypatch.setattr(bn_ops, "INTERPRETER_CHUNKS", chunks)
    monkeypatch.setattr(bn_ops, "INTERPRETER_FINALIZE_K", 2)  # several merge steps
    shape = (5, 6, 9, 11)
    ours, theirs = both(True, activation="relu")
    compare(ours, theirs, bn_leaves(shape, memory_format=layout), torch.float32, device, reductions(shape))


@pytest.mark.parametrize("shape,layout", [((3, 5, 7, 9), torch.contiguous_format), ((4, 70, 3, 5), torch.channels_last),
                                          ((2, 3, 40, 40), torch.contiguous_format)])
def test_gpu_tiling_plan(shape, layout, device, monkeypatch):
    """The tiles and chunks a GPU would use (fixed GPU_TILE shapes, a grid for 1 SM), run here."""
    real_plan = bn_ops.plan
    monkeypatch.setattr(bn_ops, "plan", lambda *a, **k: real_plan(*a, gpu=True, sm_count=1))
    ours, theirs = both(True)
    compare(ours, theirs, bn_leaves(shape, memory_format=layout), torch.float32, device, reductions(shape))


def test_plan_merges_channels_last_rows_and_spreads_chunks():
    cl = bn_ops.plan(64, 256, 3136, [(3136 * 256, 1, 256)], torch.device("cuda"), gpu=True, sm_count=132)
    assert cl["N"] == 64 * 3136 and cl["L"] == 1 and cl["blocks"]["BLOCK_C"] == 128
    nchw = bn_ops.plan(64, 256, 3136, [(3136 * 256, 3136, 1)], torch.device("cuda"), gpu=True, sm_count=132)
    assert nchw["blocks"]["BLOCK_L"] == 64 and nchw["blocks"]["BLOCK_C"] == 1
    for p in (cl, nchw):
        programs = p["grid"][0] * p["grid"][1]
        assert 132 * 4 <= programs <= 132 * 16, p
    few = bn_ops.plan(2, 3, 49, [(147, 49, 1)], torch.device("cuda"), gpu=True, sm_count=132)
    assert few["grid"][1] >= 1 and few["num_chunks"] == few["grid"][1]
    assert set(bn_ops.gpu_tile_shapes()) >= {tuple(p["blocks"].values()) for p in (cl, nchw, few)}


def test_deterministic(device, monkeypatch):
    monkeypatch.setattr(bn_ops, "INTERPRETER_TILE", 256)
    monkeypatch.setattr(bn_ops, "INTERPRETER_CHUNKS", 4)
    x = torch.randn(4, 3, 9, 10, device=device, requires_grad=True)
    w = torch.rand(3, device=device, requires_grad=True)
    b = torch.randn(3, device=device, requires_grad=True)
    g = torch.randn(4, 3, 9, 10, device=device)
    runs = []
    for _ in range(2):
        y = TF.batch_norm(x, None, None, w, b, training=True)
        runs.append((y, *torch.autograd.grad(y, (x, w, b), g)))
    for a, b_ in zip(*runs):
        assert torch.equal(a, b_)


# ---------------------------------------------------------------- fused activation


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_fused_relu(dtype, training, layout, device):
    shape = (3, 5, 7, 9)
    ours, theirs = both(training, activation="relu")
    compare(ours, theirs, bn_leaves(shape, memory_format=layout), dtype, device, reductions(shape))


@pytest.mark.parametrize("activation", ["gelu", "silu", F.relu])
def test_other_fused_activations(activation, device):
    shape = (2, 4, 5, 6)
    name = {F.relu: "relu"}.get(activation, activation)
    ours, _ = both(True, activation=activation)
    _, theirs = both(True, activation=name)
    compare(ours, theirs, bn_leaves(shape), torch.float32, device, reductions(shape))


def test_relu_at_zero_follows_torch(device):
    # weight 0 and bias 0: the pre-activation is exactly 0, relu'(0) = 0 as in torch
    x = torch.randn(2, 3, 4, 4, device=device, requires_grad=True)
    w = torch.zeros(3, device=device, requires_grad=True)
    b = torch.zeros(3, device=device, requires_grad=True)
    y = TF.batch_norm(x, None, None, w, b, training=True, activation="relu")
    y.backward(torch.ones_like(y))
    assert torch.equal(y, torch.zeros_like(y))
    assert torch.equal(x.grad, torch.zeros_like(x)) and torch.equal(b.grad, torch.zeros(3, device=device))


# ---------------------------------------------------------------- autograd semantics


@pytest.mark.parametrize("need", [(True, False, False), (False, True, False), (False, False, True), (False, True, True),
                                  (True, True, False)])
@pytest.mark.parametrize("training", [True, False])
def test_only_requested_gradients_are_computed(need, training, device):
    shape = (3, 4, 5, 6)
    leaves = bn_leaves(shape)
    for k, r in zip(("x", "w", "b"), need):
        leaves[k].requires_grad_(r)
    ours, theirs = both(training, activation="relu" if need[2] else None)
    compare(ours, theirs, leaves, torch.float32, device, reductions(shape))


def test_saves_only_what_backward_needs(device):
    x = torch.randn(4, 3, 5, 5, device=device)
    w = torch.rand(3, device=device)
    b = torch.randn(3, device=device)
    rm, rv = torch.zeros(3, device=device), torch.ones(3, device=device)

    def saved(**kw):
        with SavedTensors() as s:
            TF.batch_norm(x, rm, rv, w, b, **kw)
        return sorted(tuple(t.shape) for t in s.saved)

    x.requires_grad_()
    assert saved(training=False) == [(2, 3), (3,)], "eval, grad x only: weight and (mean, invstd), no x"
    assert saved(training=True) == [(2, 3), (3,), (4, 3, 5, 5)], "train, grad x: x, weight, stats"
    x.requires_grad_(False)
    b.requires_grad_()
    assert saved(training=True) == [(2, 3)], "grad bias only: nothing but the stats"
    assert saved(training=True, activation="relu") == [(2, 3), (3,), (3,), (4, 3, 5, 5)]
    for mode in (torch.no_grad, torch.inference_mode):
        with mode(), SavedTensors() as s:
            y = TF.batch_norm(x, rm, rv, w, b, training=True, activation="relu")
        assert s.saved == [] and not y.requires_grad


def test_double_backward_refuses_instead_of_lying(device):
    x = torch.randn(3, 2, 4, 4, device=device, requires_grad=True)
    with pytest.raises(RuntimeError, match="double backward is not supported"):
        torch.autograd.grad(TF.batch_norm(x, None, None, training=True).pow(2).sum(), x, create_graph=True)


def test_running_stats_are_not_differentiable_and_stay_in_their_dtype(device):
    x = torch.randn(3, 2, 4, 4, device=device, dtype=torch.bfloat16)
    rm, rv = torch.zeros(2, device=device), torch.ones(2, device=device)
    TF.batch_norm(x, rm, rv, training=True)
    assert rm.dtype == torch.float32 and rm.abs().sum() > 0
    with pytest.raises(RuntimeError, match="running_mean"):
        TF.batch_norm(x.float(), rm.requires_grad_(), rv, training=True)


# ---------------------------------------------------------------- edge cases and errors


def _raises_like_torch(ours_call, torch_call):
    with pytest.raises(Exception) as theirs:
        torch_call()
    with pytest.raises(type(theirs.value)) as got:
        ours_call()
    return str(theirs.value), str(got.value)


def test_errors_like_torch(device):
    ours, theirs = tritonn.BatchNorm2d(3).to(device), torch.nn.BatchNorm2d(3).to(device)
    x3 = torch.randn(3, 4, 5, device=device)
    t, o = _raises_like_torch(lambda: ours(x3), lambda: theirs(x3))
    assert o == t == "expected 4D input (got 3D input)"
    one = torch.randn(1, 3, 1, 1, device=device)
    t, o = _raises_like_torch(lambda: ours(one), lambda: theirs(one))
    assert o == t and "Expected more than 1 value per channel when training" in o
    ours.eval(), theirs.eval()
    assert torch.allclose(ours(one), theirs(one), atol=1e-6)  # fine in eval
    x = torch.randn(2, 3, 4, 4, device=device)
    rm, rv = torch.zeros(3, device=device), torch.ones(3, device=device)
    cases = [
        ((x, rm, rv), dict(training=True, eps=0.0)),
        ((x, rm, rv), dict(training=False, eps=-1.0)),
        ((x, rm, None), dict(training=True)),
        ((x, None, None), dict(training=False)),
        ((x, torch.zeros(4, device=device), rv), dict(training=True)),
        ((x, rm, rv, torch.ones(4, device=device)), dict(training=True)),
        ((x, rm, rv, None, torch.ones(2, device=device)), dict(training=False)),
        ((x.long(), rm, rv), dict(training=True)),
        ((x.half(), rm.double(), rv.double()), dict(training=True)),
        ((x.double(), rm, rv), dict(training=True)),
        ((x, rm.clone().requires_grad_(), rv), dict(training=True)),
        ((x, rm, rv), dict(training=True, momentum=None)),
    ]
    for args, kw in cases:
        t, o = _raises_like_torch(lambda: TF.batch_norm(*args, **kw), lambda: F.batch_norm(*args, **kw))
        for word in ("running_mean", "weight", "bias", "eps", "Long", "momentum", "4 elements"):
            if word in t:
                assert word in o, (t, o)
    with pytest.raises(ValueError, match="activation"):
        TF.batch_norm(x, None, None, training=True, activation="tanh")


@pytest.mark.parametrize("shape", [(0, 3, 4, 4), (2, 3, 0, 4)], ids=str)
@pytest.mark.parametrize("training", [True, False])
def test_empty_batch_like_torch(shape, training, device):
    ours, theirs = tritonn.BatchNorm2d(3).to(device), torch.nn.BatchNorm2d(3).to(device)
    ours.train(training), theirs.train(training)
    for m in (ours, theirs):
        x = torch.randn(shape, device=device, requires_grad=True)
        y = m(x)
        y.backward(torch.ones_like(y))
        m.out = (y, x.grad, m.weight.grad, m.bias.grad)
    for a, b in zip(ours.out, theirs.out):
        assert a.shape == b.shape and torch.equal(a, b)
    for k, v in theirs.state_dict().items():
        assert torch.equal(ours.state_dict()[k], v), k


# ---------------------------------------------------------------- the Triton path


@pytest.mark.parametrize("training", [True, False])
def test_only_triton_kernels_compute(training, device):
    x = torch.randn(3, 4, 5, 6, device=device, requires_grad=True)
    g = torch.randn(3, 4, 5, 6, device=device)
    for kw in ({}, {"momentum": None}, {"affine": False}, {"track_running_stats": False}):
        layer = tritonn.BatchNorm2d(4, **kw).to(device).train(training)
        with no_native_compute():  # autograd.grad: .backward() would accumulate .grad with add_
            torch.autograd.grad(layer(x), (x, *layer.parameters()), g)
            torch.autograd.grad(layer(x.contiguous(memory_format=torch.channels_last)), (x, *layer.parameters()), g)
    w = torch.rand(4, device=device, requires_grad=True)
    rm, rv = torch.zeros(4, device=device), torch.ones(4, device=device)
    with no_native_compute():
        y = TF.batch_norm(x, rm, rv, w, None, training, activation="relu")
        torch.autograd.grad(y, (x, w), g)


def test_num_batches_tracked_and_cumulative_average_on_device(device):
    ours, theirs = tritonn.BatchNorm2d(2, momentum=None).to(device), torch.nn.BatchNorm2d(2, momentum=None).to(device)
    for _ in range(4):
        x = torch.randn(3, 2, 4, 4, device=device)
        with no_native_compute():
            ours(x)
        theirs(x)
    assert ours.num_batches_tracked.item() == theirs.num_batches_tracked.item() == 4
    assert torch.allclose(ours.running_mean, theirs.running_mean, atol=1e-6)
    assert torch.allclose(ours.running_var, theirs.running_var, atol=1e-6)


def test_meta_tensors_give_shapes_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = TF.batch_norm(torch.randn(2, 3, 4, 4, device="meta"), None, None, training=True, activation="relu")
    assert y.shape == (2, 3, 4, 4) and y.device.type == "meta"


def test_fallback_warns_once_or_raises_when_strict(monkeypatch):
    monkeypatch.setattr(runtime, "INTERPRETING", False)
    monkeypatch.setattr(runtime, "_warned", set())
    layer, ref = tritonn.BatchNorm2d(3, momentum=None), torch.nn.BatchNorm2d(3, momentum=None)
    x = torch.randn(4, 3, 2, 2)
    with pytest.raises(tritonn.FallbackError, match="TRITONN_STRICT"):
        layer(x)
    monkeypatch.setenv("TRITONN_STRICT", "0")
    with pytest.warns(RuntimeWarning, match="computing with torch"):
        y = layer(x)
    y_ref = ref(x)
    assert torch.allclose(y, y_ref) and layer.num_batches_tracked.item() == ref.num_batches_tracked.item() == 1
    assert torch.allclose(layer.running_var, ref.running_var)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        z = TF.batch_norm(x, None, None, training=True, activation="relu")  # once per op
    assert torch.allclose(z, F.relu(F.batch_norm(x, None, None, training=True)))


def test_buffer_versions_move_like_torch(device):
    """torch bumps num_batches_tracked's version (add_), not the running statistics'."""
    bumps = []
    for cls in (tritonn.BatchNorm2d, torch.nn.BatchNorm2d):
        m = cls(3).to(device)
        before = [b._version for b in m.buffers()]
        m(torch.randn(2, 3, 4, 4, device=device))
        bumps.append([b._version - v for b, v in zip(m.buffers(), before)])
    assert bumps[0] == bumps[1]


@pytest.mark.parametrize("training", [True, False])
def test_strided_parameters_and_statistics(training, device):
    """Per-channel tensors that are strided views read right, and the running statistics
    update the viewed elements only."""
    C = 5
    x = torch.randn(3, C, 4, 6, device=device, requires_grad=True)
    store = {k: torch.randn(2 * C, device=device) for k in ("w", "b", "mean")}
    store["var"] = torch.rand(2 * C, device=device) + 0.5
    views = {k: v[::2] for k, v in store.items()}
    w, b = views["w"].clone().requires_grad_(), views["b"].clone().requires_grad_()
    w_strided = torch.stack([w, torch.zeros_like(w)], -1)[:, 0]
    b_strided = torch.stack([b, torch.zeros_like(b)], -1)[:, 0]
    ref_mean, ref_var = views["mean"].clone(), views["var"].clone()
    before = {k: v.clone() for k, v in store.items()}
    y = TF.batch_norm(x, views["mean"], views["var"], w_strided, b_strided, training, 0.3, 1e-5)
    x_ref, w_ref, b_ref = (t.detach().clone().requires_grad_() for t in (x, w, b))
    y_ref = F.batch_norm(x_ref, ref_mean, ref_var, w_ref, b_ref, training, 0.3, 1e-5)
    assert torch.allclose(y, y_ref, atol=1e-5)
    g = torch.randn_like(y)
    y.backward(g)
    y_ref.backward(g)
    for ours, theirs in ((x.grad, x_ref.grad), (w.grad, w_ref.grad), (b.grad, b_ref.grad)):
        assert torch.allclose(ours, theirs, atol=1e-4)
    assert torch.allclose(store["mean"][::2], ref_mean, atol=1e-6)
    assert torch.allclose(store["var"][::2], ref_var, atol=1e-6)
    for k in ("mean", "var"):  # the elements between the views are untouched
        assert torch.equal(store[k][1::2], before[k][1::2])
