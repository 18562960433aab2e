"""``python -m tritonn check``: every tritonn layer next to its torch twin.

Each case builds the tritonn layer and the torch layer with the same weights, runs
forward and backward on random inputs on the current device (CUDA when present,
else the interpreter on small shapes), and applies the test suite's rule
(:func:`tritonn.testing.compare`) to the output and every gradient. Layers add a
case to ``CASES``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch

from . import nn as tnn
from .testing import compare


@dataclass
class Case:
    name: str
    build: Callable  # (device, small) -> (ours, theirs, leaves, reductions)
    dtypes: tuple = (torch.float32, torch.float16, torch.bfloat16)


def _module_fn(module):
    """The module as a function of its input and its parameters (dots in names -> _)."""
    names = [n for n, _ in module.named_parameters()]

    def fn(x, **params):
        return torch.func.functional_call(module, {n: params[n.replace(".", "_")] for n in names}, (x,))

    return fn


def _module_case(theirs, ours, input_shape, reductions):
    """Same weights in both modules (float64 masters); the input and every parameter are leaves."""
    theirs, ours = theirs.double(), ours.double()
    ours.load_state_dict(theirs.state_dict())
    leaves = {"x": torch.randn(*input_shape, dtype=torch.float64, requires_grad=True)}
    for n, p in theirs.named_parameters():
        leaves[n.replace(".", "_")] = p.detach().clone().requires_grad_()
    return _module_fn(ours), _module_fn(theirs), leaves, reductions


def _linear(device, small):
    in_f, out_f, rows = (96, 80, 64) if small else (1024, 1024, 4096)
    return _module_case(torch.nn.Linear(in_f, out_f), tnn.Linear(in_f, out_f), (rows, in_f),
                        {"out0": in_f, "x": out_f, "weight": rows, "bias": rows})


CASES = [Case("Linear", _linear)]


def run(device: str, small: bool) -> list[dict]:
    rows = []
    for case in CASES:
        for dtype in case.dtypes:
            torch.manual_seed(0)
            ours, theirs, leaves, reductions = case.build(device, small)
            start = time.perf_counter()
            try:
                errors = compare(ours, theirs, leaves, dtype, device, reductions)
                ok, detail = True, ""
            except AssertionError as e:
                errors, ok, detail = {}, False, str(e)
            if device == "cuda":
                torch.cuda.synchronize()
            rows.append({
                "layer": case.name, "dtype": str(dtype).replace("torch.", ""), "ok": ok,
                "max_error": max((e for e, _ in errors.values()), default=float("nan")),
                "worst_margin": max((e / b for e, b in errors.values() if b > 0), default=float("nan")),
                "seconds": time.perf_counter() - start, "detail": detail,
            })
    return rows
