"""Where a tritonn call runs, and the few process-wide switches that decide it.

* CUDA tensors run the Triton kernels, compiled.
* CPU tensors run the same kernels through Triton's interpreter when
  ``TRITON_INTERPRET=1`` was set before tritonn was imported (``@triton.jit``
  picks interpreter or compiler when it decorates, so the choice is fixed at import).
* Anything else (CPU without the interpreter, other devices) runs the native torch
  computation with a one-time warning, or raises :class:`FallbackError` when
  ``TRITONN_STRICT=1``. Meta tensors carry no data and take the torch path silently.

``TRITONN_POISON=1`` makes every output buffer start as NaN (or -1 for integers), so a
kernel that forgets to write an element fails the tests instead of passing on
whatever the allocator left there.
"""

from __future__ import annotations

import os
import struct
import warnings

import torch
import triton

__all__ = [
    "FallbackError",
    "INTERPRETING",
    "autocast",
    "autocast_float32",
    "conv_tf32_enabled",
    "autotune_configs",
    "empty",
    "empty_like",
    "float_pair",
    "next_pow2",
    "runs_on_triton",
    "fallback",
    "strict",
    "tf32_enabled",
]

INTERPRETING: bool = bool(triton.knobs.runtime.interpret)
"""True when the kernels were decorated under ``TRITON_INTERPRET=1`` (read at import)."""

POISON: bool = os.environ.get("TRITONN_POISON", "0") not in ("", "0")


class FallbackError(RuntimeError):
    """A tritonn op was asked to run where no Triton path exists, under ``TRITONN_STRICT=1``."""


def strict() -> bool:
    """Read at every call, so a test or a user can switch it at run time."""
    return os.environ.get("TRITONN_STRICT", "0") not in ("", "0")


def runs_on_triton(*tensors: torch.Tensor | None) -> bool:
    """Whether these tensors (``None`` entries ignored) can run the Triton kernels."""
    kinds = {t.device.type for t in tensors if t is not None}
    if kinds == {"cuda"}:
        return True
    return kinds == {"cpu"} and INTERPRETING


_warned: set[str] = set()


def fallback(op: str, *tensors: torch.Tensor | None) -> None:
    """Called right before an op computes natively; warns once per op, raises when strict."""
    kinds = sorted({t.device.type for t in tensors if t is not None})
    if "meta" in kinds:
        return
    where = "/".join(kinds) or "no"
    msg = (
        f"tritonn.{op}: no Triton path for {where} tensors, computing with torch instead "
        "(set TRITON_INTERPRET=1 before importing tritonn to run the kernels on the CPU)"
    )
    if strict():
        raise FallbackError(msg + "; TRITONN_STRICT=1 forbids this fallback")
    if op not in _warned:
        _warned.add(op)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)


def empty(shape, *, dtype: torch.dtype, device: torch.device,
          memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """Allocate an output buffer; poisoned when ``TRITONN_POISON=1``."""
    return _poisoned(torch.empty(shape, dtype=dtype, device=device, memory_format=memory_format))


def empty_like(t: torch.Tensor) -> torch.Tensor:
    """An output buffer like ``t`` (shape, dtype, device, and a dense t's strides);
    poisoned when ``TRITONN_POISON=1``."""
    return _poisoned(torch.empty_like(t))


def _poisoned(out: torch.Tensor) -> torch.Tensor:
    if POISON:
        out.fill_(float("nan") if out.is_floating_point() else -1)
    return out


AUTOTUNE: bool = os.environ.get("TRITONN_AUTOTUNE", "1") not in ("", "0")
"""``TRITONN_AUTOTUNE=0`` (read at import): the first config only, no tuning. For test
runs on a GPU, where hundreds of small shapes would each tune every config."""


def autotune_configs(full: list, interpreter: triton.Config) -> list:
    """The autotuner's candidates: ``full`` on GPU, one config under the interpreter
    (the interpreter cannot benchmark several configs), the first with TRITONN_AUTOTUNE=0."""
    if INTERPRETING:
        return [interpreter]
    return list(full) if AUTOTUNE else list(full[:1])


_shared_memory: dict = {}


def shared_memory_limit(device: torch.device) -> int:
    """Bytes of shared memory a program may use on ``device`` (opt-in maximum)."""
    if device.type != "cuda" or INTERPRETING:
        return 227 * 1024
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _shared_memory:
        props = triton.runtime.driver.active.utils.get_device_properties(index)
        _shared_memory[index] = props["max_shared_mem"]
    return _shared_memory[index]


def next_pow2(n) -> int:
    """The next power of two of n, at least 1: a block size for a dimension of n. A
    symbolic n (torch.compile's shape-only run of a launcher) is read from its example
    value, so that choosing launch blocks adds no guard on a dynamic size."""
    if isinstance(n, torch.SymInt):
        n = n.node.hint if n.node.hint is not None else 1
    return triton.next_power_of_2(max(int(n), 1))


def float_pair(v: float) -> tuple[float, float]:
    """v as float32 hi + lo: Triton passes a Python float to a kernel as float32, so a
    float64 kernel adds the two back (48 bits of v) where precision matters."""
    hi = struct.unpack("f", struct.pack("f", v))[0]
    return hi, v - hi


def tf32_enabled() -> bool:
    """Whether fp32 matmuls may use TF32, following torch's own switch."""
    precision = getattr(torch.backends.cuda.matmul, "fp32_precision", "none")
    if precision in ("tf32", "ieee"):
        return precision == "tf32"
    return bool(torch.backends.cuda.matmul.allow_tf32)


def autocast(*tensors: torch.Tensor | None) -> tuple:
    """The tensors as ``torch.autocast`` would hand them to a matmul-like op: float16/
    bfloat16/float32 cast to the autocast dtype when autocast is on for their device,
    float64 and non-floating tensors left alone. Differentiable casts, like torch's."""
    device_type = next(t.device.type for t in tensors if t is not None)
    if not torch.is_autocast_enabled(device_type):
        return tensors
    dtype = torch.get_autocast_dtype(device_type)
    return tuple(
        t.to(dtype) if t is not None and t.is_floating_point() and t.dtype != torch.float64 else t
        for t in tensors
    )


def autocast_float32(*tensors: torch.Tensor | None) -> tuple:
    """The tensors as CUDA autocast hands them to an op of its float32 list (layer_norm):
    float16/bfloat16 up to float32 while autocast is on for CUDA (CPU autocast keeps them)."""
    on_cuda = any(t is not None and t.device.type == "cuda" for t in tensors)
    if not on_cuda or not torch.is_autocast_enabled("cuda"):
        return tensors
    return tuple(t.float() if t is not None and t.dtype in (torch.float16, torch.bfloat16) else t for t in tensors)


def conv_tf32_enabled() -> bool:
    """Whether fp32 convolutions may use TF32, following cuDNN's switch (on by default)."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    precision = getattr(conv, "fp32_precision", "none") if conv is not None else "none"
    if precision in ("tf32", "ieee"):
        return precision == "tf32"
    return bool(torch.backends.cudnn.allow_tf32)
