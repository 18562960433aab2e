"""torch.compile support: every tritonn autograd Function is also a pair of torch custom ops.

Eager calls run ``Function.apply`` (the cheapest dispatch). Under ``torch.compile``,
``apply(Function, *args)`` calls ``tritonn::<name>`` instead, a custom op with
autograd registered (``register_autograd``) whose backward is the custom op
``tritonn::<name>_backward``. The compiler sees each as one opaque op: no graph break
at ``fullgraph=True``, and Inductor leaves the Triton kernels alone.

Nothing is written twice. Both ops call the Function's own ``forward`` / ``backward``
with a recording ctx (``_Ctx``), and their fake (shape-only) implementations are the
same calls on fake tensors with kernel launches switched off (``_shapes_only``): a
launcher allocates its outputs and launches, so the shapes come out right by
construction.

What crosses the op boundary, whose schema knows only tensors and primitives:
* arguments: tensors, wherever they sit (also inside dataclasses such as attention's
  ``Mask``), go into a tensor list; the rest is written as a literal string
  (dataclasses by name, rebuilt inside the op). A tensor the forward writes (batch
  norm's running statistics) is cloned inside the op and the clone returned: autograd
  can only be registered on a functional op; ``apply`` copies it back;
* seeds: under compile ``new_seed`` returns ``SEED_AT_RUN_TIME``; the forward op draws
  the real seeds when it runs and returns them as a tensor, which the backward reads;
* the ctx: saved tensors that are views of an input or of an output are re-made from
  it (an op output may not alias an input or another output); the others are extra
  outputs of the forward op. The ctx's other attributes (geometry, shapes) are
  recomputed when autograd is set up, by replaying the forward on the fake inputs, and
  reach the backward op pickled in a string with the seeds left as slots.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import functools
import pickle
import threading

import torch
from triton.runtime.jit import KernelInterface

SEED_AT_RUN_TIME = -0x5EED  # new_seed's answer under compile: the op draws the seed
_SEED_SLOT = -(2**40)  # the k-th seed of a replayed forward is _SEED_SLOT - k
_STATIC_TYPES: dict[str, type] = {}
_OPS: dict[str, tuple] = {}  # op name -> (Function, its custom op, positions it mutates)


def static_type(cls: type) -> type:
    """Mark a dataclass that may appear in a Function's arguments (rebuilt by name)."""
    _STATIC_TYPES[cls.__name__] = cls
    return cls


# ---------------------------------------------------------------- kernel launches off

_state = threading.local()
_original_getitem = KernelInterface.__getitem__


def _getitem(self, grid):
    if getattr(_state, "shapes_only", False):
        return lambda *args, **kwargs: None
    return _original_getitem(self, grid)


class _shapes_only:
    """Within: Triton kernels (jit, interpreted, autotuned) do not launch, in this thread."""

    def __enter__(self):
        KernelInterface.__getitem__ = _getitem  # installed once; a no-op outside the block
        self.previous = getattr(_state, "shapes_only", False)
        _state.shapes_only = True

    def __exit__(self, *exc):
        _state.shapes_only = self.previous


# ---------------------------------------------------------------- arguments <-> (tensors, literal)


def _encode(obj, tensors: list, ints: list):
    """A literal for ``obj``; its tensors appended to ``tensors``, its ints to ``ints``
    (an int may be a dynamic size, which only an int list argument can carry). Runs
    under Dynamo: plain Python on constants."""
    if isinstance(obj, torch.Tensor):
        tensors.append(obj)
        return ("T", len(tensors) - 1)
    if dataclasses.is_dataclass(obj):
        return ("D", type(obj).__name__,
                tuple((f.name, _encode(getattr(obj, f.name), tensors, ints)) for f in dataclasses.fields(obj)))
    if isinstance(obj, (tuple, list)):
        return ("L" if isinstance(obj, list) else "U", tuple(_encode(o, tensors, ints) for o in obj))
    if isinstance(obj, int) and not isinstance(obj, bool):
        ints.append(obj)
        return ("I", len(ints) - 1)
    return ("V", obj)


def _decode(node, tensors, ints, seed):
    kind, *rest = node
    if kind == "T":
        return tensors[rest[0]]
    if kind == "I":
        value = ints[rest[0]]
        return seed() if value == SEED_AT_RUN_TIME else value
    if kind == "D":
        name, fields = rest
        obj = object.__new__(_STATIC_TYPES[name])
        for field, value in fields:
            object.__setattr__(obj, field, _decode(value, tensors, ints, seed))
        return obj
    if kind in ("L", "U"):
        items = [_decode(o, tensors, ints, seed) for o in rest[0]]
        return items if kind == "L" else tuple(items)
    return rest[0]


# ---------------------------------------------------------------- the recording ctx


class _Ctx:
    """What a Function's forward and backward use of ``ctx``, recorded."""

    def __init__(self, needs, attrs=None, saved=()):
        self.needs_input_grad = tuple(needs)
        self.saved_tensors = tuple(saved)
        self.materialize_grads = True
        if attrs:
            self.__dict__.update(attrs)

    def save_for_backward(self, *tensors):
        self.saved_tensors = tensors

    def set_materialize_grads(self, value):
        self.materialize_grads = value

    def mark_non_differentiable(self, *tensors):
        pass

    def attrs(self) -> dict:
        return {k: v for k, v in self.__dict__.items()
                if k not in ("needs_input_grad", "saved_tensors", "materialize_grads")}


@functools.lru_cache(maxsize=4096)
def _parsed(statics: str) -> tuple:
    """The argument literal, parsed once per call site (a compiled graph passes the same string every step)."""
    return ast.literal_eval(statics)


@functools.lru_cache(maxsize=4096)
def _unpickled(plan: str) -> tuple:
    """A backward plan, unpickled once per call site; what comes out is only read (``_restore`` rebuilds)."""
    return pickle.loads(plan.encode("latin-1"))


def _forward(fn, tensors, ints, statics, needs, seed):
    args = [_decode(node, tensors, ints, seed) for node in _parsed(statics)]
    ctx = _Ctx(needs)
    out = fn.forward(ctx, *args)
    return ctx, (out if isinstance(out, tuple) else (out,))


def _same_memory(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch._C._is_alias_of(a, b)


def _unaliased(results: list, inputs: list) -> list:
    """results, each cloned where it shares memory with an input or an earlier result
    (a custom op's outputs may alias neither; e.g. a gradient passed straight through)."""
    seen = [t for t in inputs if t is not None]
    out = []
    for t in results:
        if t is not None and any(_same_memory(t, o) for o in seen):
            t = t.clone()
        out.append(t)
        if t is not None:
            seen.append(t)
    return out


def _tree_map(fn, obj):
    """fn applied to every leaf of obj, through tuples (torch.Size too), lists, dicts and
    dataclass instances, which are rebuilt rather than changed."""
    if isinstance(obj, (tuple, list)):
        return type(obj)(_tree_map(fn, o) for o in obj)
    if isinstance(obj, dict):
        return {k: _tree_map(fn, v) for k, v in obj.items()}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        copy = object.__new__(type(obj))
        for f in dataclasses.fields(obj):
            object.__setattr__(copy, f.name, _tree_map(fn, getattr(obj, f.name)))
        return copy
    return fn(obj)


@dataclasses.dataclass
class _AttrTensor:
    """Stands for the i-th tensor among a ctx's attributes while they are pickled."""

    index: int


def _plan(ctx: _Ctx, inputs: list, outputs: tuple):
    """Where each saved tensor comes from: ("N",), ("I", input, view) or ("R", output,
    view) for views re-made in backward, ("S", k) for the k-th extra output. Tensors
    among the ctx's attributes are placed the same way, after the saved ones, and stand
    as ``_AttrTensor`` in the attributes returned."""
    fresh = []

    def place(t):
        if t is None:
            return ("N",)
        view = (tuple(t.shape), tuple(t.stride()), t.storage_offset())
        for kind, pool in (("I", inputs), ("R", outputs)):
            for i, base in enumerate(pool):
                if base is not None and _same_memory(t, base):
                    return (kind, i, view)
        fresh.append(t)
        return ("S", len(fresh) - 1)

    slots = [place(t) for t in ctx.saved_tensors]
    n_saved = len(slots)

    def strip(obj):
        if not isinstance(obj, torch.Tensor):
            return obj
        slots.append(place(obj))
        return _AttrTensor(len(slots) - 1 - n_saved)

    attrs = _tree_map(strip, ctx.attrs())
    return fresh, slots, n_saved, attrs


def _restore(attrs: dict, tensors: list, seeds: list) -> dict:
    """Pickled ctx attributes made whole: their tensors back, and the seed slots of the
    replayed forward filled with the seeds the forward op drew."""

    def leaf(obj):
        if isinstance(obj, _AttrTensor):
            return tensors[obj.index]
        if isinstance(obj, int) and not isinstance(obj, bool) and _SEED_SLOT - 64 < obj <= _SEED_SLOT:
            return seeds[_SEED_SLOT - obj]
        return obj

    return _tree_map(leaf, attrs)


# ---------------------------------------------------------------- registration


def compilable(name: str, mutates: tuple = ()):
    """Class decorator: register ``tritonn::<name>`` and ``tritonn::<name>_backward`` for
    an autograd Function. ``mutates``: positions of tensor arguments the forward writes."""

    def register(fn):
        fn.forward = staticmethod(_owning(fn.forward))
        _OPS[name] = (fn, _register(fn, name), tuple(mutates))
        return fn

    return register


def _owning(forward):
    """``forward`` with outputs that own their memory: an output that is a view of a
    buffer the forward allocated (a reshape of the GEMM's (1, M, N) result, say) is
    handed out as a plain alias, since autograd forbids in-place ops on a view made
    inside a Function, and ``nn.ReLU(inplace=True)`` after a layer must work."""

    def wrapper(ctx, *args):
        out = forward(ctx, *args)
        inputs = [a for a in args if isinstance(a, torch.Tensor)]
        outs = out if isinstance(out, tuple) else (out,)
        outs = tuple(o.detach() if isinstance(o, torch.Tensor) and o._base is not None
                     and not any(_same_memory(o, i) for i in inputs) else o for o in outs)
        return outs if isinstance(out, tuple) else outs[0]

    return wrapper


def apply(name: str, *args):
    """``Function.apply(*args)`` for the Function registered as ``name``, or under
    torch.compile its custom op. (By name: Dynamo cannot look a Function class up.)"""
    fn, op, mutates = _OPS[name]
    if not torch.compiler.is_compiling():
        return fn.apply(*args)
    tensors, ints = [], []
    nodes = tuple(_encode(a, tensors, ints) for a in args)
    mutated = [node[1] for i, node in enumerate(nodes) if i in mutates and node[0] == "T"]
    grad = torch.is_grad_enabled()
    needs = [isinstance(a, torch.Tensor) and grad and a.requires_grad for a in args]
    outs, _, _, updated = op(tensors, ints, repr(nodes), needs, mutated)
    with torch.no_grad():  # running statistics: written, never differentiated
        for index, new in zip(mutated, updated):
            tensors[index].copy_(new)
    return outs[0] if len(outs) == 1 else tuple(outs)


def _concrete(obj):
    """obj with its symbolic ints made ints (a dynamic size is specialized on: what the
    backward op receives is pickled, and launch grids are plain ints anyway)."""
    return _tree_map(lambda o: int(o) if isinstance(o, torch.SymInt) else o, obj)


def _no_grads(int_list: list):
    # an empty int list is an empty subtree of autograd's structure check, a full one a leaf
    return None if int_list else []


def _register(fn, name: str):
    def run(tensors, ints, statics, needs, mutated, fake):
        drawn = []

        def seed():
            from .attention import new_seed

            drawn.append(2 if fake else new_seed(1.0))
            return drawn[-1]

        tensors = list(tensors)
        for i in mutated:
            tensors[i] = tensors[i].clone()
        with _shapes_only() if fake else contextlib.nullcontext():
            ctx, outs = _forward(fn, tensors, ints, statics, needs, seed)
        fresh = _plan(ctx, tensors, outs)[0]
        outs = _unaliased(list(outs), tensors)
        seeds = torch.tensor(drawn, dtype=torch.int64) if not fake else torch.empty(len(drawn), dtype=torch.int64)
        return outs, fresh, seeds, [tensors[i] for i in mutated]

    @torch.library.custom_op(f"tritonn::{name}", mutates_args=())
    def forward_op(tensors: list[torch.Tensor | None], ints: list[int], statics: str, needs: list[bool],
                   mutated: list[int]
                   ) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor, list[torch.Tensor]]:
        return run(tensors, ints, statics, needs, mutated, fake=False)

    @forward_op.register_fake
    def _(tensors, ints, statics, needs, mutated):
        return run(tensors, ints, statics, needs, mutated, fake=True)

    def backward_run(grads, bases, fresh, seeds, plan, needs, fake):
        slots, n_saved, attrs, out_meta, materialize = _unpickled(plan)
        device = next(t for t in (*grads, *bases, *fresh) if t is not None).device
        grads = [torch.zeros(shape, dtype=dtype, device=device) if g is None and materialize else g
                 for g, (shape, dtype) in zip(grads, out_meta)]
        base_keys = sorted({(s[0], s[1]) for s in slots if s[0] in ("I", "R")})
        base_of = dict(zip(base_keys, bases))

        def make(slot):
            if slot[0] == "N":
                return None
            if slot[0] == "S":
                return fresh[slot[1]]
            size, stride, offset = slot[2]
            return base_of[(slot[0], slot[1])].as_strided(size, stride, offset)

        tensors = [make(s) for s in slots]
        attrs = _restore(attrs, tensors[n_saved:], [2] * 64 if fake else [int(s) for s in seeds.tolist()])
        ctx = _Ctx(needs, attrs, tensors[:n_saved])
        with _shapes_only() if fake else contextlib.nullcontext():
            result = fn.backward(ctx, *grads)
        result = result if isinstance(result, tuple) else (result,)
        return _unaliased([g for g, need in zip(result, needs) if need], [*grads, *bases, *fresh])

    @torch.library.custom_op(f"tritonn::{name}_backward", mutates_args=())
    def backward_op(grads: list[torch.Tensor | None], bases: list[torch.Tensor], fresh: list[torch.Tensor],
                    seeds: torch.Tensor, plan: str, needs: list[bool]) -> list[torch.Tensor]:
        return backward_run(grads, bases, fresh, seeds, plan, needs, fake=False)

    @backward_op.register_fake
    def _(grads, bases, fresh, seeds, plan, needs):
        return backward_run(grads, bases, fresh, seeds, plan, needs, fake=True)

    def setup_context(ctx, inputs, output):
        tensors, ints, statics, needs, mutated = inputs
        outs, fresh, seeds, _ = output
        tensors = [t.clone() if i in mutated else t for i, t in enumerate(tensors)]
        count = iter(range(64))
        with _shapes_only():
            rctx, routs = _forward(fn, tensors, ints, statics, needs, lambda: _SEED_SLOT - next(count))
        replay_fresh, slots, n_saved, attrs = _plan(rctx, tensors, routs)
        if len(replay_fresh) != len(fresh):
            raise RuntimeError(f"tritonn::{name}: the forward saved different tensors when replayed")
        pools = {"I": tensors, "R": list(outs)}
        base_keys = sorted({(s[0], s[1]) for s in slots if s[0] in ("I", "R")})
        out_meta = [(tuple(o.shape), o.dtype) for o in outs]
        plan = _concrete((slots, n_saved, attrs, out_meta, rctx.materialize_grads))
        ctx.plan = pickle.dumps(plan).decode("latin-1")
        ctx.needs, ctx.n_tensors, ctx.ints, ctx.mutated = list(needs), len(tensors), list(ints), list(mutated)
        ctx.n_bases, ctx.n_fresh = len(base_keys), len(fresh)
        nodes = _parsed(statics)
        ctx.grad_slots = [node[1] for i, node in enumerate(nodes) if node[0] == "T" and needs[i]]
        ctx.save_for_backward(*(pools[k][i] for k, i in base_keys), *fresh, seeds)

    def backward(ctx, grad_outs, _grad_fresh, _grad_seeds, _grad_updated):
        saved = ctx.saved_tensors
        bases, fresh, seeds = saved[:ctx.n_bases], saved[ctx.n_bases:ctx.n_bases + ctx.n_fresh], saved[-1]
        grads = backward_op(list(grad_outs), list(bases), list(fresh), seeds, ctx.plan, ctx.needs)
        tensor_grads = [None] * ctx.n_tensors
        for index, g in zip(ctx.grad_slots, grads):
            tensor_grads[index] = g
        return tensor_grads, _no_grads(ctx.ints), None, None, _no_grads(ctx.mutated)

    forward_op.register_autograd(backward, setup_context=setup_context)
    return forward_op
