"""How a benchmark is timed, and what each record says about where it ran.

On a GPU (CUDA available and tritonn not interpreting) the number is
``triton.testing.do_bench``'s median over CUDA events. do_bench also zeroes a
256 MB buffer before every timed call, so each call starts with a cold L2 (H100/H200
have 50-60 MB): that is why the benchmarks do not rotate their inputs. On the CPU the
kernels run in Triton's interpreter, which says nothing about speed; there the number
is a wall-clock median of a few calls, and only proves that the benchmark runs.

Every ``torch.cuda.*`` query sits behind :func:`on_gpu`: on a CPU-only machine they raise.
"""

from __future__ import annotations

import datetime
import json
import os
import statistics
import time

import torch
import triton

import tritonn

GPU_WARMUP_MS = 25
GPU_REP_MS = 100
CPU_RUNS = 3


def on_gpu() -> bool:
    """Whether the kernels run compiled on a GPU (and CUDA may be queried)."""
    return torch.cuda.is_available() and not tritonn.runtime.INTERPRETING


def synchronize() -> None:
    if on_gpu():
        torch.cuda.synchronize()


def synchronized(fn):
    """``fn`` followed by a device sync, so a wall-clock timer sees the whole call."""

    def call():
        out = fn()
        synchronize()
        return out

    return call


def median_ms(fn) -> float:
    """Median milliseconds per call of ``fn``. The first call (compile, autotune,
    cuBLAS start-up) is never timed."""
    fn()
    synchronize()
    if on_gpu():
        return float(triton.testing.do_bench(fn, warmup=GPU_WARMUP_MS, rep=GPU_REP_MS, return_mode="median"))
    times = []
    for _ in range(CPU_RUNS):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def tflops(flops: float, ms: float) -> float:
    return flops / (ms * 1e-3) / 1e12 if ms > 0 else float("nan")


def environment() -> dict:
    """The GPU and versions a record was measured with (identical within one run)."""
    return {
        "gpu": torch.cuda.get_device_name() if on_gpu() else "cpu (interpreter smoke)",
        "torch": torch.__version__,
        "triton": triton.__version__,
        "tritonn": tritonn.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def append_jsonl(record: dict) -> None:
    """Append ``record`` to the file named by ``TRITONN_BENCH_JSONL``, if set.

    pytest-benchmark writes its JSON only when the session ends; this line-per-case
    copy survives a run cut short by a timeout, and works where the plugin is missing.
    """
    path = os.environ.get("TRITONN_BENCH_JSONL")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")


def step(mode: str, run, wrt=(), grad_out=None):
    """The callable a benchmark times. "forward": ``run()`` under no_grad (nothing saved
    for backward). "forward+backward": ``run()``, then ``torch.autograd.grad`` w.r.t.
    ``wrt`` (fresh gradients every call, nothing accumulates) for a fixed ``grad_out``,
    drawn once like the output when not given. Leaves in ``wrt`` get requires_grad."""
    if mode == "forward":
        def forward():
            with torch.no_grad():
                return run()
        return forward
    for t in wrt:
        if t.is_leaf and not t.requires_grad:
            t.requires_grad_(True)
    if grad_out is None:
        with torch.no_grad():
            grad_out = torch.randn_like(run())
    return lambda: torch.autograd.grad(run(), wrt, grad_out)
