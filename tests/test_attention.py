"""tritonn.functional.scaled_dot_product_attention and tritonn.MultiheadAttention against torch."""

import inspect

import pytest
import torch
import torch.nn.functional as F

import tritonn
import tritonn.functional as TF
from tritonn.ops.attention import Options, attention

from .helpers import compare, no_native_compute

# ---------------------------------------------------------------- SDPA


def sdpa_leaves(shape_q, shape_k, shape_v):
    return {"q": torch.randn(*shape_q, dtype=torch.float64, requires_grad=True),
            "k": torch.randn(*shape_k, dtype=torch.float64, requires_grad=True),
            "v": torch.randn(*shape_v, dtype=torch.float64, requires_grad=True)}


def make_mask(kind, shape, dtype=torch.float64):
    if kind is None:
        return None
    if kind == "bool":
        m = torch.rand(shape) < 0.7
        m[..., 0] = True  # keep one key per row unless a test wants empty rows
        return m
    return torch.randn(shape, dtype=dtype)


def check_sdpa(device, q_shape, k_shape, v_shape, mask=None, dtype=torch.float32, **kw):
    leaves = sdpa_leaves(q_shape, k_shape, v_shape)

    def cast(m, x):
        return m if m is None or m.dtype == torch.bool else m.to(device=x.device, dtype=x.dtype)

    def ours(q, k, v):
        m = None if mask is None else cast(mask, q).to(q.device)
        return TF.scaled_dot_product_attention(q, k, v, m, **kw)

    def theirs(q, k, v):
        m = None if mask is None else cast(mask, q).to(q.device)
        return F.scaled_dot_product_attention(q, k, v, m, **kw)

    S, E = k_shape[-2], q_shape[-1]
    L = q_shape[-2]
    compare(ours, theirs, leaves, dtype, device, {"out0": S + E, "q": S + v_shape[-1], "k": L + E, "v": L})


@pytest.mark.parametrize("L,S,E,Ev", [(1, 1, 8, 8), (7, 33, 24, 24), (100, 37, 8, 16), (33, 100, 64, 64),
                                      (7, 9, 100, 40)])
@pytest.mark.parametrize("causal", [False, True])
def test_sdpa_shapes_and_causal(device, L, S, E, Ev, causal):
    check_sdpa(device, (2, 2, L, E), (2, 2, S, E), (2, 2, S, Ev), is_causal=causal)


@pytest.mark.parametrize("kind,mask_shape", [("bool", (7, 33)), ("float", (2, 1, 7, 33)), ("bool", (1, 3, 1, 33)),
                                             ("float", (2, 3, 7, 33))])
def test_sdpa_masks_broadcast(device, kind, mask_shape):
    check_sdpa(device, (2, 3, 7, 16), (2, 3, 33, 16), (2, 3, 33, 8), mask=make_mask(kind, mask_shape))


def test_sdpa_scale_unbatched_3d_and_views(device):
    check_sdpa(device, (5, 16), (9, 16), (9, 16), scale=0.3)
    check_sdpa(device, (3, 5, 16), (3, 9, 16), (3, 9, 8), is_causal=True)
    # non-contiguous: (B, L, H, E) storage read as (B, H, L, E)
    leaves = sdpa_leaves((2, 7, 3, 16), (2, 11, 3, 16), (2, 11, 3, 16))

    def run(fn):
        return lambda q, k, v: fn(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))

    compare(run(TF.scaled_dot_product_attention), run(F.scaled_dot_product_attention), leaves, torch.float32, device,
            {"out0": 32, "q": 32, "k": 32, "v": 7})


def test_sdpa_gqa_and_broadcast_heads(device):
    check_sdpa(device, (2, 6, 9, 16), (2, 2, 13, 16), (2, 2, 13, 16), enable_gqa=True, is_causal=True)
    check_sdpa(device, (1, 4, 9, 16), (1, 1, 13, 16), (1, 1, 13, 16), mask=make_mask("float", (9, 13)))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_sdpa_other_dtypes(device, dtype):
    check_sdpa(device, (1, 2, 33, 64), (1, 2, 40, 64), (1, 2, 40, 64), dtype=dtype, is_causal=True)
    check_sdpa(device, (1, 2, 9, 8), (1, 2, 13, 8), (1, 2, 13, 8), dtype=dtype, mask=make_mask("float", (9, 13)))


@pytest.mark.parametrize("kind", ["bool", "float"])
def test_sdpa_fully_masked_rows_match_torch(device, kind):
    """torch's SDPA gives 0 (output and gradients) for a row whose keys are all masked."""
    L, S = 6, 10
    if kind == "bool":
        mask = torch.rand(L, S) < 0.6
        mask[:, 0] = True
        mask[2] = False
    else:
        mask = torch.randn(L, S, dtype=torch.float64)
        mask[2] = float("-inf")
        mask[4, 3:] = float("-inf")
    check_sdpa(device, (2, 2, L, 8), (2, 2, S, 8), (2, 2, S, 8), mask=mask)


def test_sdpa_runs_only_triton_kernels(device):
    q, k, v = (torch.randn(2, 3, 9, 16, device=device, requires_grad=True) for _ in range(3))
    mask = torch.rand(9, 9, device=device) < 0.8
    g = torch.randn(2, 3, 9, 16, device=device)
    with no_native_compute():
        out = TF.scaled_dot_product_attention(q, k, v, mask)
        out.backward(g)
    with no_native_compute():
        out = TF.scaled_dot_product_attention(q.detach(), k.detach(), v.detach(), is_causal=True)


def _keep_mask(q, k, opt, masks=(None, None)):
    """The dropout decisions the kernels made: zeros of the per-head weights."""
    with torch.no_grad():
        _, w = attention(q, k, k, masks, opt, need_weights=True, average=False)
    return w != 0


@pytest.mark.parametrize("causal", [False, True])
def test_sdpa_dropout_is_consistent_forward_and_backward(device, causal):
    """With the kernel's keep mask read back, the output and every gradient equal
    float64 attention with that mask: backward regenerates forward's bits."""
    B, H, L, S, E, p = 2, 2, 17, 40, 16, 0.3
    q, k, v = (torch.randn(B, H, n, E, dtype=torch.float64) for n in (L, S, S))
    opt = Options(scale=E ** -0.5, is_causal=causal, dropout_p=p, seed=1234, nan_rows=False)
    qf, kf, vf = (t.float().to(device).requires_grad_() for t in (q, k, v))
    out, _ = attention(qf, kf, vf, opt=opt)
    g = torch.randn(B, H, L, E, dtype=torch.float64)
    out.backward(g.float().to(device))
    keep = _keep_mask(qf.detach(), kf.detach(), opt).cpu()
    frac = keep.float().mean().item() if not causal else None
    if frac is not None:
        assert abs(frac - (1 - p)) < 0.03, frac
    q64, k64, v64 = (t.clone().requires_grad_() for t in (q, k, v))
    s = q64 @ k64.transpose(-1, -2) * E ** -0.5
    if causal:
        s = s.masked_fill(~torch.ones(L, S, dtype=torch.bool).tril(), float("-inf"))
    ref = (s.softmax(-1) * keep / (1 - p)) @ v64
    ref.backward(g)
    assert (out.detach().cpu().double() - ref).abs().max() < 1e-5
    for ours, theirs in ((qf, q64), (kf, k64), (vf, v64)):
        assert (ours.grad.cpu().double() - theirs.grad).abs().max() < 1e-5


def test_sdpa_dropout_statistics_and_seeding(device):
    q, k, v = (torch.randn(1, 2, 64, 16, device=device) for _ in range(3))
    ref = TF.scaled_dot_product_attention(q, k, v)
    torch.manual_seed(5)
    a = TF.scaled_dot_product_attention(q, k, v, dropout_p=0.4)
    torch.manual_seed(5)
    b = TF.scaled_dot_product_attention(q, k, v, dropout_p=0.4)
    c = TF.scaled_dot_product_attention(q, k, v, dropout_p=0.4)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.allclose(a, ref)
    # unbiased: the mean over many draws approaches the dropout-free output
    runs = torch.stack([TF.scaled_dot_product_attention(q, k, v, dropout_p=0.4) for _ in range(8)]).mean(0)
    assert (runs - ref).abs().mean() < (a - ref).abs().mean()
    assert torch.equal(TF.scaled_dot_product_attention(q, k, v, dropout_p=1.0), torch.zeros_like(ref))


def _errors(fn, *args, **kw):
    try:
        fn(*args, **kw)
    except Exception as e:  # noqa: BLE001
        return type(e)
    return None


@pytest.mark.parametrize("case", ["mask_and_causal", "dtype", "head_dim", "length", "gqa", "mask_dtype", "dropout"])
def test_sdpa_errors_like_torch(device, case):
    q, k, v = torch.randn(2, 4, 5, 8), torch.randn(2, 4, 7, 8), torch.randn(2, 4, 7, 6)
    kw = {}
    if case == "mask_and_causal":
        kw = dict(attn_mask=torch.ones(5, 7, dtype=torch.bool), is_causal=True)
    elif case == "dtype":
        k = k.double()
    elif case == "head_dim":
        k = torch.randn(2, 4, 7, 9)
    elif case == "length":
        v = torch.randn(2, 4, 8, 6)
    elif case == "gqa":
        k, v = torch.randn(2, 3, 7, 8), torch.randn(2, 3, 7, 6)
        kw = dict(enable_gqa=True)
    elif case == "mask_dtype":
        kw = dict(attn_mask=torch.ones(5, 7, dtype=torch.int32))
    elif case == "dropout":
        kw = dict(dropout_p=1.5)
    expected = _errors(F.scaled_dot_product_attention, q, k, v, **kw)
    assert expected is not None
    q, k, v = (t.to(device) for t in (q, k, v))
    kw = {n: (t.to(device) if isinstance(t, torch.Tensor) else t) for n, t in kw.items()}
    with pytest.raises(expected):
        TF.scaled_dot_product_attention(q, k, v, **kw)


# ---------------------------------------------------------------- MultiheadAttention


def test_mha_is_a_torch_mha_with_the_same_signature_init_and_state():
    assert issubclass(tritonn.MultiheadAttention, torch.nn.MultiheadAttention)
    assert inspect.signature(tritonn.MultiheadAttention.__init__) == inspect.signature(
        torch.nn.MultiheadAttention.__init__)
    assert inspect.signature(tritonn.MultiheadAttention.forward) == inspect.signature(
        torch.nn.MultiheadAttention.forward)
    for kw in (dict(), dict(kdim=6, vdim=10, add_bias_kv=True, bias=False, add_zero_attn=True, batch_first=True)):
        torch.manual_seed(3)
        ours = tritonn.MultiheadAttention(16, 4, dropout=0.1, **kw)
        torch.manual_seed(3)
        theirs = torch.nn.MultiheadAttention(16, 4, dropout=0.1, **kw)
        assert repr(ours) == repr(theirs)
        assert ours.state_dict().keys() == theirs.state_dict().keys()
        for n, t in theirs.state_dict().items():
            assert torch.equal(ours.state_dict()[n], t), n
        ours.load_state_dict(theirs.state_dict())


def mha_case(E=16, H=2, L=7, S=9, N=3, kdim=None, vdim=None, bias=True, add_bias_kv=False, add_zero_attn=False,
             batch_first=False, need_weights=True, average=True, mask=None, kpm=None, is_causal=False, unbatched=False,
             self_attention=False, kv_same=False):
    kw = dict(bias=bias, add_bias_kv=add_bias_kv, add_zero_attn=add_zero_attn, kdim=kdim, vdim=vdim,
              batch_first=batch_first, dtype=torch.float64)
    theirs = torch.nn.MultiheadAttention(E, H, **kw)
    with torch.no_grad():
        for p in theirs.parameters():
            if p.dim() == 1 or p.shape[:2] == (1, 1):
                p.normal_()  # biases (zero at init) and bias_k/v
    ours = tritonn.MultiheadAttention(E, H, **kw)
    ours.load_state_dict(theirs.state_dict())

    def shape(n, length, e):
        return (length, e) if unbatched else ((n, length, e) if batch_first else (length, n, e))

    if self_attention:
        S = L
    leaves = {"query": torch.randn(*shape(N, L, E), dtype=torch.float64, requires_grad=True)}
    if not self_attention:
        leaves["key"] = torch.randn(*shape(N, S, kdim or E), dtype=torch.float64, requires_grad=True)
        if not kv_same:
            leaves["value"] = torch.randn(*shape(N, S, vdim or E), dtype=torch.float64, requires_grad=True)
    for n, p in theirs.named_parameters():
        leaves[n.replace(".", "_")] = p.detach().clone().requires_grad_()
    attn_mask = {None: None,
                 "bool2": torch.rand(L, S) < 0.3,
                 "float2": torch.randn(L, S, dtype=torch.float64),
                 "bool3": torch.rand(N * H, L, S) < 0.3,
                 "float3": torch.randn(N * H, L, S, dtype=torch.float64),
                 "causal": torch.nn.Transformer.generate_square_subsequent_mask(L, dtype=torch.float64)}[mask]
    padding = {None: None, "bool": torch.rand(N, S) < 0.3, "float": torch.randn(N, S, dtype=torch.float64)}[kpm]
    if padding is not None and unbatched:
        padding = padding[0]
    names = [n for n, _ in theirs.named_parameters()]

    def as_fn(module, detach_weights):
        def fn(query, key=None, value=None, **params):
            if key is None:
                key = value = query
            elif value is None:
                value = key
            m = module.to(query.dtype)
            cast = lambda t: t if t is None or t.dtype == torch.bool else t.to(query.dtype)  # noqa: E731
            out, w = torch.func.functional_call(
                m, {n: params[n.replace(".", "_")] for n in names}, (query, key, value),
                dict(key_padding_mask=cast(padding), need_weights=need_weights, attn_mask=cast(attn_mask),
                     average_attn_weights=average, is_causal=is_causal))
            return (out, w.detach()) if detach_weights and w is not None else (out, w)
        return fn

    reductions = {"out0": S + E, "out1": E, **{n: L * N + S for n in leaves}}
    return as_fn(ours, False), as_fn(theirs, True), leaves, reductions


MHA_GRID = [
    dict(),
    dict(self_attention=True, batch_first=True, need_weights=False),
    dict(L=33, S=2, E=48, H=2, average=False),
    dict(L=1, S=100, E=24, H=3, mask="float2", kpm="bool"),
    dict(kdim=8, vdim=12, add_bias_kv=True, add_zero_attn=True, mask="float3", kpm="float", average=False),
    dict(bias=False, mask="bool3", kpm="bool", batch_first=True, need_weights=False),
    dict(add_zero_attn=True, mask="bool2", need_weights=False, unbatched=True),
    dict(add_bias_kv=True, kpm="bool", unbatched=True, average=False),
    dict(self_attention=True, mask="causal", is_causal=True, need_weights=False),
    dict(self_attention=True, mask="causal", is_causal=True, need_weights=True, kpm="float"),
    dict(E=128, H=2, L=9, S=13, mask="bool2"),  # head dim 64
    dict(kv_same=True, kpm="float", need_weights=False),  # packed k/v projection
]


@pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask and attn_mask")
@pytest.mark.parametrize("options", MHA_GRID, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
def test_mha_matches_torch(device, options):
    ours, theirs, leaves, reductions = mha_case(**options)
    compare(ours, theirs, leaves, torch.float32, device, reductions)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float64])
def test_mha_other_dtypes(device, dtype):
    ours, theirs, leaves, reductions = mha_case(E=32, H=2, L=17, S=20, mask="bool2", kpm="bool")
    compare(ours, theirs, leaves, dtype, device, reductions)


@pytest.mark.parametrize("need_weights", [True, False])
def test_mha_fully_masked_rows_match_torch(device, need_weights):
    """torch gives NaN rows through its softmax path (need_weights=True) and 0 through SDPA."""
    torch.manual_seed(0)
    theirs = torch.nn.MultiheadAttention(16, 2)
    ours = tritonn.MultiheadAttention(16, 2).to(device)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(5, 2, 16)
    padding = torch.zeros(2, 5, dtype=torch.bool)
    padding[1] = True  # the whole second sequence is padding
    mask = torch.zeros(5, 5, dtype=torch.bool)
    mask[3] = True
    ref, ref_w = theirs(x, x, x, key_padding_mask=padding, attn_mask=mask, need_weights=need_weights)
    out, w = ours(x.to(device), x.to(device), x.to(device), key_padding_mask=padding.to(device),
                  attn_mask=mask.to(device), need_weights=need_weights)
    out = out.cpu()
    assert torch.equal(out.isnan(), ref.isnan())
    assert (out - ref).nan_to_num().abs().max() < 1e-5
    if need_weights:
        assert torch.equal(w.cpu().isnan(), ref_w.isnan())
        assert (w.cpu() - ref_w).nan_to_num().abs().max() < 1e-6
    else:
        assert w is None and ref_w is None


def test_mha_runs_only_triton_kernels(device):
    m = tritonn.MultiheadAttention(16, 2, add_bias_kv=True, add_zero_attn=True, kdim=8, vdim=12,
                                   batch_first=True).to(device)
    q, k, v = torch.randn(2, 5, 16, device=device), torch.randn(2, 7, 8, device=device), torch.randn(2, 7, 12,
                                                                                                   device=device)
    q.requires_grad_()
    mask = torch.rand(5, 7, device=device) < 0.2
    padding = torch.randn(2, 7, device=device)
    g = torch.randn(2, 5, 16, device=device)
    with no_native_compute(), pytest.warns(UserWarning, match="mismatched key_padding_mask and attn_mask"):
        out, w = m(q, k, v, key_padding_mask=padding, attn_mask=mask, average_attn_weights=False)
        out.backward(g)
    assert w.shape == (2, 2, 5, 9)  # + bias_k + zero attention
    s = tritonn.MultiheadAttention(16, 2).to(device)  # packed self-attention projection
    x = torch.randn(4, 2, 16, device=device, requires_grad=True)
    g = torch.randn(4, 2, 16, device=device)
    with no_native_compute():
        out, _ = s(x, x, x, need_weights=False)
        out.backward(g)


def test_mha_dropout_train_and_eval(device):
    m = tritonn.MultiheadAttention(16, 2, dropout=0.5).to(device)
    x = torch.randn(40, 2, 16, device=device)
    m.eval()
    a, wa = m(x, x, x)
    b, wb = m(x, x, x)
    assert torch.equal(a, b) and torch.equal(wa, wb)
    theirs = torch.nn.MultiheadAttention(16, 2, dropout=0.5).eval()
    theirs.load_state_dict(m.state_dict())
    ref, _ = theirs(x.cpu(), x.cpu(), x.cpu())
    assert (a.cpu() - ref).abs().max() < 1e-5
    m.train()
    torch.manual_seed(7)
    c, wc = m(x, x, x, average_attn_weights=False)
    torch.manual_seed(7)
    d, wd = m(x, x, x, average_attn_weights=False)
    assert torch.equal(c, d) and torch.equal(wc, wd)
    assert not torch.allclose(c, a)
    dropped = (wc == 0).float().mean().item()
    assert abs(dropped - 0.5) < 0.05, dropped
    # weights after dropout: kept ones are the eval probabilities scaled by 1 / (1 - p)
    _, we = m.eval()(x, x, x, average_attn_weights=False)
    kept = wc != 0
    assert torch.allclose(wc[kept], we[kept] * 2, atol=1e-6)


@pytest.mark.parametrize("case", ["causal_without_mask", "mask_dtype", "mask_shape_2d", "mask_shape_3d",
                                  "padding_shape", "embed_dim", "mask_dim"])
def test_mha_errors_like_torch(device, case):
    torch.manual_seed(0)
    theirs = torch.nn.MultiheadAttention(8, 2)
    ours = tritonn.MultiheadAttention(8, 2)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(5, 3, 8)
    kw = {}
    if case == "causal_without_mask":
        kw = dict(is_causal=True)
    elif case == "mask_dtype":
        kw = dict(attn_mask=torch.ones(5, 5, dtype=torch.int32))
    elif case == "mask_shape_2d":
        kw = dict(attn_mask=torch.zeros(4, 5))
    elif case == "mask_shape_3d":
        kw = dict(attn_mask=torch.zeros(5, 5, 5))
    elif case == "padding_shape":
        kw = dict(key_padding_mask=torch.zeros(3, 4, dtype=torch.bool))
    elif case == "embed_dim":
        x = torch.randn(5, 3, 6)
    elif case == "mask_dim":
        kw = dict(attn_mask=torch.zeros(1, 1, 5, 5))
    expected = _errors(theirs, x, x, x, **kw)
    assert expected is not None
    with pytest.raises(expected):
        ours.to(device)(x.to(device), x.to(device), x.to(device),
                        **{n: t.to(device) if isinstance(t, torch.Tensor) else t for n, t in kw.items()})


def test_masks_requiring_grad_are_refused(device):
    q = torch.randn(1, 2, 5, 8, device=device)
    mask = torch.randn(5, 5, device=device, requires_grad=True)
    with pytest.raises(NotImplementedError, match="attn_mask"):
        TF.scaled_dot_product_attention(q, q, q, mask)
    m = tritonn.MultiheadAttention(8, 2).to(device)
    x = torch.randn(5, 1, 8, device=device)
    with pytest.raises(NotImplementedError, match="attn_mask"):
        m(x, x, x, attn_mask=mask)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sdpa_finfo_min_masks_match_torch(device, dtype):
    """torch.finfo(dtype).min padding masks (HuggingFace's idiom) stay finite: a fully
    masked row is softmaxed uniformly, as torch does, instead of becoming empty."""
    L, S = 6, 10

    def masked(sdpa):
        def fn(q, k, v):
            m = torch.zeros(L, S, dtype=q.dtype, device=q.device)
            m[2] = torch.finfo(q.dtype).min
            m[4, 3:] = torch.finfo(q.dtype).min
            return sdpa(q, k, v, m)
        return fn

    leaves = sdpa_leaves((2, 2, L, 8), (2, 2, S, 8), (2, 2, S, 8))
    compare(masked(TF.scaled_dot_product_attention), masked(F.scaled_dot_product_attention), leaves, dtype, device,
            {"out0": S + 8, "q": S + 8, "k": L + 8, "v": L})


def test_sdpa_empty_value_head_dim(device):
    check_sdpa(device, (1, 1, 4, 8), (1, 1, 6, 8), (1, 1, 6, 0))


def test_mha_functional_static_k_with_key_padding_mask(device):
    """The key padding mask masks static_k's keys, not the key argument's."""
    E, H, L, N, S = 8, 2, 3, 2, 4
    mha = torch.nn.MultiheadAttention(E, H).to(device)
    q, key = torch.randn(L, N, E, device=device), torch.randn(7, N, E, device=device)
    static_k, static_v = (torch.randn(N * H, S, E // H, device=device) for _ in range(2))
    kpm = torch.rand(N, S, device=device) < 0.3
    kpm[:, 0] = False
    args = (q, key, key, E, H, mha.in_proj_weight, mha.in_proj_bias, None, None, False, 0.0,
            mha.out_proj.weight, mha.out_proj.bias)
    kw = dict(training=False, need_weights=True, static_k=static_k, static_v=static_v)
    with torch.no_grad():
        ours = TF.multi_head_attention_forward(*args, key_padding_mask=kpm, **kw)
        theirs = F.multi_head_attention_forward(*args, key_padding_mask=kpm, **kw)
    for a, b in zip(ours, theirs):
        assert torch.allclose(a, b, atol=1e-5)
    wrong = torch.zeros(N, 7, dtype=torch.bool, device=device)
    with pytest.raises(AssertionError):
        F.multi_head_attention_forward(*args, key_padding_mask=wrong, **kw)
    with pytest.raises(AssertionError):
        TF.multi_head_attention_forward(*args, key_padding_mask=wrong, **kw)


def test_mha_under_autocast_matches_torch_dtypes(device):
    torch.manual_seed(0)
    theirs = torch.nn.MultiheadAttention(8, 2).to(device)
    ours = tritonn.MultiheadAttention(8, 2).to(device)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(3, 2, 8, device=device)
    with torch.autocast(device_type=device, dtype=torch.bfloat16):
        (y, w), (y_ref, w_ref) = ours(x, x, x), theirs(x, x, x)
    assert y.dtype == y_ref.dtype == torch.bfloat16 and w.dtype == w_ref.dtype
    assert torch.allclose(y.float(), y_ref.float(), atol=0.05)
