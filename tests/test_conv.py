"""tritonn.Conv2d and tritonn.functional.conv2d against torch."""

import inspect

import pytest
import torch
import torch.nn.functional as F

import tritonn
import tritonn.functional as TF
from tritonn.ops.linear import torch_activation

from .helpers import compare, no_native_compute, raises_like_torch


def conv_case(n, c_in, hw, c_out, kernel, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros",
              bias=True, channels_last=False, activation=None, need=(True, True, True), view=None):
    """(ours, theirs, leaves, reductions) for one convolution; ``view`` transforms the input first."""
    kernel = (kernel, kernel) if isinstance(kernel, int) else kernel
    leaves = {
        "x": torch.randn(n, c_in, *hw, dtype=torch.float64).requires_grad_(need[0]),
        "w": (torch.randn(c_out, c_in // groups, *kernel, dtype=torch.float64)
              / (c_in // groups * kernel[0] * kernel[1]) ** 0.5).requires_grad_(need[1]),
    }
    if bias:
        leaves["b"] = torch.randn(c_out, dtype=torch.float64).requires_grad_(need[2])
    act_name = {None: "none"}.get(activation, activation)

    def prepare(x):
        if view is not None:
            x = view(x)
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x

    def ours(x, w, b=None):
        return TF.conv2d(prepare(x), w, b, stride, padding, dilation, groups, padding_mode=padding_mode,
                         activation=activation)

    def theirs(x, w, b=None):
        layer = torch.nn.Conv2d(c_in, c_out, kernel, stride, padding, dilation, groups, bias, padding_mode,
                                device="meta")
        return torch_activation(layer._conv_forward(prepare(x), w, b), act_name)

    pixels = n * hw[0] * hw[1]
    reductions = {"out0": c_in // groups * kernel[0] * kernel[1], "x": c_out // groups * kernel[0] * kernel[1],
                  "w": pixels, "b": pixels}
    return ours, theirs, leaves, reductions


def check(device, dtype=torch.float32, **kw):
    ours, theirs, leaves, reductions = conv_case(**kw)
    compare(ours, theirs, leaves, dtype, device, reductions)


# ---------------------------------------------------------------- the module


def test_conv2d_is_a_torch_conv2d_with_the_same_signature_init_and_state():
    assert issubclass(tritonn.Conv2d, torch.nn.Conv2d)
    assert inspect.signature(tritonn.Conv2d.__init__) == inspect.signature(torch.nn.Conv2d.__init__)
    args = dict(in_channels=4, out_channels=6, kernel_size=3, stride=2, padding=1, dilation=1, groups=2,
                bias=True, padding_mode="reflect")
    torch.manual_seed(1)
    ours = tritonn.Conv2d(**args)
    torch.manual_seed(1)
    theirs = torch.nn.Conv2d(**args)
    assert repr(ours) == repr(theirs)
    for k, v in theirs.state_dict().items():
        assert torch.equal(ours.state_dict()[k], v), k
    theirs.load_state_dict(ours.state_dict())


def test_module_matches_torch_with_every_constructor_option(device):
    torch.manual_seed(2)
    theirs = torch.nn.Conv2d(6, 4, (3, 2), stride=(2, 1), padding=(2, 1), dilation=(1, 2), groups=2,
                             padding_mode="circular", dtype=torch.float64)
    ours = tritonn.Conv2d(6, 4, (3, 2), stride=(2, 1), padding=(2, 1), dilation=(1, 2), groups=2,
                          padding_mode="circular", dtype=torch.float64)
    ours.load_state_dict(theirs.state_dict())

    def run(layer):
        return lambda x, weight, bias: torch.func.functional_call(layer, {"weight": weight, "bias": bias}, (x,))

    leaves = {"x": torch.randn(2, 6, 9, 7, dtype=torch.float64, requires_grad=True),
              "weight": theirs.weight.detach().clone().requires_grad_(),
              "bias": theirs.bias.detach().clone().requires_grad_()}
    compare(run(ours), run(theirs), leaves, torch.float32, device, {"out0": 18, "x": 12, "weight": 63, "bias": 63})


# ---------------------------------------------------------------- geometry


@pytest.mark.parametrize("kernel,stride,padding,dilation", [
    (3, 1, 0, 1),
    (3, 2, 1, 1),
    (3, 3, 2, 1),
    (3, 1, 2, 2),
    (3, 2, 1, 3),
    (5, 1, 2, 1),
    (7, 2, 3, 1),
    ((1, 3), 1, (0, 1), 1),
    (1, 2, 0, 1),
    (1, 1, 1, 1),
    (2, 1, "same", 1),
    (3, 1, "same", 2),
    (3, 2, "valid", 1),
])
def test_geometry(kernel, stride, padding, dilation, device):
    check(device, n=2, c_in=3, hw=(9, 11), c_out=5, kernel=kernel, stride=stride, padding=padding, dilation=dilation)


@pytest.mark.parametrize("groups,c_in,c_out", [(2, 4, 6), (3, 6, 3), (4, 4, 4), (4, 4, 8), (3, 3, 9)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_groups_and_depthwise_with_channel_multipliers(groups, c_in, c_out, channels_last, device):
    check(device, n=2, c_in=c_in, hw=(7, 9), c_out=c_out, kernel=3, stride=2 if groups == 4 else 1, padding=1,
          groups=groups, channels_last=channels_last)


@pytest.mark.parametrize("padding_mode", ["reflect", "replicate", "circular"])
@pytest.mark.parametrize("groups,padding,stride", [(1, 2, 1), (4, 1, 2), (1, (1, 3), 1)])
def test_padding_modes(padding_mode, groups, padding, stride, device):
    check(device, n=2, c_in=4, hw=(7, 9), c_out=4, kernel=3, padding=padding, stride=stride, groups=groups,
          padding_mode=padding_mode)


def test_padding_mode_with_same_padding_and_channels_last(device):
    check(device, n=1, c_in=3, hw=(6, 5), c_out=2, kernel=(2, 4), padding="same", padding_mode="reflect",
          channels_last=True)


@pytest.mark.parametrize("channels_last", [False, True])
def test_pointwise_gemm_path(channels_last, device):
    check(device, n=3, c_in=5, hw=(4, 7), c_out=6, kernel=1, channels_last=channels_last)


def test_small_and_odd_shapes(device):
    check(device, n=1, c_in=1, hw=(3, 3), c_out=1, kernel=3)  # 1x1 output
    check(device, n=3, c_in=2, hw=(1, 9), c_out=3, kernel=(1, 3))
    check(device, n=2, c_in=3, hw=(5, 5), c_out=2, kernel=3, bias=False)


def test_empty_batch(device):
    ours, theirs, leaves, reductions = conv_case(0, 3, (5, 5), 4, 3)
    compare(ours, theirs, leaves, torch.float32, device, reductions)


def test_unbatched_input(device):
    ours, theirs, leaves, reductions = conv_case(1, 3, (6, 5), 4, 3, padding=1)
    leaves["x"] = leaves["x"].detach()[0].requires_grad_()
    compare(ours, theirs, leaves, torch.float32, device, reductions)


def test_non_contiguous_input(device):
    check(device, n=2, c_in=3, hw=(8, 10), c_out=4, kernel=3, padding=1,
          view=lambda x: x[:, :, ::2, 1:].transpose(2, 3))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_dtypes(dtype, device):
    check(device, dtype, n=2, c_in=4, hw=(7, 6), c_out=6, kernel=3, padding=1, channels_last=dtype == torch.bfloat16)
    check(device, dtype, n=2, c_in=4, hw=(7, 6), c_out=8, kernel=3, padding=1, groups=4)


@pytest.mark.parametrize("activation", ["relu", "gelu", "silu"])
def test_fused_activation(activation, device):
    check(device, n=2, c_in=4, hw=(6, 7), c_out=5, kernel=3, padding=1, activation=activation)
    check(device, n=2, c_in=4, hw=(6, 7), c_out=4, kernel=3, padding=1, groups=4, activation=activation,
          channels_last=True)


@pytest.mark.parametrize("need", [(True, False, False), (False, True, False), (False, False, True)])
def test_only_requested_gradients(need, device):
    check(device, n=2, c_in=4, hw=(6, 5), c_out=4, kernel=3, need=need)
    check(device, n=2, c_in=4, hw=(6, 5), c_out=4, kernel=3, groups=4, need=need)


# ---------------------------------------------------------------- layouts and semantics


@pytest.mark.parametrize("x_cl,w_cl", [(False, False), (True, False), (False, True)])
@pytest.mark.parametrize("groups,kernel", [(1, 3), (4, 3), (1, 1)])
def test_output_memory_format_follows_torch(x_cl, w_cl, groups, kernel, device):
    x = torch.randn(2, 4, 5, 6, device=device)
    w = torch.randn(4, 4 // groups, kernel, kernel, device=device)
    if x_cl:
        x = x.contiguous(memory_format=torch.channels_last)
    if w_cl:
        w = w.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        ours, theirs = TF.conv2d(x, w, groups=groups), F.conv2d(x, w, groups=groups)
    assert ours.is_contiguous(memory_format=torch.channels_last) == theirs.is_contiguous(
        memory_format=torch.channels_last)
    assert ours.is_contiguous() == theirs.is_contiguous()


def test_autocast_matches_nn_conv2d(device):
    theirs = torch.nn.Conv2d(3, 4, 3).to(device)
    ours = tritonn.Conv2d(3, 4, 3).to(device)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 3, 6, 6, device=device)
    with torch.autocast(device_type=device, dtype=torch.bfloat16):
        y, y_ref = ours(x), theirs(x)
    assert y.dtype == y_ref.dtype == torch.bfloat16
    with torch.autocast(device_type=device, dtype=torch.bfloat16):  # a bf16 input meets fp32 weights
        assert ours(y.detach()[:, :3]).dtype == theirs(y_ref.detach()[:, :3]).dtype == torch.bfloat16
    y.float().sum().backward()
    assert ours.weight.grad.dtype == torch.float32


def test_only_triton_kernels_compute(device):
    for kw in (dict(groups=1, kernel=3, padding_mode="reflect"), dict(groups=4, kernel=3, padding_mode="zeros"),
               dict(groups=1, kernel=1, padding_mode="zeros")):
        x = torch.randn(2, 4, 6, 5, device=device, requires_grad=True)
        w = torch.randn(4, 4 // kw["groups"], kw["kernel"], kw["kernel"], device=device, requires_grad=True)
        b = torch.randn(4, device=device, requires_grad=True)
        pad = kw["kernel"] // 2
        g = torch.randn(2, 4, 6, 5, device=device)
        with no_native_compute():
            y = TF.conv2d(x, w, b, padding=pad, groups=kw["groups"], padding_mode=kw["padding_mode"],
                          activation="gelu")
            torch.autograd.grad(y, (x, w, b), g)


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("make_x,weight_shape,kw", [
    (lambda: torch.randn(2, 4, 5, 5), (8, 3, 3, 3), {}),                # wrong channel count
    (lambda: torch.randn(2, 3), (8, 3, 3, 3), {}),                      # wrong rank
    (lambda: torch.randn(2, 3, 2, 2), (8, 3, 3, 3), {}),                # kernel larger than padded input
    (lambda: torch.randn(1, 3, 5, 5), (8, 3, 3, 3), {"stride": 0}),
    (lambda: torch.randn(1, 3, 5, 5), (8, 3, 3, 3), {"padding": -1}),
    (lambda: torch.randn(1, 4, 5, 5), (6, 2, 3, 3), {"groups": 4}),     # groups do not divide
    (lambda: torch.randn(1, 3, 5, 5), (8, 3, 3, 3), {"padding": "same", "stride": 2}),
    (lambda: torch.randn(1, 3, 5, 5), (8, 3, 3, 3), {"padding": "full"}),
])
def test_bad_inputraises_like_torch(make_x, weight_shape, kw, device):
    x, w = make_x().to(device), torch.randn(weight_shape, device=device)
    raises_like_torch(lambda: TF.conv2d(x, w, **kw), lambda: F.conv2d(x, w, **kw))


def test_bad_input_messages_name_expected_and_got(device):
    layer = tritonn.Conv2d(3, 8, 3).to(device)
    msg = raises_like_torch(lambda: layer(torch.randn(2, 4, 5, 5, device=device)),
                             lambda: torch.nn.Conv2d(3, 8, 3).to(device)(torch.randn(2, 4, 5, 5, device=device)))
    assert "3 channels" in msg and "4 channels" in msg
    msg = raises_like_torch(lambda: layer(torch.randn(2, 3, 2, 2, device=device)),
                             lambda: torch.nn.Conv2d(3, 8, 3).to(device)(torch.randn(2, 3, 2, 2, device=device)))
    assert "(2 x 2)" in msg and "(3 x 3)" in msg
    x64 = torch.randn(1, 3, 5, 5, dtype=torch.float64, device=device)
    msg = raises_like_torch(lambda: layer(x64), lambda: torch.nn.Conv2d(3, 8, 3).to(device)(x64))
    assert "double" in msg or "float64" in msg


@pytest.mark.parametrize("kw", [dict(groups=2), dict(padding="same", stride=2), dict(padding="full"),
                                dict(padding_mode="mirror"), dict(groups=0)])
def test_bad_constructionraises_like_torch(kw):
    args = dict(in_channels=3, out_channels=8, kernel_size=3)
    raises_like_torch(lambda: tritonn.Conv2d(**args, **kw), lambda: torch.nn.Conv2d(**args, **kw))


@pytest.mark.parametrize("mode,padding", [("reflect", 3), ("circular", 4)])
def test_padding_larger_than_inputraises_like_torch(mode, padding, device):
    x = torch.randn(1, 3, 3, 3, device=device)
    raises_like_torch(lambda: tritonn.Conv2d(3, 2, 3, padding=padding, padding_mode=mode).to(device)(x),
                       lambda: torch.nn.Conv2d(3, 2, 3, padding=padding, padding_mode=mode).to(device)(x))
