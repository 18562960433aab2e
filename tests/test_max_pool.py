"""tritonn.MaxPool2d and tritonn.functional.max_pool2d against torch.

Max pooling is exact: besides the float64 rule (``compare``), outputs and indices
must equal torch's bit for bit in the same dtype (ties and NaNs included: both
follow the same scan rule), and float32 gradients too (the gather adds in the order
torch's scatter does).
"""

import copy
import inspect
import io
import math
import pickle
import warnings

import pytest
import torch
import torch.nn.functional as F

import tritonn
import tritonn.functional as TF
from tritonn import runtime
from tritonn.ops import max_pool

from .helpers import compare, no_native_compute, raises_like_torch
from .test_linear import SavedTensors

CL = torch.channels_last


def layout(x, fmt):
    return x.to(memory_format=CL) if fmt == "channels_last" else x


def untied(shape, dtype=torch.float32):
    """Distinct values (a random permutation), so float64 and every dtype agree on each argmax."""
    n = 1
    for s in shape:
        n *= s
    return (torch.randperm(n, dtype=torch.float64) - n / 2).reshape(shape).to(dtype)


def pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def reductions(kernel_size, stride=None, dilation=1, **_):
    """How many windows can share an input element: the sum length behind its gradient."""
    k, d = pair(kernel_size), pair(dilation)
    s = pair(stride) if stride is not None else k
    return {"x": math.prod(-(-((k[i] - 1) * d[i] + 1) // s[i]) for i in range(2))}


def check_exact(x, fmt="contiguous", grad=True, **kwargs):
    """Ours and torch on the same tensor in the same dtype: output, indices, memory
    format, and (float32/float64) the input gradient, all identical."""
    x = layout(x, fmt)
    ours_in = x.detach().clone().requires_grad_(grad)
    theirs_in = x.detach().clone().requires_grad_(grad)
    y, idx = TF.max_pool2d(ours_in, return_indices=True, **kwargs)
    y_ref, idx_ref = F.max_pool2d(theirs_in, return_indices=True, **kwargs)
    assert y.shape == y_ref.shape and y.dtype == y_ref.dtype
    assert torch.equal(y.isnan(), y_ref.isnan()), "NaN positions differ"
    assert torch.equal(y.nan_to_num(), y_ref.nan_to_num()), (y, y_ref)
    assert torch.equal(idx, idx_ref) and idx.dtype == torch.int64, (idx, idx_ref)
    if y.numel() > 1:
        assert y.stride() == y_ref.stride() and idx.stride() == idx_ref.stride(), (y.stride(), y_ref.stride())
    if grad:
        g = torch.randn(y.shape, dtype=torch.float64).to(x.device, x.dtype)
        y.backward(g)
        y_ref.backward(g)
        if x.dtype in (torch.float32, torch.float64):
            assert torch.equal(ours_in.grad, theirs_in.grad), (ours_in.grad - theirs_in.grad).abs().max()
        # without return_indices the saved indices are tap numbers: same gradient
        again = x.detach().clone().requires_grad_()
        y2 = TF.max_pool2d(again, **kwargs)
        y2.backward(g)
        assert torch.equal(y2.nan_to_num(), y.nan_to_num()) and torch.equal(again.grad, ours_in.grad)
    with torch.no_grad():
        y3 = TF.max_pool2d(x, **kwargs)
    assert torch.equal(y3.nan_to_num(), y_ref.nan_to_num()) and torch.equal(y3.isnan(), y_ref.isnan())
    return y


def check_reference(shape, dtype, device, fmt="contiguous", return_indices=True, **kwargs):
    """The float64 rule on random input, forward and backward."""
    def ours(x):
        return TF.max_pool2d(layout(x, fmt), return_indices=return_indices, **kwargs)

    def theirs(x):
        return F.max_pool2d(layout(x, fmt), return_indices=return_indices, **kwargs)

    leaves = {"x": untied(shape, torch.float64).requires_grad_()}
    compare(ours, theirs, leaves, dtype, device, reductions(**kwargs))


# ---------------------------------------------------------------- the module


def test_module_is_a_torch_maxpool2d_with_the_same_signature_and_repr():
    assert issubclass(tritonn.MaxPool2d, torch.nn.MaxPool2d)
    assert inspect.signature(tritonn.MaxPool2d.__init__) == inspect.signature(torch.nn.MaxPool2d.__init__)
    for args, kwargs in [((2,), {}), ((3, 2, 1), {}), (((2, 3),), dict(stride=1, padding=(1, 0), dilation=2,
                                                                       return_indices=True, ceil_mode=True))]:
        ours, theirs = tritonn.MaxPool2d(*args, **kwargs), torch.nn.MaxPool2d(*args, **kwargs)
        assert repr(ours) == repr(theirs)
        for attr in ("kernel_size", "stride", "padding", "dilation", "return_indices", "ceil_mode"):
            assert getattr(ours, attr) == getattr(theirs, attr), attr
        assert list(ours.parameters()) == [] and ours.state_dict() == {}
    assert tritonn.MaxPool2d(3).stride == 3


def test_module_forward_backward_copies_and_pickles(device):
    x = untied((2, 3, 9, 7)).to(device)
    for module in (tritonn.MaxPool2d(3, 2, 1), copy.deepcopy(tritonn.MaxPool2d(3, 2, 1)),
                   pickle.loads(pickle.dumps(tritonn.MaxPool2d(3, 2, 1)))):
        assert type(module) is tritonn.MaxPool2d
        xs = x.clone().requires_grad_()
        xr = x.clone().requires_grad_()
        y, y_ref = module(xs), torch.nn.MaxPool2d(3, 2, 1)(xr)
        assert torch.equal(y, y_ref)
        y.backward(torch.ones_like(y))
        y_ref.backward(torch.ones_like(y_ref))
        assert torch.equal(xs.grad, xr.grad)
    buf = io.BytesIO()
    torch.save(tritonn.MaxPool2d(2, return_indices=True), buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    y, idx = loaded(x)
    y_ref, idx_ref = F.max_pool2d(x, 2, return_indices=True)
    assert torch.equal(y, y_ref) and torch.equal(idx, idx_ref)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("fmt", ["contiguous", "channels_last"])
def test_module_against_float64(dtype, fmt, device):
    module = tritonn.MaxPool2d(3, 2, 1)
    ref = torch.nn.MaxPool2d(3, 2, 1)
    leaves = {"x": torch.randn(2, 5, 11, 9, dtype=torch.float64, requires_grad=True)}
    compare(lambda x: module(layout(x, fmt)), lambda x: ref(layout(x, fmt)), leaves, dtype, device, {"x": 4})


# ---------------------------------------------------------------- every option


OPTIONS = [  # kernel_size, stride, padding, dilation, ceil_mode
    (1, None, 0, 1, False),
    (1, 2, 0, 1, True),
    (2, None, 0, 1, False),
    (2, 1, 1, 1, False),
    (2, 2, 1, 1, True),          # ceil_mode drops the window starting in the right padding (5 -> 3)
    (2, 3, 0, 2, True),
    (3, 1, 1, 1, False),         # overlapping windows: up to 9 per input element
    (3, 2, 1, 1, True),          # ResNet's stem pool
    (3, 2, 0, 2, False),
    (3, 3, 1, 2, True),
    (3, None, 1, 1, True),
    ((2, 3), 1, (1, 0), 2, True),
    ((2, 3), (1, 2), (0, 1), (2, 1), False),
    ((3, 2), (2, 1), 1, 1, True),
]


@pytest.mark.parametrize("fmt", ["contiguous", "channels_last"])
@pytest.mark.parametrize("kernel,stride,padding,dilation,ceil_mode", OPTIONS)
def test_options_exactly_like_torch(kernel, stride, padding, dilation, ceil_mode, fmt, device):
    kwargs = dict(kernel_size=kernel, stride=stride, padding=padding, dilation=dilation, ceil_mode=ceil_mode)
    for shape in ((2, 3, 7, 9), (1, 2, 5, 5)):
        check_exact(untied(shape).to(device), fmt, **kwargs)


@pytest.mark.parametrize("fmt", ["contiguous", "channels_last"])
@pytest.mark.parametrize("option", [OPTIONS[3], OPTIONS[7], OPTIONS[11]])
@pytest.mark.parametrize("return_indices", [True, False])
def test_options_against_float64(option, return_indices, fmt, device):
    kernel, stride, padding, dilation, ceil_mode = option
    check_reference((2, 3, 13, 5), torch.float32, device, fmt, return_indices, kernel_size=kernel, stride=stride,
                    padding=padding, dilation=dilation, ceil_mode=ceil_mode)


# ---------------------------------------------------------------- shapes, layouts, dtypes


SHAPES = [  # input shape, kwargs
    ((3, 13, 5), dict(kernel_size=3, stride=2, padding=1)),              # unbatched
    ((1, 1, 1, 1), dict(kernel_size=1)),                                  # size-1 everything
    ((2, 3, 1, 6), dict(kernel_size=(1, 2))),                             # H == 1
    ((2, 1, 6, 1), dict(kernel_size=(3, 1), stride=1, padding=(1, 0))),   # W == 1, C == 1
    ((2, 3, 5, 5), dict(kernel_size=5, padding=2, ceil_mode=True)),       # one window covers the input
    ((2, 70, 7, 5), dict(kernel_size=2, stride=1)),                       # channels beyond one block
    ((5, 3, 13, 11), dict(kernel_size=3, stride=2)),
]


@pytest.mark.parametrize("fmt", ["contiguous", "channels_last"])
@pytest.mark.parametrize("shape,kwargs", SHAPES)
def test_shapes(shape, kwargs, fmt, device):
    if fmt == "channels_last" and len(shape) == 3:
        fmt = "contiguous"  # 3-D input has no channels_last; test a (H, W, C)-strided view instead
        x = untied(shape[1:] + shape[:1]).permute(2, 0, 1)
    else:
        x = untied(shape)
    check_exact(x.to(device), fmt, **kwargs)


@pytest.mark.parametrize("fmt", ["contiguous", "channels_last"])
def test_window_without_a_tap_inside_the_input(fmt, device):
    """Dilated taps can all fall in the padding or past the input: torch returns -inf and
    its first tap's index, which lies outside the plane (its own backward then misbehaves:
    it hangs on the CPU). We return the same, and route no gradient anywhere."""
    x = torch.randn(2, 3, 2, 2, device=device)
    check_exact(x, fmt, grad=False, kernel_size=2, stride=1, padding=1, dilation=3)
    xs = layout(x, fmt).clone().requires_grad_()
    for return_indices in (False, True):
        out = TF.max_pool2d(xs, 2, 1, 1, 3, return_indices=return_indices)
        y = out[0] if return_indices else out
        assert torch.equal(y, torch.full_like(y, float("-inf")))
        (gx,) = torch.autograd.grad(y, xs, torch.ones_like(y))
        assert torch.equal(gx, torch.zeros_like(gx))


@pytest.mark.parametrize("fmt", ["contiguous", "channels_last"])
def test_empty_batch(fmt, device):
    x = torch.randn(0, 3, 6, 6, device=device, requires_grad=True)
    y, idx = TF.max_pool2d(layout(x, fmt), 2, return_indices=True)
    assert y.shape == idx.shape == (0, 3, 3, 3)
    y.sum().backward()
    assert x.grad.shape == x.shape
    with torch.no_grad():
        assert TF.max_pool2d(x, 3, 1, 1).shape == (0, 3, 6, 6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("fmt", ["contiguous", "channels_last"])
def test_dtypes(dtype, fmt, device):
    # same dtype as torch: values and indices identical, ties included (randn rounded to bf16 ties often)
    check_exact(torch.randn(2, 4, 9, 8, device=device).to(dtype), fmt, kernel_size=3, stride=2, padding=1)
    check_reference((2, 4, 9, 8), dtype, device, fmt, True, kernel_size=3, stride=2, padding=1)


def test_non_contiguous_inputs_and_grads(device):
    base = untied((3, 4, 14, 12)).to(device)
    views = [
        base[:, :, ::2, 1:],                                    # strided rows, offset columns
        base.transpose(2, 3),                                   # W-major
        base[:, 1:3],                                           # channel slice
        base.to(memory_format=CL)[:, :, 1:-1:2],                # channels_last, sliced
        base.permute(1, 0, 2, 3),                               # N and C swapped: planes not mergeable
    ]
    for x in views:
        check_exact(x, kernel_size=3, stride=2, padding=1)
    for fmt in ("contiguous", "channels_last"):
        x = layout(base, fmt).clone().requires_grad_()
        x_ref = layout(base, fmt).clone().requires_grad_()
        TF.max_pool2d(x, 2, 1).sum().backward()         # grad_out is an expanded scalar: strides 0
        F.max_pool2d(x_ref, 2, 1).sum().backward()
        assert torch.equal(x.grad, x_ref.grad)
        x.grad = None
        y = TF.max_pool2d(x, 3, 2, 1)
        g = torch.randn(y.shape[::-1], device=device).permute(3, 2, 1, 0)  # reversed strides
        y.backward(g)
        y_ref = F.max_pool2d(x_ref, 3, 2, 1)
        x_ref.grad = None
        y_ref.backward(g)
        assert torch.equal(x.grad, x_ref.grad)
        assert x.grad.stride() == x_ref.grad.stride()


@pytest.mark.parametrize("fmt", ["contiguous", "channels_last"])
def test_many_programs(fmt, monkeypatch, device):
    """Tiny tiles: several programs along every tile axis (planes, rows, columns; positions, channels)."""
    for name, value in (("INTERPRETER_TILE", 16), ("GPU_TILE", 16), ("MAX_BLOCK_W", 4), ("MAX_BLOCK_C", 2)):
        monkeypatch.setattr(max_pool, name, value)
    assert max_pool.nchw_blocks(3, 8, 5) == {"BLOCK_P": 1, "BLOCK_H": 4, "BLOCK_W": 4}
    assert max_pool.nhwc_blocks(40, 3) == {"BLOCK_P": 8, "BLOCK_C": 2}
    check_exact(untied((1, 3, 16, 9)).to(device), fmt, kernel_size=3, stride=2, padding=1)


def test_gpu_tiles_for_resnet(monkeypatch):
    """The compiled path's tiles (the ones tests/compile_tier.py compiles): 56 rows pad
    to 56, not 64; 1024 elements a program."""
    monkeypatch.setattr(runtime, "INTERPRETING", False)
    assert max_pool.nchw_blocks(64 * 64, 56, 56) == {"BLOCK_P": 2, "BLOCK_H": 8, "BLOCK_W": 64}
    assert max_pool.nchw_blocks(64 * 64, 112, 112) == {"BLOCK_P": 1, "BLOCK_H": 8, "BLOCK_W": 128}
    assert max_pool.nchw_blocks(64 * 512, 7, 7) == {"BLOCK_P": 128, "BLOCK_H": 1, "BLOCK_W": 8}
    assert max_pool.nhwc_blocks(64 * 56 * 56, 64) == {"BLOCK_P": 16, "BLOCK_C": 64}


@pytest.mark.parametrize("fmt", ["contiguous", "channels_last"])
def test_int64_index_splits(fmt, monkeypatch, device):
    """WIDE: the int64 path a kernel takes when a split would overflow int32."""
    monkeypatch.setattr(max_pool, "_wide", lambda divisor, blocks: True)
    check_exact(untied((2, 3, 7, 9)).to(device), fmt, kernel_size=(2, 3), stride=1, padding=1, dilation=(1, 2),
                ceil_mode=True)


def test_large_kernel_uses_int32_tap_indices(device):
    assert max_pool.tap_index_dtype((12, 12)) == torch.int32 and max_pool.tap_index_dtype((3, 3)) == torch.int8
    check_exact(untied((1, 2, 13, 14)).to(device), kernel_size=12, stride=1, padding=(6, 0))


# ---------------------------------------------------------------- NaN, infinities, ties


@pytest.mark.parametrize("fmt", ["contiguous", "channels_last"])
def test_nan_inf_and_ties_like_torch(fmt, device):
    nan, inf = float("nan"), float("inf")
    x = torch.randn(2, 3, 8, 7, device=device)
    x[0, 0, 1, 1] = nan                    # one NaN in a window wins
    x[0, 1, 2, 2], x[0, 1, 2, 3] = nan, nan  # two in one window: torch keeps the last
    x[0, 2, 0:3, 0:3] = -inf               # windows of -inf: the first tap inside the input
    x[1, 0] = 0.5                          # all ties: the first tap wins
    x[1, 1, 4, 4] = inf
    x[1, 2, 5, 5] = nan
    x[1, 2, 5, 6] = inf
    for kwargs in (dict(kernel_size=3, stride=1, padding=1), dict(kernel_size=2, ceil_mode=True),
                   dict(kernel_size=(3, 2), stride=2, padding=1, dilation=(1, 2))):
        check_exact(x, fmt, **kwargs)


def test_overlapping_windows_backward_is_deterministic(device):
    x = torch.randint(0, 3, (2, 3, 11, 9), device=device).float()  # many ties: grads pile up
    for fmt in ("contiguous", "channels_last"):
        check_exact(x, fmt, kernel_size=3, stride=1, padding=1)
        xs = layout(x, fmt).clone().requires_grad_()
        g = torch.randn(2, 3, 11, 9, device=device)
        grads = []
        for _ in range(2):
            xs.grad = None
            TF.max_pool2d(xs, 3, 1, 1).backward(g)
            grads.append(xs.grad.clone())
        assert torch.equal(grads[0], grads[1])


# ---------------------------------------------------------------- autograd semantics


def test_saves_only_indices_and_nothing_without_grad(device):
    x = torch.randn(2, 3, 8, 8, device=device, requires_grad=True)
    with SavedTensors() as s:
        TF.max_pool2d(x, 3, 2, 1)
    assert [(t.dtype, tuple(t.shape)) for t in s.saved] == [(torch.int8, (2, 3, 4, 4))], "tap numbers, 1 byte each"
    with SavedTensors() as s:
        _, idx = TF.max_pool2d(x, 3, 2, 1, return_indices=True)
    assert len(s.saved) == 1 and s.saved[0].dtype == torch.int64 and not idx.requires_grad
    for mode in (torch.no_grad, torch.inference_mode):
        with mode(), SavedTensors() as s:
            y = TF.max_pool2d(x, 3, 2, 1)
        assert s.saved == [] and not y.requires_grad
    with SavedTensors() as s:
        y = TF.max_pool2d(x.detach(), 3, 2, 1)
    assert s.saved == [] and not y.requires_grad


def test_double_backward_refuses_instead_of_lying(device):
    x = torch.randn(1, 2, 6, 6, device=device, requires_grad=True)
    y = TF.max_pool2d(x, 2)
    g = torch.randn_like(y, requires_grad=True)
    with pytest.raises(RuntimeError, match="double backward is not supported"):
        torch.autograd.grad(y, x, g, create_graph=True)
    (gx,) = torch.autograd.grad(TF.max_pool2d(x, 2).sum(), x, create_graph=True)  # no second-order term
    assert torch.equal(gx, torch.autograd.grad(F.max_pool2d(x, 2).sum(), x)[0])


def test_retain_graph_and_in_place_index_change(device):
    x = torch.randn(1, 2, 6, 6, device=device, requires_grad=True)
    y, idx = TF.max_pool2d(x, 2, return_indices=True)
    g = torch.randn_like(y)
    y.backward(g, retain_graph=True)
    first = x.grad.clone()
    y.backward(g, retain_graph=True)
    assert torch.equal(x.grad, 2 * first)
    idx.zero_()
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.backward(g)


def test_autocast_leaves_the_dtype_alone(device):
    x = torch.randn(2, 3, 6, 6, device=device)
    with torch.autocast(device_type=device, dtype=torch.bfloat16):
        y, y_ref = TF.max_pool2d(x, 2), F.max_pool2d(x, 2)
    assert y.dtype == y_ref.dtype == torch.float32 and torch.equal(y, y_ref)


# ---------------------------------------------------------------- errors


BAD = [  # (input shape, args, kwargs, words the message must contain)
    ((8, 8), (2,), {}, ["3D", "4D", "2D", "(8, 8)"]),
    ((1, 2, 3, 8, 8), (2,), {}, ["3D", "4D", "5D"]),
    ((2, 3, 8, 8), (3,), dict(padding=2), ["pad=2", "kernel_size=3", "half"]),
    ((2, 3, 8, 8), ((3, 5),), dict(padding=(1, 3)), ["pad=3", "kernel_size=5"]),
    ((2, 3, 8, 8), (2,), dict(padding=-1), ["non-negative", "-1"]),
    ((1, 1, 4, 4), (2,), dict(padding=2, dilation=3), ["pad=2", "kernel_size=2", "half of kernel size"]),
    ((1, 1, 4, 4), ((1, 2),), dict(padding=(0, 2), dilation=(1, 3)), ["pad=2", "kernel_size=2"]),
    ((2, 3, 8, 8), (9,), {}, ["3x8x8", "3x0x0", "too small"]),
    ((0, 3, 1, 1), (2,), {}, ["3x1x1", "3x0x0"]),
    ((2, 3, 8, 8), (0,), {}, ["zero"]),
    ((2, 3, 8, 8), (-1,), {}, ["greater than zero", "-1"]),
    ((2, 3, 8, 8), (2,), dict(stride=0), ["zero"]),
    ((2, 3, 8, 8), (2,), dict(stride=-1), ["greater than zero", "-1"]),
    ((2, 3, 8, 8), (2,), dict(dilation=0), ["dilation", "greater than zero", "0"]),
    ((2, 3, 8, 8), ((2, 2, 2),), {}, ["kernel_size", "two ints", "3 values"]),
    ((2, 3, 8, 8), (2,), dict(stride=(1, 2, 3)), ["stride", "two ints"]),
    ((2, 3, 8, 8), (2,), dict(padding=(1, 1, 1)), ["padding", "two ints"]),
    ((2, 3, 8, 8), (2,), dict(dilation=(1, 2, 3)), ["dilation", "two ints"]),
    ((2, 3, 0, 8), (2,), {}, ["non-zero", "(2, 3, 0, 8)"]),
    ((2, 0, 8, 8), (2,), {}, ["non-zero", "(2, 0, 8, 8)"]),
    ((0, 8, 8), (2,), {}, ["non-zero", "(0, 8, 8)"]),
    ((2, 3, 8, 8), (2.0,), {}, ["kernel_size", "float"]),
]


@pytest.mark.parametrize("shape,args,kwargs,words", BAD)
def test_bad_arguments_raise_like_torch(shape, args, kwargs, words, device):
    x = torch.randn(shape, device=device)
    msg = raises_like_torch(lambda: TF.max_pool2d(x, *args, **kwargs), lambda: F.max_pool2d(x, *args, **kwargs))
    for word in words:
        assert word in msg, (word, msg)
    raises_like_torch(lambda: tritonn.MaxPool2d(*args, **kwargs)(x), lambda: torch.nn.MaxPool2d(*args, **kwargs)(x))


def test_bad_dtypes_and_inputs(device):
    x = torch.randn(2, 3, 8, 8, device=device)
    msg = raises_like_torch(lambda: TF.max_pool2d(x.bool(), 2), lambda: F.max_pool2d(x.bool(), 2))
    assert "Bool" in msg or "bool" in msg
    with pytest.raises(NotImplementedError, match="int64"):
        TF.max_pool2d(x.long(), 2)
    raises_like_torch(lambda: TF.max_pool2d([[1.0]], 2), lambda: F.max_pool2d([[1.0]], 2))


# ---------------------------------------------------------------- the Triton path


@pytest.mark.parametrize("fmt", ["contiguous", "channels_last"])
def test_only_triton_kernels_compute(fmt, device):
    x = layout(torch.randn(2, 3, 9, 8, device=device), fmt).requires_grad_()
    g = layout(torch.randn(2, 3, 5, 4, device=device), fmt)
    g_unbatched = torch.randn(3, 5, 4, device=device)
    for return_indices in (False, True):
        with no_native_compute():
            out = TF.max_pool2d(x, 3, 2, 1, return_indices=return_indices)
            y = out[0] if return_indices else out
            torch.autograd.grad(y, x, g)
    x_unbatched = torch.randn(3, 9, 8, device=device, requires_grad=True)
    with no_native_compute():
        tritonn.MaxPool2d(2, ceil_mode=True)(x_unbatched).backward(g_unbatched)
    with no_native_compute(), torch.no_grad():
        TF.max_pool2d(x, 3, 2, 1)


def test_meta_tensors_give_shapes_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y, idx = TF.max_pool2d(torch.randn(2, 3, 9, 8, device="meta"), 3, 2, 1, return_indices=True)
    assert y.shape == idx.shape == (2, 3, 5, 4) and y.device.type == "meta"


def test_fallback_warns_once_or_raises_when_strict(monkeypatch):
    monkeypatch.setattr(runtime, "INTERPRETING", False)
    monkeypatch.setattr(runtime, "_warned", set())
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(tritonn.FallbackError, match="TRITONN_STRICT"):
        TF.max_pool2d(x, 2)
    monkeypatch.setenv("TRITONN_STRICT", "0")
    with pytest.warns(RuntimeWarning, match="computing with torch"):
        y, idx = TF.max_pool2d(x, 3, 2, 1, return_indices=True)
    y_ref, idx_ref = F.max_pool2d(x, 3, 2, 1, return_indices=True)
    assert torch.equal(y, y_ref) and torch.equal(idx, idx_ref)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tritonn.MaxPool2d(2)(x)  # once per op
