"""Benchmark set-up: the interpreter when there is no GPU, strict mode, and a
``measure`` fixture that times one case and records it.

TRITON_INTERPRET must be set before tritonn (and so @triton.jit) is imported: the
decorator picks interpreter or compiler when it runs. TRITONN_STRICT makes a tritonn
call that would silently fall back to torch fail instead, so a benchmark can never
time torch against torch. Outputs are not poisoned here: filling them with NaN
would be timed too.

The benchmarks are run explicitly (``pytest benchmarks``); ``pyproject.toml``'s
testpaths keep them out of a plain ``pytest`` run. Run them in their own session,
not together with ``tests/`` (whose conftest poisons outputs).
"""

import os
import time

import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"
os.environ["TRITONN_STRICT"] = "1"

import pytest  # noqa: E402

import tritonn  # noqa: E402,F401  (imported here, after the switches above)
import timing  # noqa: E402


def pytest_configure(config):
    # Where pytest-benchmark is missing, its marker must still be known.
    config.addinivalue_line("markers", "benchmark(group=...): pytest-benchmark group")


@pytest.fixture
def device() -> str:
    return "cuda" if timing.on_gpu() else "cpu"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


class _NoPlugin:
    """Stands in for pytest-benchmark's fixture where the plugin is not installed or
    disabled (``-p no:benchmark``): calls the function once. The JSONL record keeps
    the numbers."""

    def __init__(self):
        self.extra_info = {}

    def pedantic(self, target, args=(), kwargs=None, rounds=1, iterations=1, **_):
        result = None
        for _ in range(rounds * iterations):
            result = target(*args, **(kwargs or {}))
        return result


@pytest.fixture
def measure(request):
    """``measure(fn, flops=..., bytes=..., **labels)`` times ``fn`` with
    :func:`timing.median_ms` and records ms, TFLOP/s (compute-bound layers: ``flops``),
    GB/s (memory-bound layers: ``bytes``, the least the op must move), the labels
    (impl, case, shape, dtype, mode) and the
    environment in ``benchmark.extra_info``: those are the authoritative numbers.
    ``first_call_s`` is the wall time of the first call (compiling and autotuning on
    a GPU), kept to size the time budget of the next GPU session.
    pytest-benchmark's own statistics come from one synchronized call and are only
    a smoke signal."""
    plugin = request.config.pluginmanager.hasplugin("benchmark")
    bench = request.getfixturevalue("benchmark") if plugin else _NoPlugin()

    def run(fn, *, flops: float = 0.0, bytes: float | None = None, **labels) -> float:
        start = time.perf_counter()
        timing.synchronized(fn)()
        first_call_s = time.perf_counter() - start
        ms = timing.median_ms(fn)
        record = {
            **labels,
            "ms": ms,
            "tflops": timing.tflops(flops, ms),
            "flops": flops,
            **({"bytes": bytes, "gbps": bytes / (ms * 1e-3) / 1e9} if bytes else {}),
            "first_call_s": first_call_s,
            **timing.environment(),
        }
        bench.extra_info.update(record)
        bench.pedantic(timing.synchronized(fn), rounds=1, iterations=1)
        timing.append_jsonl({"test": request.node.nodeid, **record})
        return ms

    return run
