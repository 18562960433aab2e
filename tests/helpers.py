"""Test-only helpers. The float64 comparison itself lives in :mod:`tritonn.testing`
(the ``check`` command uses it too)."""

from __future__ import annotations

import contextlib

import pytest
from torch.utils._python_dispatch import TorchDispatchMode

from tritonn.testing import assert_close_to_reference, compare  # noqa: F401  (re-exported for the tests)

# Ops a tritonn layer may run besides its kernels: allocation, views, copies.
GLUE_OPS = {
    "empty", "empty_strided", "empty_like", "new_empty", "new_empty_strided", "zeros", "zeros_like", "zero_",
    "fill_", "copy_", "_to_copy", "clone", "contiguous", "set_", "detach", "alias", "lift_fresh",
    "view", "_unsafe_view", "reshape", "expand", "t", "transpose", "permute", "squeeze", "unsqueeze",
    "as_strided", "slice", "select", "split", "split_with_sizes", "unbind", "cat", "stack", "_reshape_alias",
}


class _Watch(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def no_native_compute():
    """Fail if any aten op other than glue runs inside the block."""
    watch = _Watch()
    with watch:
        yield watch
    compute = sorted(set(watch.ops) - GLUE_OPS)
    assert not compute, f"native torch compute ran: {compute}"
    assert watch.ops, "no aten op seen at all: the watch did not see the call"


def raises_like_torch(ours_call, torch_call) -> str:
    """Both calls raise, tritonn with torch's exception type; returns tritonn's message."""
    with pytest.raises(Exception) as theirs:
        torch_call()
    with pytest.raises(type(theirs.value)) as got:
        ours_call()
    return str(got.value)
