"""tritonn.LSTM and tritonn.functional.lstm against torch.nn.LSTM."""

import inspect

import pytest
import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import tritonn
import tritonn.functional as TF
from tritonn.ops.dropout import apply_dropout_mask

from .helpers import GLUE_OPS, _Watch, compare, no_native_compute


def _module(cls, I, H, dtype=torch.float64, **options):
    return cls(I, H, **options).to(dtype)


def lstm_case(I=5, H=7, L=4, N=3, layers=1, bias=True, batch_first=False, bidirectional=False, proj=0,
              dropout=0.0, hx=True, unbatched=False, lengths=None, enforce_sorted=True, need_x=True, train=False):
    """(ours, theirs, leaves, reductions): the module's outputs and the grads of the input, h_0, c_0 and
    every parameter. ``lengths`` packs the (padded) input into a PackedSequence first."""
    options = dict(num_layers=layers, bias=bias, batch_first=batch_first, bidirectional=bidirectional,
                   proj_size=proj, dropout=dropout)
    master = _module(torch.nn.LSTM, I, H, **options)
    names = [n for n, _ in master.named_parameters()]
    leaves = {n: p.detach().clone().requires_grad_() for n, p in master.named_parameters()}
    D, R = 1 + bidirectional, proj or H
    if unbatched:
        shape = (L, I)
    else:
        shape = (N, L, I) if batch_first else (L, N, I)
    leaves["x"] = torch.randn(shape, dtype=torch.float64).requires_grad_(need_x)
    if hx:
        state = (layers * D,) if unbatched else (layers * D, N)
        leaves["h0"] = torch.randn(*state, R, dtype=torch.float64).requires_grad_()
        leaves["c0"] = torch.randn(*state, H, dtype=torch.float64).requires_grad_()

    def run(cls):
        def fn(x, h0=None, c0=None, **params):
            module = _module(cls, I, H, x.dtype, **options).train(train)
            inp = x
            if lengths is not None:
                inp = pack_padded_sequence(x, torch.tensor(lengths), batch_first=batch_first,
                                           enforce_sorted=enforce_sorted)
            out, (hn, cn) = torch.func.functional_call(
                module, {n: params[n] for n in names}, (inp, (h0, c0) if hx else None), strict=True)
            if lengths is not None:
                out = out.data
            return out, hn, cn
        return fn

    # errors grow with the matrix products behind a value and with the time steps
    n = L * (I + H + R) * layers
    reductions = {k: n for k in ("out0", "out1", "out2", "x", "h0", "c0", *names)}
    return run(tritonn.LSTM), run(torch.nn.LSTM), leaves, reductions


def check(device, dtype=torch.float32, **kw):
    ours, theirs, leaves, reductions = lstm_case(**kw)
    compare(ours, theirs, leaves, dtype, device, reductions)


# ---------------------------------------------------------------- the module


def test_lstm_is_a_torch_lstm_with_the_same_signature_parameters_and_state():
    assert issubclass(tritonn.LSTM, torch.nn.LSTM)
    assert inspect.signature(tritonn.LSTM.__init__) == inspect.signature(torch.nn.LSTM.__init__)
    args = dict(input_size=4, hidden_size=6, num_layers=2, bias=True, batch_first=True, dropout=0.25,
                bidirectional=True, proj_size=3)
    torch.manual_seed(1)
    ours = tritonn.LSTM(**args)
    torch.manual_seed(1)
    theirs = torch.nn.LSTM(**args)
    assert repr(ours) == repr(theirs)
    assert [(n, p.shape) for n, p in ours.named_parameters()] == [(n, p.shape) for n, p in theirs.named_parameters()]
    for (n, a), (_, b) in zip(ours.state_dict().items(), theirs.state_dict().items()):
        assert torch.equal(a, b), n  # same init from the same seed
    other = torch.nn.LSTM(**args)
    ours.load_state_dict(other.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), other.state_dict().values()))
    back = torch.nn.LSTM(**args)
    back.load_state_dict(tritonn.LSTM(**args).state_dict())
    assert "weight_hr_l1_reverse" in ours.state_dict()


# ---------------------------------------------------------------- forward and backward vs float64


GRID = [
    dict(),
    dict(bias=False),
    dict(batch_first=True),
    dict(hx=False),
    dict(bidirectional=True),
    dict(layers=2),
    dict(layers=3, bidirectional=True, H=5, L=3),
    dict(proj=3),
    dict(proj=4, bidirectional=True, layers=2, batch_first=True),
    dict(proj=2, bias=False, hx=False, layers=2),
    dict(layers=2, dropout=0.5),  # eval: no dropout
    dict(I=1, H=11, L=7, N=1),
    dict(I=9, H=12, L=1, N=2, bidirectional=True),
    dict(unbatched=True),
    dict(unbatched=True, hx=False, bidirectional=True, proj=2, layers=2, batch_first=True),
    dict(need_x=False, layers=2),
]


@pytest.mark.parametrize("kw", GRID, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "plain")
def test_lstm_matches_torch(device, kw):
    check(device, **kw)


@pytest.mark.parametrize("kw", [
    dict(lengths=[4, 3, 1]),
    dict(lengths=[2, 4, 1], enforce_sorted=False, bidirectional=True),
    dict(lengths=[3, 4, 4], enforce_sorted=False, hx=False, layers=2, proj=3, batch_first=True),
    dict(lengths=[1, 3, 2], enforce_sorted=False, bidirectional=True, layers=2, H=6),
], ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_lstm_packed_sequence_matches_torch(device, kw):
    check(device, L=4, N=3, **kw)


def test_packed_output_is_a_packed_sequence_with_torch_indices(device):
    x = torch.randn(4, 3, 5, device=device)
    packed = pack_padded_sequence(x, torch.tensor([2, 4, 3]), enforce_sorted=False)
    layer = tritonn.LSTM(5, 6).to(device)
    out, (hn, cn) = layer(packed)
    ref, (rh, rc) = torch.nn.LSTM.forward(layer, packed)
    assert isinstance(out, torch.nn.utils.rnn.PackedSequence)
    assert torch.equal(out.batch_sizes, ref.batch_sizes)
    assert torch.equal(out.sorted_indices, ref.sorted_indices)
    assert torch.equal(out.unsorted_indices, ref.unsorted_indices)
    torch.testing.assert_close(out.data, ref.data)
    torch.testing.assert_close(hn, rh)
    torch.testing.assert_close(cn, rc)


def test_lstm_float64_is_exact_to_rounding(device):
    ours, theirs, leaves, _ = lstm_case(layers=2, bidirectional=True, proj=3, L=5, N=2)
    got, _ = _outputs_and_grads(ours, leaves, device)
    want, _ = _outputs_and_grads(theirs, leaves, device)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def _outputs_and_grads(fn, leaves, device, seed=None):
    copies = {k: v.detach().to(device).requires_grad_(v.requires_grad) for k, v in leaves.items()}
    if seed is not None:
        torch.manual_seed(seed)
    outs = fn(**copies)
    g = torch.Generator().manual_seed(3)
    loss = sum((o * torch.randn(o.shape, generator=g, dtype=o.dtype).to(device)).sum() for o in outs)
    loss.backward()
    return [o.detach().cpu() for o in outs] + [copies[k].grad.cpu() for k in copies if copies[k].requires_grad], loss


def test_float16_and_bfloat16_on_gpu(device):
    if device != "cuda":
        pytest.skip("bf16/fp16 numerics are only meaningful on a GPU (the interpreter mishandles bf16)")
    for dtype in (torch.float16, torch.bfloat16):
        check(device, dtype, layers=2, bidirectional=True, proj=3)


# ---------------------------------------------------------------- dropout


def test_dropout_mask_statistics(device):
    x = torch.ones(200, 100, device=device)
    y = apply_dropout_mask(x, 0.3, 1234)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.7) < 0.02
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 1 / 0.7))
    assert torch.equal(apply_dropout_mask(x, 0.3, 1234), y)  # same seed, same mask
    assert not torch.equal(apply_dropout_mask(x, 0.3, 1235), y)
    assert (apply_dropout_mask(x, 1.0, 7) == 0).all()


def test_dropout_train_vs_eval(device):
    torch.manual_seed(0)
    layer = tritonn.LSTM(5, 8, num_layers=2, dropout=0.5).to(device)
    x = torch.randn(4, 3, 5, device=device)
    eval_out = layer.eval()(x)[0]
    ref = torch.nn.LSTM.forward(layer, x)[0]
    torch.testing.assert_close(eval_out, ref)
    layer.train()
    torch.manual_seed(5)
    a = layer(x)[0]
    torch.manual_seed(5)
    b = layer(x)[0]
    c = layer(x)[0]
    assert torch.equal(a, b)  # the seed comes from torch's generator
    assert not torch.equal(a, c)
    assert not torch.allclose(a, eval_out)
    single = tritonn.LSTM(5, 8, num_layers=1, dropout=0.0).train().to(device)
    torch.testing.assert_close(single(x)[0], torch.nn.LSTM.forward(single, x)[0])


@pytest.mark.parametrize("lengths", [None, [2, 3]], ids=["dense", "packed"])
def test_dropout_train_gradient_matches_finite_differences(device, lengths):
    """Training-mode dropout: the backward uses the forward's mask (same seed), checked by a
    central difference in float64."""
    fn, _, leaves, _ = lstm_case(layers=3, bidirectional=True, dropout=0.4, L=3, N=2, H=5, train=True,
                                 lengths=lengths, enforce_sorted=False)
    copies = {k: v.detach().to(device).requires_grad_(v.requires_grad) for k, v in leaves.items()}
    torch.manual_seed(11)
    outs = fn(**copies)
    g = [torch.randn(o.shape, dtype=o.dtype, device=device) for o in outs]
    sum((o * w).sum() for o, w in zip(outs, g)).backward()
    direction = {k: torch.randn_like(v) for k, v in copies.items()}
    analytic = sum((copies[k].grad * direction[k]).sum() for k in copies).item()
    eps = 1e-6

    def loss(sign):
        torch.manual_seed(11)
        with torch.no_grad():
            o = fn(**{k: copies[k].detach() + sign * eps * direction[k] for k in copies})
        return sum((a * w).sum() for a, w in zip(o, g)).item()

    numeric = (loss(1) - loss(-1)) / (2 * eps)
    assert abs(numeric - analytic) <= 1e-6 * max(1.0, abs(analytic)), (numeric, analytic)


# ---------------------------------------------------------------- errors


def _errors(call_ours, call_theirs):
    with pytest.raises(Exception) as theirs:
        call_theirs()
    with pytest.raises(type(theirs.value)) as ours:
        call_ours()
    return str(ours.value), str(theirs.value)


@pytest.mark.parametrize("case", ["input size", "h0 shape", "c0 shape", "batch mismatch", "4-D input",
                                  "unbatched with 3-D state", "batched with 2-D state"])
def test_lstm_errors_like_torch(device, case):
    options = dict(num_layers=2, bidirectional=True)
    ours_layer = tritonn.LSTM(5, 6, **options).to(device)
    theirs_layer = torch.nn.LSTM(5, 6, **options)
    x = torch.randn(3, 2, 5)
    h = torch.randn(4, 2, 6)
    c = torch.randn(4, 2, 6)
    args = {
        "input size": (torch.randn(3, 2, 4), None),
        "h0 shape": (x, (torch.randn(4, 2, 5), c)),
        "c0 shape": (x, (h, torch.randn(2, 2, 6))),
        "batch mismatch": (x, (torch.randn(4, 3, 6), torch.randn(4, 3, 6))),
        "4-D input": (torch.randn(3, 2, 5, 1), None),
        "unbatched with 3-D state": (torch.randn(3, 5), (h, c)),
        "batched with 2-D state": (x, (h[:, 0], c[:, 0])),
    }[case]

    def to(t):
        return tuple(to(a) for a in t) if isinstance(t, tuple) else (t.to(device) if t is not None else None)

    ours, theirs = _errors(lambda: ours_layer(*to(args)), lambda: theirs_layer(*args))
    assert ours == theirs
    if case in ("input size", "h0 shape", "c0 shape", "batch mismatch"):
        assert "Expected" in ours and "got" in ours


def test_functional_lstm_checks_shapes(device):
    layer = torch.nn.LSTM(5, 6).to(device)
    x = torch.randn(3, 2, 5, device=device)
    with pytest.raises(RuntimeError, match=r"Expected hidden\[0\] size \(1, 2, 6\), got \[1, 3, 6\]"):
        TF.lstm(x, (torch.zeros(1, 3, 6, device=device), torch.zeros(1, 2, 6, device=device)),
                layer._flat_weights, True, 1, 0.0, False, False, False)
    with pytest.raises(RuntimeError, match="Expected 5, got 4"):
        TF.lstm(x[..., :4], None, layer._flat_weights, True, 1, 0.0, False, False, False)


# ---------------------------------------------------------------- Triton really ran


@pytest.mark.parametrize("packed", [False, True])
def test_lstm_runs_no_native_compute(device, packed):
    layer = tritonn.LSTM(5, 6, num_layers=2, bidirectional=True, proj_size=4).to(device)
    x = torch.randn(4, 3, 5, device=device, requires_grad=True)
    h0 = torch.randn(4, 3, 4, device=device, requires_grad=True)
    c0 = torch.randn(4, 3, 6, device=device, requires_grad=True)
    inp = x
    if packed:  # a leaf PackedSequence, so that backward stops at its data (not in torch's unpacking)
        p = pack_padded_sequence(x.detach(), torch.tensor([2, 4, 3]), enforce_sorted=False)
        inp = PackedSequence(p.data.requires_grad_(), p.batch_sizes, p.sorted_indices, p.unsorted_indices)
    grads = [torch.randn(3 + 6 if packed else 4, 3, 8, device=device), torch.randn(4, 3, 4, device=device),
             torch.randn(4, 3, 6, device=device)]
    if packed:
        grads[0] = grads[0][:, 0]
    def forward_backward():
        out, (hn, cn) = layer(inp, (h0, c0))
        data = out.data if packed else out
        torch.autograd.backward([data, hn, cn], grads)

    if not packed:
        with no_native_compute():
            forward_backward()
    else:  # reading the CPU batch_sizes of a packed sequence (as torch does) is host glue too
        watch = _Watch()
        with watch:
            forward_backward()
        compute = sorted(set(watch.ops) - GLUE_OPS - {"_local_scalar_dense"})
        assert not compute, f"native torch compute ran: {compute}"
        assert watch.ops
    assert all(p.grad is not None for p in layer.parameters())


def test_create_graph_is_refused(device):
    layer = tritonn.LSTM(3, 4).to(device)
    x = torch.randn(2, 1, 3, device=device, requires_grad=True)
    out = layer(x)[0].sum()
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(out, x, create_graph=True)


def test_fallback_runs_torch(monkeypatch):
    monkeypatch.setenv("TRITONN_STRICT", "0")
    monkeypatch.setattr(tritonn.runtime, "runs_on_triton", lambda *t: False)
    layer = tritonn.LSTM(3, 4, bidirectional=True)
    x = torch.randn(2, 1, 3)
    with pytest.warns(RuntimeWarning, match="lstm"):
        tritonn.runtime._warned.discard("lstm")
        out = layer(x)
    torch.testing.assert_close(out[0], torch.nn.LSTM.forward(layer, x)[0])
    monkeypatch.setenv("TRITONN_STRICT", "1")
    with pytest.raises(tritonn.FallbackError):
        layer(x)


def test_autocast_like_torch(device):
    # (no proj_size here: torch's CPU projection path returns a float32 c_n under autocast, a quirk
    # of that fallback implementation; tritonn returns the autocast dtype for all three)
    theirs = torch.nn.LSTM(3, 4, num_layers=2).to(device)
    ours = tritonn.LSTM(3, 4, num_layers=2).to(device)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(5, 2, 3, device=device)
    with torch.autocast(device, dtype=torch.bfloat16):
        a, (ah, ac) = ours(x)
        b, (bh, bc) = theirs(x)
    assert (a.dtype, ah.dtype, ac.dtype) == (b.dtype, bh.dtype, bc.dtype)
    for u, v in ((a, b), (ah, bh), (ac, bc)):
        torch.testing.assert_close(u.float(), v.float(), atol=0.03, rtol=0.03)


def test_empty_batch_and_non_contiguous_input(device):
    theirs = torch.nn.LSTM(3, 4, bidirectional=True)
    ours = tritonn.LSTM(3, 4, bidirectional=True).to(device)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(5, 0, 3, requires_grad=True)
    out, (hn, cn) = ours(x.to(device))
    ref, (rh, rc) = theirs(x)
    assert (out.shape, hn.shape, cn.shape) == (ref.shape, rh.shape, rc.shape)
    out.sum().backward()
    assert (ours.weight_ih_l0.grad == 0).all() and (ours.bias_hh_l0_reverse.grad == 0).all()
    x = torch.randn(3, 5, 2).transpose(0, 2)  # (2, 5, 3), not contiguous
    torch.testing.assert_close(ours(x.to(device))[0].cpu(), theirs(x)[0], atol=1e-5, rtol=1e-5)


def test_several_tiles_and_programs(device):
    """Hidden and projection sizes past one tile, batch past one program, both directions, packed unsorted."""
    check(device, I=9, H=40, L=2, N=20, proj=35, bidirectional=True)
    check(device, I=6, H=36, L=3, N=18, layers=2, proj=33, lengths=[3, 1, 2] * 6, enforce_sorted=False)


def test_strided_parameters(device):
    """Parameters that are views with strides (a bias sliced out of a bigger tensor) read right."""
    layer = torch.nn.LSTM(5, 6, dtype=torch.float64).to(device)
    params = [p.detach() for p in layer._flat_weights]
    strided = [torch.stack([p, torch.zeros_like(p)], -1)[..., 0] for p in params]
    assert not any(p.is_contiguous() for p in strided if p.dim() == 1)
    x = torch.randn(4, 3, 5, dtype=torch.float64, device=device)
    ours = TF.lstm(x, None, strided, True, 1, 0.0, False, False, False)
    theirs = torch._VF.lstm(x, (torch.zeros(1, 3, 6, dtype=torch.float64, device=device),) * 2, params,
                            True, 1, 0.0, False, False, False)
    for a, b in zip(ours[:1] + tuple(ours[1]), theirs):
        assert torch.allclose(a, b, atol=1e-12)


@pytest.mark.parametrize("batch_first", [False, True])
def test_zero_time_steps_raise_like_torch(device, batch_first):
    x = torch.randn((2, 0, 3) if batch_first else (0, 2, 3), device=device)
    with pytest.raises(RuntimeError, match="sequence length to be larger than 0"):
        torch.nn.LSTM(3, 4, batch_first=batch_first).to(device)(x)
    with pytest.raises(RuntimeError, match="sequence length to be larger than 0"):
        tritonn.LSTM(3, 4, batch_first=batch_first).to(device)(x)
