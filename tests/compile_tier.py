"""The compile tier: every kernel, at every config its autotuner can pick, compiled
for real GPU targets (sm_80, sm_90) on the CPU with Triton's own pipeline and the
bundled ptxas. It catches what the interpreter lets through: dot shapes, non-constexpr
globals, unsupported ops, register and shared-memory blow-ups.

Run as ``python -m tests.compile_tier`` in a process *without* TRITON_INTERPRET
(``@triton.jit`` must produce compilable functions); prints one JSON line per
compile. ``tests/test_compile_tier.py`` drives it.

Each kernel family lists its variants (module, kernel, pointer dtypes, constexprs,
target, warps, stages, aligned) in ``SPECS`` below; a kernel that is not
listed fails ``test_every_kernel_has_a_compile_spec``.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor

ARCHS = {80: 163 * 1024, 90: 227 * 1024}  # compute capability -> shared memory per block
DTYPE_SIZES = {"fp16": 2, "bf16": 2, "fp32": 4, "fp64": 8}


def _unwrap(kernel):
    """The JITFunction under autotune/heuristics wrappers."""
    from triton.runtime.jit import JITFunction

    while not isinstance(kernel, JITFunction):
        kernel = kernel.fn
    return kernel


# Scalar kernel arguments a launch passes as Python floats (typed fp32 by Triton).
FLOAT_ARGS = {"dropout_p", "p", "scale_hi", "scale_lo", "momentum_hi", "momentum_lo", "eps_hi", "eps_lo"}


def _signature(kernel, pointers: dict, constexprs: dict, aligned: bool):
    """Every argument: pointer dtype from ``pointers``, constexpr from ``constexprs``, fp32
    for the float scalars in ``FLOAT_ARGS``, the rest i32. ``aligned`` marks every pointer and integer divisible by 16, as a launch
    on aligned tensors with sizes multiple of 16 specializes them; without it the
    compiler can neither vectorize loads nor software-pipeline the K loop."""
    sig, attrs = {}, {}
    for i, name in enumerate(_unwrap(kernel).arg_names):
        if name in constexprs:
            sig[name] = "constexpr"
            continue
        sig[name] = "*" + pointers[name] if name in pointers else ("fp32" if name in FLOAT_ARGS else "i32")
        attrs[(i,)] = [["tt.divisibility", 16]] if aligned else []
    return sig, attrs


# The operand layouts Linear launches: unit strides are specialized to constexpr 1 by
# Triton at launch, and they are what lets it vectorize and pipeline the loads.
GEMM_LAYOUTS = {
    "forward x @ W^T": {"stride_ak": 1, "stride_bk": 1, "stride_cn": 1},
    "grad_x dz @ W": {"stride_ak": 1, "stride_bn": 1, "stride_cn": 1},
    "grad_W dz^T @ x": {"stride_am": 1, "stride_bn": 1, "stride_cn": 1},
}
GEMM_POINTERS = ("a_ptr", "b_ptr", "c_ptr", "bias_ptr", "preact_ptr", "rowsum_ptr")


def gemm_specs():
    from tritonn.kernels.activations import ACTIVATIONS
    from tritonn.kernels.gemm import GEMM_CONFIGS, fits_in_shared_memory

    # every config the autotuner can keep on both targets; every layout Linear launches on sm_90 in bf16
    forward = GEMM_LAYOUTS["forward x @ W^T"]
    for dtype, arch, layout in itertools.product(("bf16", "fp32", "fp64"), ARCHS, GEMM_LAYOUTS.values()):
        if (dtype != "bf16" or arch != 90) and layout is not forward or dtype == "fp64" and arch != 90:
            continue
        precision = "tf32" if dtype == "fp32" else "ieee"
        for cfg in GEMM_CONFIGS:
            if not fits_in_shared_memory(cfg, DTYPE_SIZES[dtype], ARCHS[arch]):
                continue
            if dtype == "fp64" and cfg.kwargs["BLOCK_M"] * cfg.kwargs["BLOCK_N"] > 64 * 64:
                continue  # pruned for float64, see kernels/gemm.py
            constexprs = dict(HAS_BIAS=True, ACTIVATION="gelu", STORE_PREACT=True, ROW_SUM=True, DROPOUT=True,
                              EVEN_K=True, INPUT_PRECISION=precision, **cfg.kwargs, **layout)
            yield ("gemm", "gemm_kernel", dict.fromkeys(GEMM_POINTERS, dtype), constexprs, arch,
                   cfg.num_warps, cfg.num_stages, True)
    # every epilogue variant at one config; unaligned operands and a ragged K too
    cfg = GEMM_CONFIGS[3]
    for dtype, act, bare in itertools.product(("bf16",), ACTIVATIONS, (True, False)):
        constexprs = dict(HAS_BIAS=not bare, ACTIVATION=act, STORE_PREACT=not bare, ROW_SUM=not bare,
                          DROPOUT=not bare, EVEN_K=bare, INPUT_PRECISION="ieee", **cfg.kwargs,
                          **(GEMM_LAYOUTS["forward x @ W^T"] if bare else {}))
        yield ("gemm", "gemm_kernel", dict.fromkeys(GEMM_POINTERS, dtype), constexprs, 90,
               cfg.num_warps, cfg.num_stages, bare)


def elementwise_specs():
    from tritonn.kernels.activations import ACTIVATIONS
    from tritonn.ops.gemm import ACTIVATION_BACKWARD_BLOCKS, COLUMN_SUM_BLOCKS

    # every activation in bf16 on sm_90, every dtype on both targets
    for dtype, act, arch in itertools.product(DTYPE_SIZES, ACTIVATIONS, ARCHS):
        if (dtype == "bf16" and arch == 90) or act == "gelu":
            pointers = {"dy_ptr": dtype, "z_ptr": dtype, "dz_ptr": dtype}
            yield ("activations", "activation_backward_kernel", pointers,
                   dict(ACTIVATION=act, DROPOUT=act in ("gelu", "none"), **ACTIVATION_BACKWARD_BLOCKS), arch, 4, 1,
                   True)
    for dtype, arch in itertools.product(DTYPE_SIZES, ARCHS):
        if dtype == "bf16" or arch == 90:
            yield ("reduce", "column_sum_kernel", {"x_ptr": dtype, "out_ptr": dtype},
                   dict(COLUMN_SUM_BLOCKS), arch, 4, 1, False)


def pool_specs():
    from .compile_specs_pool import pool_specs as specs

    yield from specs()


def batch_norm_specs():
    from .compile_specs_norm import batch_norm_specs as specs

    yield from specs()


def conv_specs():
    from .compile_specs_conv import conv_specs as specs

    yield from specs()


def attention_specs():
    from .compile_specs_attention import attention_specs as specs

    yield from specs()


def layer_norm_specs():
    from .compile_specs_layer_norm import layer_norm_specs as specs

    yield from specs()


def rnn_specs():
    from .compile_specs_rnn import rnn_specs as specs

    yield from specs()


# The kernels whose K loop must be software-pipelined on aligned operands.
PIPELINED_KERNELS = ("gemm_kernel", "conv_forward_kernel", "conv_dgrad_kernel", "conv_wgrad_kernel")

SPECS = [gemm_specs, elementwise_specs, conv_specs, pool_specs, batch_norm_specs, attention_specs, rnn_specs,
         layer_norm_specs]


def _compile(spec):
    module, name, pointers, constexprs, arch, num_warps, num_stages, aligned = spec
    import importlib

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn = _unwrap(getattr(importlib.import_module(f"tritonn.kernels.{module}"), name))
    signature, attrs = _signature(fn, pointers, constexprs, aligned)
    src = ASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=attrs)
    label = f"{name} sm_{arch} {sorted(pointers.values())[0]} " + " ".join(
        f"{k}={v}" for k, v in constexprs.items()) + f" warps={num_warps} stages={num_stages} aligned={aligned}"
    try:
        compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32),
                                  options={"num_warps": num_warps, "num_stages": num_stages})
    except Exception as e:  # noqa: BLE001 - reported, the test fails on it
        return {"kernel": name, "label": label, "ok": False, "error": f"{type(e).__name__}: {e}"[:2000]}
    shared = compiled.metadata.shared
    error = None
    if shared > ARCHS[arch]:
        error = f"needs {shared} bytes of shared memory, sm_{arch} has {ARCHS[arch]}"
    elif name in PIPELINED_KERNELS and aligned and num_stages > 1:
        # the K loop must be software-pipelined: several stages of operand tiles in flight
        tile = (constexprs["BLOCK_M"] + constexprs["BLOCK_N"]) * constexprs["BLOCK_K"] * DTYPE_SIZES[next(iter(pointers.values()))]
        if shared < 2 * tile:
            error = f"K loop not pipelined: {shared} bytes of shared memory for {tile}-byte stages"
    return {"kernel": name, "label": label, "ok": error is None, "shared": shared, "error": error}


def kernel_names():
    """Every ``*_kernel`` defined in tritonn.kernels."""
    import importlib
    import pkgutil

    import tritonn.kernels as pkg

    names = set()
    for info in pkgutil.iter_modules(pkg.__path__):
        module = importlib.import_module(f"tritonn.kernels.{info.name}")
        names |= {n for n in vars(module) if n.endswith("_kernel")}
    return names


def main():
    assert not os.environ.get("TRITON_INTERPRET"), "the compile tier needs compiled kernels"
    specs = [s for make in SPECS for s in make()]
    covered = {s[1] for s in specs}
    print(json.dumps({"kernels": sorted(kernel_names()), "covered": sorted(covered)}), flush=True)
    workers = int(os.environ.get("COMPILE_TIER_WORKERS", os.cpu_count() or 1))
    with ProcessPoolExecutor(workers) as pool:
        for result in pool.map(_compile, specs, chunksize=4):
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    sys.exit(main())
