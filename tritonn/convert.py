"""tritonn.convert: swap the torch.nn layers of an existing model for their tritonn twins.

Every tritonn module subclasses the torch class it replaces and keeps that class's
``__init__``, attributes, parameters and buffers, so a torch module becomes its twin by
changing its class, ``module.__class__ = TwinClass``, without running any constructor.
Everything that lives in the module's ``__dict__`` is kept as is: the very same
Parameter and buffer objects (``_parameters``/``_buffers``), hooks dicts (forward,
forward-pre, backward, state_dict hooks), ``training``, LSTM's ``_flat_weights`` lists,
MultiheadAttention's ``_qkv_same_embed_dim``, parametrizations. Device, dtype and
memory format are those of the tensors, untouched.

``inplace=False`` first ``copy.deepcopy``s the model (the original keeps its classes
and tensors; the copy shares nothing with it) and converts the copy in place.

The mapping torch class -> tritonn class is discovered, not listed: every class
exported by :mod:`tritonn.nn` whose direct base is a ``torch.nn`` class. Layers added
to ``tritonn.nn`` later are picked up without touching this file. Matching is on the
exact type: a subclass of a torch layer (usually with its own ``forward``) is left
alone and reported. A tritonn class whose ``__init__`` sets extra state can define
``_convert_from_torch(self)``; convert calls it right after the class swap.
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass, field

import torch
from torch.nn.utils import parametrize

__all__ = ["ConvertReport", "convert", "supported"]

# Plain containers (exact types): only hold children, never reported.
_CONTAINERS = (torch.nn.Sequential, torch.nn.ModuleList, torch.nn.ModuleDict)


def supported() -> dict[type, type]:
    """``{torch class: tritonn class}``: every class exported by ``tritonn.nn`` (its
    ``__all__``, or its public names) that has exactly one direct base from ``torch.nn``."""
    from . import nn as tnn

    names = getattr(tnn, "__all__", None) or [n for n in vars(tnn) if not n.startswith("_")]
    mapping: dict[type, type] = {}
    for name in names:
        cls = getattr(tnn, name, None)
        if not (inspect.isclass(cls) and issubclass(cls, torch.nn.Module)):
            continue
        torch_bases = [b for b in cls.__bases__
                       if issubclass(b, torch.nn.Module) and b.__module__.startswith("torch.nn")]
        if len(torch_bases) == 1:
            mapping.setdefault(torch_bases[0], cls)
    return mapping


def _qualname(cls: type) -> str:
    mod = cls.__module__
    if mod.startswith("torch.nn.modules") and getattr(torch.nn, cls.__name__, None) is cls:
        mod = "torch.nn"
    elif mod.startswith("tritonn.nn"):
        mod = "tritonn"
    return f"{mod}.{cls.__qualname__}"


@dataclass
class ConvertReport:
    """What :func:`convert` did. ``replaced``: ``(name, torch class, tritonn class)``;
    ``left``: ``(name, class, reason)`` for the modules that stay torch (containers and
    user modules without a torch base are not listed; their children are converted).
    Names are qualified names as in ``model.named_modules()`` ("" is the model itself)."""

    replaced: list[tuple[str, str, str]] = field(default_factory=list)
    left: list[tuple[str, str, str]] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"tritonn.convert: {len(self.replaced)} replaced, {len(self.left)} left as torch"]
        for name, src, dst in self.replaced:
            lines.append(f"  replaced  {name or '<model>'}: {src} -> {dst}")
        for name, cls, reason in self.left:
            lines.append(f"  left      {name or '<model>'}: {cls} ({reason})")
        return "\n".join(lines)


def _swap_parametrized(module: torch.nn.Module, twin: type) -> None:
    """A parametrized module's class is ``Parametrized<Cls>``, made by
    ``torch.nn.utils.parametrize`` with ``Cls`` as its base and the parametrized
    properties in its dict. Make the same class on top of the twin."""
    pcls = type(module)
    dct = {k: v for k, v in pcls.__dict__.items() if k not in ("__dict__", "__weakref__")}
    module.__class__ = type(pcls.__name__, (twin,), dct)


def _leave_reason(cls: type, mapping: dict[type, type]) -> str | None:
    if cls is torch.nn.modules.linear.NonDynamicallyQuantizableLinear:
        return "MultiheadAttention's out_proj: never called, the attention reads its weights"
    for torch_cls, twin in mapping.items():
        if issubclass(cls, torch_cls):
            own = "forward" in cls.__dict__ or any(
                "forward" in c.__dict__ for c in cls.__mro__[1:cls.__mro__.index(torch_cls)])
            what = "with its own forward" if own else "without its own forward"
            return (f"subclass of {_qualname(torch_cls)} {what}; only exact types are converted "
                    f"(twin: {_qualname(twin)})")
    if cls.__module__.startswith("torch.nn"):
        return "no tritonn twin"
    return None


def convert(model: torch.nn.Module, inplace: bool = False, report: bool = False):
    """Replace every supported ``torch.nn`` layer in ``model`` (the model itself
    included, nested anywhere) by its tritonn twin.

    Parameters, buffers, training mode, device, dtype, memory format, hooks and
    parametrizations are kept: with ``inplace=True`` the modules themselves change class,
    so they keep every Parameter object (and every outside reference to them stays
    valid); with ``inplace=False`` (default) a ``copy.deepcopy`` of the model is
    converted and the original is untouched.

    Returns the model, or ``(model, ConvertReport)`` with ``report=True``."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"tritonn.convert expects a torch.nn.Module, got {type(model).__name__}")
    if not inplace:
        model = copy.deepcopy(model)
    mapping = supported()
    twins = set(mapping.values())
    rep = ConvertReport()
    for name, module in list(model.named_modules(remove_duplicate=True)):
        cls = type(module)
        parametrized = parametrize.is_parametrized(module)
        base = cls.__bases__[0] if parametrized else cls
        if type(module) in _CONTAINERS or issubclass(base, tuple(twins)):
            continue  # a plain container, or already tritonn
        twin = mapping.get(base)
        if twin is not None:
            if parametrized:
                _swap_parametrized(module, twin)
            else:
                module.__class__ = twin
            after = getattr(twin, "_convert_from_torch", None)
            if after is not None:
                after(module)
            src = _qualname(base) + (" (parametrized)" if parametrized else "")
            rep.replaced.append((name, src, _qualname(twin)))
            continue
        reason = _leave_reason(base, mapping)
        if reason is not None:
            rep.left.append((name, _qualname(base), reason))
    return (model, rep) if report else model
