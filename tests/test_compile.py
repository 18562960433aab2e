"""torch.compile(fullgraph=True) with tritonn layers: each Function is one custom op.

The CPU has no Inductor-friendly GPU, so the graphs are compiled with ``aot_eager``
(Dynamo + AOTAutograd, the same tracing Inductor gets). A backend that records the
forward and backward graphs checks that the compute sits in ``tritonn::`` ops.
"""

import copy

import pytest
import torch
from torch._dynamo.backends.common import aot_autograd

import tritonn
import tritonn.functional as TF

F64 = torch.float64

# aten ops that are compute: none of them may appear in a graph of tritonn layers
# (the glue that remains is views, copies and allocation)
NATIVE_COMPUTE = ("mm", "addmm", "bmm", "matmul", "convolution", "native_layer_norm", "native_batch_norm",
                  "max_pool2d", "_softmax", "gelu", "relu", "native_dropout", "_scaled_dot_product", "lstm", "sum")


def _recording_backend(graphs: list):
    def record(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    return aot_autograd(fw_compiler=record, bw_compiler=record)


def _targets(graphs) -> list[str]:
    return [str(n.target) for gm in graphs for n in gm.graph.nodes if n.op == "call_function"]


CASES = {
    "linear": (lambda: torch.nn.Sequential(tritonn.Linear(8, 6), tritonn.Linear(6, 3, bias=False)),
               lambda: (torch.randn(2, 3, 8),)),
    "cnn": (lambda: torch.nn.Sequential(tritonn.Conv2d(4, 6, 3, padding=1, groups=2, padding_mode="reflect"),
                                        tritonn.Conv2d(6, 6, 3, groups=6), tritonn.BatchNorm2d(6),
                                        tritonn.MaxPool2d(2, ceil_mode=True)),
            lambda: (torch.randn(2, 4, 7, 7),)),
    "batch_norm_eval": (lambda: tritonn.BatchNorm2d(3).eval(), lambda: (torch.randn(2, 3, 4, 4),)),
    "max_pool_indices": (lambda: tritonn.MaxPool2d(2, return_indices=True), lambda: (torch.randn(2, 3, 4, 4),)),
    "lstm": (lambda: tritonn.LSTM(5, 4, num_layers=2, bidirectional=True, proj_size=3),
             lambda: (torch.randn(6, 2, 5),)),
    "multihead_attention": (lambda: tritonn.MultiheadAttention(8, 2, batch_first=True, kdim=6, vdim=5),
                            lambda: (torch.randn(2, 5, 8), torch.randn(2, 4, 6), torch.randn(2, 4, 5))),
    "multihead_attention_masks": (
        lambda: _Call(tritonn.MultiheadAttention(8, 2), lambda m, x: m(
            x, x, x, attn_mask=torch.eye(5, dtype=torch.bool).roll(1, 0),
            key_padding_mask=torch.tensor([[False] * 4 + [True], [False] * 5]), average_attn_weights=False)),
        lambda: (torch.randn(5, 2, 8),)),
    "encoder_layer_masks": (
        lambda: _Call(tritonn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True), lambda m, x: m(
            x, src_mask=torch.tril(torch.ones(5, 5, dtype=torch.bool)).logical_not(),
            src_key_padding_mask=torch.tensor([[False] * 4 + [True], [False] * 5]))),
        lambda: (torch.randn(2, 5, 8),)),
    "layer_norm": (lambda: tritonn.LayerNorm((2, 4)), lambda: (torch.randn(3, 2, 4),)),
    "encoder_layer_pre_norm_gelu": (
        lambda: tritonn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, norm_first=True, activation="gelu"),
        lambda: (torch.randn(5, 2, 8),)),
    "transformer": (lambda: tritonn.Transformer(8, 2, 1, 1, 16, dropout=0.0, batch_first=True),
                    lambda: (torch.randn(2, 5, 8), torch.randn(2, 4, 8))),
}


class _Call(torch.nn.Module):
    """A module called a particular way (masks, keyword arguments)."""

    def __init__(self, module, call):
        super().__init__()
        self.module, self.call = module, call

    def forward(self, *args):
        return self.call(self.module, *args)


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    # Dynamo refuses every nn.RNNBase subclass without this switch, torch's own LSTM included
    with torch._dynamo.config.patch(allow_rnn=True):
        yield
    torch._dynamo.reset()


def _floats(out) -> list:
    """Every floating tensor of a layer's output, nested tuples flattened."""
    if isinstance(out, torch.Tensor):
        return [out] if out.is_floating_point() else []
    return [t for o in out if o is not None for t in _floats(o)]


@pytest.mark.parametrize("case", list(CASES))
def test_compiled_equals_eager_with_tritonn_ops_only(case):
    make, inputs = CASES[case]
    torch.manual_seed(0)
    eager = make().double()
    compiled_module = copy.deepcopy(eager)
    xs = [x.double().requires_grad_() for x in inputs()]
    references = _floats(eager(*xs))  # once: batch norm's running statistics move with every call
    sum(r.sum() for r in references if r.requires_grad).backward()
    expected = [x.grad.clone() for x in xs] + [p.grad for p in eager.parameters()]
    for x in xs:
        x.grad = None
    graphs = []
    compiled = torch.compile(compiled_module, backend=_recording_backend(graphs), fullgraph=True)
    outs = _floats(compiled(*xs))
    assert len(outs) == len(references)
    for out, reference in zip(outs, references):  # LSTM's h_n and c_n, attention weights too
        torch.testing.assert_close(out, reference, rtol=0, atol=0)
        assert out.requires_grad == reference.requires_grad
    sum(o.sum() for o in outs if o.requires_grad).backward()
    got = [x.grad for x in xs] + [p.grad for p in compiled_module.parameters()]
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for a, b in zip(compiled_module.buffers(), eager.buffers(), strict=True):  # running stats, num_batches_tracked
        assert torch.equal(a, b)
    assert len(graphs) == 2, "one forward and one backward graph"
    targets = _targets(graphs)
    assert any(t.startswith("tritonn.") and t.endswith("_backward.default") for t in targets), targets
    native = [t for t in targets if t.startswith("aten.") and t.split(".")[1] in NATIVE_COMPUTE]
    assert not native, native


@pytest.mark.parametrize("case", list(CASES))
def test_compiled_inference_equals_eager(case):
    """no_grad: the layers' inference paths (nothing saved) compile as well."""
    make, inputs = CASES[case]
    torch.manual_seed(0)
    eager = make().double()
    compiled_module = copy.deepcopy(eager)
    xs = [x.double() for x in inputs()]
    compiled = torch.compile(compiled_module, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        for out, reference in zip(_floats(compiled(*xs)), _floats(eager(*xs)), strict=True):
            torch.testing.assert_close(out, reference, rtol=0, atol=0)
    for a, b in zip(compiled_module.buffers(), eager.buffers(), strict=True):
        assert torch.equal(a, b)


def test_dropout_seeds_are_drawn_when_the_graph_runs():
    """Seeds are not baked into the graph: every call draws fresh ones from torch's
    generator (so manual_seed reproduces a call), and backward uses the forward's mask."""
    layer = tritonn.Dropout(0.5)
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    x = torch.randn(64, 33, requires_grad=True)
    a, b = compiled(x), compiled(x)
    assert not torch.equal(a, b)
    torch.manual_seed(7)
    c = compiled(x)
    torch.manual_seed(7)
    assert torch.equal(c, compiled(x))
    kept = c != 0
    assert 0.3 < kept.double().mean().item() < 0.7
    c.backward(torch.ones_like(c))
    torch.testing.assert_close(x.grad, kept.to(x.dtype) * 2.0)


def test_encoder_layer_with_dropout_trains_like_eager_in_distribution():
    torch.manual_seed(0)
    layer = tritonn.TransformerEncoderLayer(8, 2, 16, dropout=0.25)
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    x = torch.randn(5, 3, 8, requires_grad=True)
    torch.manual_seed(3)
    y1 = compiled(x)
    torch.manual_seed(3)
    y2 = compiled(x)
    assert torch.equal(y1, y2)  # same seeds, same masks
    assert not torch.equal(y1, compiled(x))  # new seeds
    y1.sum().backward()
    assert x.grad.isfinite().all() and all(p.grad is not None for p in layer.parameters())


def test_batch_norm_running_stats_update_under_compile():
    torch.manual_seed(0)
    eager = tritonn.BatchNorm2d(3, momentum=None)
    compiled_module = copy.deepcopy(eager)
    compiled = torch.compile(compiled_module, backend="aot_eager", fullgraph=True)
    for _ in range(3):
        x = torch.randn(4, 3, 5, 5)
        torch.testing.assert_close(compiled(x), eager(x), rtol=0, atol=0)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        assert torch.equal(getattr(compiled_module, name), getattr(eager, name)), name
    assert compiled_module.num_batches_tracked.item() == 3


def test_inference_and_new_shapes():
    """no_grad (an inference graph: nothing saved) and a new batch size (a recompile)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(tritonn.Linear(8, 8), tritonn.LayerNorm(8))
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    for batch in (3, 5, 7):
        x = torch.randn(batch, 8)
        with torch.no_grad():
            torch.testing.assert_close(compiled(x), model(x), rtol=0, atol=0)
        x.requires_grad_()
        compiled(x).sum().backward()
        assert x.grad.shape == x.shape


def test_functional_ops_compile():
    def f(q, k, v, w):
        o = TF.scaled_dot_product_attention(q, k, v, is_causal=True)
        return TF.linear(o, w, activation="silu")

    q, k, v = (torch.randn(2, 2, 5, 4, requires_grad=True) for _ in range(3))
    w = torch.randn(3, 4, requires_grad=True)
    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(q, k, v, w), f(q, k, v, w), rtol=0, atol=0)
    compiled(q, k, v, w).sum().backward()
    assert all(t.grad is not None for t in (q, k, v, w))


def test_compiled_dropout_equals_eager_under_the_same_seed():
    """Seeds are drawn from torch's generator in the same order in both modes."""
    torch.manual_seed(0)
    eager = tritonn.TransformerEncoderLayer(8, 2, 16, dropout=0.3, batch_first=True).double()
    compiled_module = copy.deepcopy(eager)
    compiled = torch.compile(compiled_module, backend="aot_eager", fullgraph=True)
    x = torch.randn(2, 5, 8, dtype=F64, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    torch.manual_seed(5)
    y = eager(x)
    torch.manual_seed(5)
    y2 = compiled(x2)
    torch.testing.assert_close(y2, y, rtol=0, atol=0)
    y.sum().backward()
    y2.sum().backward()
    torch.testing.assert_close(x2.grad, x.grad, rtol=0, atol=0)
    for a, b in zip(compiled_module.parameters(), eager.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=0)


def test_two_dropouts_of_one_tensor_stay_two():
    """R-Drop / SimCSE: the compiler must not merge two identical dropout calls."""

    def f(x):
        return TF.dropout(x, 0.5), TF.dropout(x, 0.5)

    x = torch.randn(64, 16, requires_grad=True)
    a, b = torch.compile(f, backend="aot_eager", fullgraph=True)(x)
    assert not torch.equal(a != 0, b != 0)


def test_changing_floats_and_sizes_do_not_break_the_graph():
    """A dropout schedule (p changes), an eps, and new batch sizes in training: floats are
    specialized on, sizes stay symbolic (the backward op takes them as ints)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(tritonn.Linear(8, 8), tritonn.LayerNorm(8), tritonn.Dropout(0.1))
    graphs = []
    compiled = torch.compile(model, backend=_recording_backend(graphs), fullgraph=True)
    for p in (0.1, 0.2):
        model[2].p = p
        y = compiled(torch.randn(4, 8, requires_grad=True))
        assert abs((y == 0).double().mean().item() - p) < 0.25
    model[2].p = 0.0
    forwards = len(graphs)
    for batch in (3, 5, 7, 9, 11, 13, 15, 17, 19, 21):  # past Dynamo's recompile limit of 8
        x = torch.randn(batch, 8, requires_grad=True)
        y = compiled(x)
        torch.testing.assert_close(y, model(x), rtol=0, atol=0)
        y.sum().backward()
    assert len(graphs) - forwards <= 4, "one dynamic graph (forward + backward) after the first new size"


def test_batch_norm_eval_leaves_its_buffers_alone():
    bn = tritonn.BatchNorm2d(3).eval()
    compiled = torch.compile(bn, backend="aot_eager", fullgraph=True)
    version = bn.running_mean._version
    with torch.no_grad():
        compiled(torch.randn(2, 3, 4, 4))
    assert bn.running_mean._version == version
    with torch.inference_mode():
        frozen = tritonn.BatchNorm2d(3).eval()
    with torch.no_grad():
        torch.compile(frozen, backend="aot_eager", fullgraph=True)(torch.randn(2, 3, 4, 4))
