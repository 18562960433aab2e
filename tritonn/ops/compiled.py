"""torch.compile support: every tritonn autograd Function is also a pair of torch custom ops.

Eager calls run ``Function.apply`` (the cheapest dispatch). Under ``torch.compile``,
``apply(name, *args)`` calls ``tritonn::<name>`` instead, a custom op with autograd
registered (``register_autograd``) whose backward is the custom op
``tritonn::<name>_backward``. The compiler sees each as one opaque op: no graph break
at ``fullgraph=True``, and Inductor leaves the Triton kernels alone.

Nothing is written twice. Both ops call the Function's own ``forward`` / ``backward``
with a recording ctx (``_Ctx``), and their fake (shape-only) implementations are the
same calls on fake tensors with kernel launches switched off (``_shapes_only``): a
launcher allocates its outputs and launches, so the shapes come out right by
construction.

What crosses the op boundary, whose schema knows only tensors and primitives:
* arguments: tensors, wherever they sit (also inside dataclasses such as attention's
  ``Mask``), go into a tensor list, ints into an int list (a dynamic size is a SymInt,
  which only an int list carries), floats into a float list (where Dynamo specializes
  them); the rest is written as a literal string (dataclasses by name, rebuilt inside
  the op). A tensor the forward writes (batch norm's running statistics in training)
  is cloned inside the op and the clone returned: autograd can only be registered on a
  functional op; ``apply`` copies it back;
* seeds: under compile ``new_seed`` draws the seed in the graph (``torch.randint``, a
  random op the compiler keeps per call and orders) and returns it as a ``Seed``; the
  forward op reads it when it runs and hands the seeds it used to the backward op;
* the ctx: saved tensors that are views of an input or of an output are re-made from
  it (an op output may not alias an input or another output); the others are extra
  outputs of the forward op. The ctx's other attributes (geometry, shapes) are
  recomputed when autograd is set up, by replaying the forward on the fake inputs; they
  reach the backward op pickled in a string, with their ints (sizes may be symbolic) in
  an int list and the seeds left as slots.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import functools
import itertools
import pickle
import threading

import torch
from triton.runtime.jit import KernelInterface

_SEED_SLOT = -(2**40)  # the k-th seed of a replayed forward is _SEED_SLOT - k
_MAX_SEEDS = 2**20
_STATIC_TYPES: dict[str, type] = {}
_OPS: dict[str, tuple] = {}  # op name -> (Function, its custom op, what it mutates)


class Seed:
    """A dropout seed drawn in a compiled graph: a 1-element int64 tensor, which the op
    reads as the int its Function expects."""

    def __init__(self, tensor: torch.Tensor):
        self.tensor = tensor


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
    """Within: Triton kernels (jit, interpreted, autotuned: all launch through
    ``KernelInterface.__getitem__``) do not launch, in this thread."""

    def __enter__(self):
        if KernelInterface.__getitem__ is not _getitem:  # installed on first use; delegates outside the block
            KernelInterface.__getitem__ = _getitem
        self.previous = getattr(_state, "shapes_only", False)
        _state.shapes_only = True

    def __exit__(self, *exc):
        _state.shapes_only = self.previous


# ---------------------------------------------------------------- arguments <-> (tensors, ints, floats, literal)


def _encode(obj, tensors: list, ints: list, floats: list):
    """A literal for ``obj``; its tensors, ints and floats appended to their lists.
    Runs under Dynamo: plain Python on constants."""
    if isinstance(obj, Seed):
        tensors.append(obj.tensor)
        return ("S", len(tensors) - 1)
    if isinstance(obj, torch.Tensor):
        tensors.append(obj)
        return ("T", len(tensors) - 1)
    if dataclasses.is_dataclass(obj):
        return ("D", type(obj).__name__, tuple((f.name, _encode(getattr(obj, f.name), tensors, ints, floats))
                                                for f in dataclasses.fields(obj)))
    if isinstance(obj, (tuple, list)):
        return ("L" if isinstance(obj, list) else "U", tuple(_encode(o, tensors, ints, floats) for o in obj))
    if isinstance(obj, int) and not isinstance(obj, bool):
        ints.append(obj)
        return ("I", len(ints) - 1)
    if isinstance(obj, float):
        floats.append(obj)
        return ("F", len(floats) - 1)
    return ("V", obj)


def _decode(node, tensors, ints, floats, seed):
    kind, *rest = node
    if kind == "T":
        return tensors[rest[0]]
    if kind == "S":
        return seed(tensors[rest[0]])
    if kind == "I":
        return ints[rest[0]]
    if kind == "F":
        return floats[rest[0]]
    if kind == "D":
        name, fields = rest
        obj = object.__new__(_STATIC_TYPES[name])
        for field, value in fields:
            object.__setattr__(obj, field, _decode(value, tensors, ints, floats, seed))
        return obj
    if kind in ("L", "U"):
        items = [_decode(o, tensors, ints, floats, seed) for o in rest[0]]
        return items if kind == "L" else tuple(items)
    return rest[0]


@functools.lru_cache(maxsize=4096)
def _parsed(statics: str) -> tuple:
    """The argument literal, parsed once per call site (a compiled graph passes the same string every step)."""
    return ast.literal_eval(statics)


@functools.lru_cache(maxsize=4096)
def _unpickled(plan: str) -> tuple:
    """A backward plan, unpickled once per call site; what comes out is only read (``_restore`` rebuilds)."""
    return pickle.loads(plan.encode("latin-1"))


# ---------------------------------------------------------------- the recording ctx


class _Ctx:
    """What a Function's forward and backward use of ``ctx``, recorded."""

    def __init__(self, needs, attrs=None, saved=()):
        self.needs_input_grad = tuple(needs)
        self.saved_tensors = tuple(saved)
        self.materialize_grads = True
        self.non_differentiable = []
        if attrs:
            self.__dict__.update(attrs)

    def save_for_backward(self, *tensors):
        self.saved_tensors = tensors

    def set_materialize_grads(self, value):
        self.materialize_grads = value

    def mark_non_differentiable(self, *tensors):
        self.non_differentiable += tensors

    def attrs(self) -> dict:
        return {k: v for k, v in self.__dict__.items()
                if k not in ("needs_input_grad", "saved_tensors", "materialize_grads", "non_differentiable")}


def _forward(fn, tensors, ints, floats, statics, needs, seed):
    args = [_decode(node, tensors, ints, floats, seed) for node in _parsed(statics)]
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


# ---------------------------------------------------------------- the backward's plan


class _AttrTensor:
    """Stands for the i-th tensor among a ctx's attributes while they are pickled."""

    def __init__(self, index: int):
        self.index = index


class _Int:
    """Stands for the i-th int of a plan, which travels in an int list (it may be symbolic)."""

    def __init__(self, index: int):
        self.index = index


def _tree_map(fn, obj):
    """fn applied to every leaf of obj, through tuples (torch.Size too), lists, dicts and
    dataclass instances, which are rebuilt rather than changed."""
    if isinstance(obj, (tuple, list)):
        items = [_tree_map(fn, o) for o in obj]
        if isinstance(obj, torch.Size) and not all(isinstance(i, (int, torch.SymInt)) for i in items):
            return tuple(items)  # a size holding slots for a while
        return type(obj)(items)
    if isinstance(obj, dict):
        return {k: _tree_map(fn, v) for k, v in obj.items()}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        copy = object.__new__(type(obj))
        for f in dataclasses.fields(obj):
            object.__setattr__(copy, f.name, _tree_map(fn, getattr(obj, f.name)))
        return copy
    return fn(obj)


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


def _lift_ints(obj, ints: list):
    """obj with every int replaced by an ``_Int`` slot, the ints appended to ``ints``."""

    def lift(v):
        if isinstance(v, (int, torch.SymInt)) and not isinstance(v, bool):
            ints.append(v)
            return _Int(len(ints) - 1)
        return v

    return _tree_map(lift, obj)


def _base_keys(slots: list) -> list:
    """The inputs ("I", i) and outputs ("R", i) that saved views are re-made from, in the
    order the backward op receives them."""
    return sorted({(s[0], s[1]) for s in slots if s[0] in ("I", "R")})


def _with_ints(plan, ints: list):
    """A pickled plan with its ints back in their slots."""
    return _tree_map(lambda v: ints[v.index] if isinstance(v, _Int) else v, plan)


def _restore(attrs: dict, tensors: list, seeds: list) -> dict:
    """A ctx's attributes made whole: tensors back in their slots, and the seed slots of
    the replayed forward filled with the seeds the forward op drew."""

    def leaf(v):
        if isinstance(v, _AttrTensor):
            return tensors[v.index]
        if type(v) is int and _SEED_SLOT - _MAX_SEEDS < v <= _SEED_SLOT:
            return seeds[_SEED_SLOT - v]
        return v

    return _tree_map(leaf, attrs)


def _no_grads(values: list):
    # an empty list is an empty subtree of autograd's structure check, a full primitive list a leaf
    return None if values else []


# ---------------------------------------------------------------- registration


def compilable(name: str, mutates=()):
    """Class decorator: register ``tritonn::<name>`` and ``tritonn::<name>_backward`` for
    an autograd Function. ``mutates``: positions of tensor arguments the forward writes,
    or a function of the arguments giving them."""

    def register(fn):
        fn.forward = staticmethod(_owning(fn.forward))
        _OPS[name] = (fn, _register(fn, name), mutates)
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
    tensors, ints, floats = [], [], []
    nodes = tuple(_encode(a, tensors, ints, floats) for a in args)
    positions = mutates(args) if callable(mutates) else mutates
    mutated = [node[1] for i, node in enumerate(nodes) if i in positions and node[0] == "T"]
    grad = torch.is_grad_enabled()
    needs = [isinstance(a, torch.Tensor) and grad and a.requires_grad for a in args]
    outs, _, _, updated = op(tensors, ints, floats, repr(nodes), needs, mutated)
    with torch.no_grad():  # running statistics: written, never differentiated
        for index, new in zip(mutated, updated):
            tensors[index].copy_(new)
    return outs[0] if len(outs) == 1 else tuple(outs)


def _register(fn, name: str):
    def run(tensors, ints, floats, statics, needs, mutated, fake):
        drawn = []

        def seed(tensor):
            drawn.append(2 if fake else int(tensor.item()))
            return drawn[-1]

        tensors = list(tensors)
        for i in mutated:
            tensors[i] = tensors[i].clone()
        with _shapes_only() if fake else contextlib.nullcontext():
            ctx, outs = _forward(fn, tensors, ints, floats, statics, needs, seed)
        fresh = _plan(ctx, tensors, outs)[0]
        outs = _unaliased(list(outs), tensors)
        seeds = torch.tensor(drawn, dtype=torch.int64) if not fake else torch.empty(len(drawn), dtype=torch.int64)
        return outs, fresh, seeds, [tensors[i] for i in mutated]

    @torch.library.custom_op(f"tritonn::{name}", mutates_args=())
    def forward_op(tensors: list[torch.Tensor | None], ints: list[int], floats: list[float], statics: str,
                   needs: list[bool], mutated: list[int]
                   ) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor, list[torch.Tensor]]:
        return run(tensors, ints, floats, statics, needs, mutated, fake=False)

    @forward_op.register_fake
    def _(tensors, ints, floats, statics, needs, mutated):
        return run(tensors, ints, floats, statics, needs, mutated, fake=True)

    def backward_run(grads, bases, fresh, seeds, plan, plan_ints, needs, fake):
        slots, n_saved, attrs, out_meta, materialize = _with_ints(_unpickled(plan), plan_ints)
        device = next(t for t in (*grads, *bases, *fresh) if t is not None).device
        grads = [torch.zeros(shape, dtype=dtype, device=device) if g is None and materialize else g
                 for g, (shape, dtype) in zip(grads, out_meta)]
        base_of = dict(zip(_base_keys(slots), bases))

        def make(slot):
            if slot[0] == "N":
                return None
            if slot[0] == "S":
                return fresh[slot[1]]
            size, stride, offset = slot[2]
            return base_of[(slot[0], slot[1])].as_strided(size, stride, offset)

        tensors = [make(s) for s in slots]
        drawn = [2] * seeds.shape[0] if fake else [int(s) for s in seeds.tolist()]
        attrs = _restore(attrs, tensors[n_saved:], drawn)
        ctx = _Ctx(needs, attrs, tensors[:n_saved])
        with _shapes_only() if fake else contextlib.nullcontext():
            result = fn.backward(ctx, *grads)
        result = result if isinstance(result, tuple) else (result,)
        return _unaliased([g for g, need in zip(result, needs) if need], [*grads, *bases, *fresh])

    @torch.library.custom_op(f"tritonn::{name}_backward", mutates_args=())
    def backward_op(grads: list[torch.Tensor | None], bases: list[torch.Tensor], fresh: list[torch.Tensor],
                    seeds: torch.Tensor, plan: str, plan_ints: list[int], needs: list[bool]) -> list[torch.Tensor]:
        return backward_run(grads, bases, fresh, seeds, plan, plan_ints, needs, fake=False)

    @backward_op.register_fake
    def _(grads, bases, fresh, seeds, plan, plan_ints, needs):
        return backward_run(grads, bases, fresh, seeds, plan, plan_ints, needs, fake=True)

    def setup_context(ctx, inputs, output):
        tensors, ints, floats, statics, needs, mutated = inputs
        outs, fresh, seeds, _ = output
        tensors = [t.clone() if i in mutated else t for i, t in enumerate(tensors)]
        slot = itertools.count()
        with _shapes_only():
            rctx, routs = _forward(fn, tensors, ints, floats, statics, needs, lambda _: _SEED_SLOT - next(slot))
        replay_fresh, slots, n_saved, attrs = _plan(rctx, tensors, routs)
        if len(replay_fresh) != len(fresh):
            raise RuntimeError(f"tritonn::{name}: the forward saved different tensors when replayed")
        pools = {"I": tensors, "R": list(outs)}
        base_keys = _base_keys(slots)
        out_meta = [(tuple(o.shape), o.dtype) for o in outs]
        plan_ints = []
        plan = _lift_ints((slots, n_saved, attrs, out_meta, rctx.materialize_grads), plan_ints)
        ctx.plan, ctx.plan_ints = pickle.dumps(plan).decode("latin-1"), plan_ints
        ctx.needs, ctx.n_tensors = list(needs), len(tensors)
        ctx.no_grads = tuple(_no_grads(v) for v in (ints, floats, mutated))
        ctx.n_bases, ctx.n_fresh = len(base_keys), len(fresh)
        ctx.grad_slots = [node[1] for i, node in enumerate(_parsed(statics)) if node[0] == "T" and needs[i]]
        ctx.save_for_backward(*(pools[k][i] for k, i in base_keys), *fresh, seeds)
        # by memory, not identity: _owning may hand out a marked output as a fresh alias
        marked = [i for i, o in enumerate(routs) if any(_same_memory(o, m) for m in rctx.non_differentiable)]
        if marked:
            ctx.mark_non_differentiable(*(outs[i] for i in marked))

    def backward(ctx, grad_outs, _grad_fresh, _grad_seeds, _grad_updated):
        saved = ctx.saved_tensors
        bases, fresh, seeds = saved[:ctx.n_bases], saved[ctx.n_bases:ctx.n_bases + ctx.n_fresh], saved[-1]
        grads = backward_op(list(grad_outs), list(bases), list(fresh), seeds, ctx.plan, ctx.plan_ints, ctx.needs)
        tensor_grads = [None] * ctx.n_tensors
        for index, g in zip(ctx.grad_slots, grads):
            tensor_grads[index] = g
        no_ints, no_floats, no_mutated = ctx.no_grads
        return tensor_grads, no_ints, no_floats, None, None, no_mutated

    forward_op.register_autograd(backward, setup_context=setup_context)
    return forward_op
