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

import importlib
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


def _signature(kernel, pointers: dict, constexprs: dict, aligned: bool):
    """Every argument: pointer dtype from ``pointers``, constexpr from ``constexprs``, the
    rest i32. ``aligned`` marks every pointer and integer divisible by 16, as a launch
    on aligned tensors with sizes multiple of 16 specializes them; without it the
    compiler can neither vectorize loads nor software-pipeline the K loop."""
    sig, attrs = {}, {}
    for i, name in enumerate(_unwrap(kernel).arg_names):
        if name in constexprs:
            sig[name] = "constexpr"
            continue
        sig[name] = "*" + pointers[name] if name in pointers else "i32"
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

    # every config the autotuner can keep, in every layout, on both targets
    for dtype, arch, layout in itertools.product(("bf16", "fp32", "fp64"), ARCHS, GEMM_LAYOUTS.values()):
        precision = "tf32" if dtype == "fp32" else "ieee"
        for cfg in GEMM_CONFIGS:
            if not fits_in_shared_memory(cfg, DTYPE_SIZES[dtype], ARCHS[arch]):
                continue
            if dtype == "fp64" and cfg.kwargs["BLOCK_M"] * cfg.kwargs["BLOCK_N"] > 64 * 64:
                continue  # pruned for float64, see kernels/gemm.py
            constexprs = dict(HAS_BIAS=True, ACTIVATION="gelu", STORE_PREACT=True, ROW_SUM=True, EVEN_K=True,
                              INPUT_PRECISION=precision, **cfg.kwargs, **layout)
            yield ("gemm", "gemm_kernel", dict.fromkeys(GEMM_POINTERS, dtype), constexprs, arch,
                   cfg.num_warps, cfg.num_stages, True)
    # every epilogue variant at one config; unaligned operands and a ragged K too
    cfg = GEMM_CONFIGS[3]
    for dtype, act, bare in itertools.product(("bf16", "fp16"), ACTIVATIONS, (True, False)):
        constexprs = dict(HAS_BIAS=not bare, ACTIVATION=act, STORE_PREACT=not bare, ROW_SUM=not bare,
                          EVEN_K=bare, INPUT_PRECISION="ieee", **cfg.kwargs,
                          **(GEMM_LAYOUTS["forward x @ W^T"] if bare else {}))
        yield ("gemm", "gemm_kernel", dict.fromkeys(GEMM_POINTERS, dtype), constexprs, 90,
               cfg.num_warps, cfg.num_stages, bare)


def elementwise_specs():
    from tritonn.kernels.activations import ACTIVATIONS
    from tritonn.ops.gemm import ACTIVATION_BACKWARD_BLOCKS, COLUMN_SUM_BLOCKS

    for dtype, act, arch in itertools.product(DTYPE_SIZES, ACTIVATIONS, ARCHS):
        pointers = {"dy_ptr": dtype, "z_ptr": dtype, "dz_ptr": dtype}
        yield ("activations", "activation_backward_kernel", pointers,
               dict(ACTIVATION=act, **ACTIVATION_BACKWARD_BLOCKS), arch, 4, 1, True)
    for dtype, arch in itertools.product(DTYPE_SIZES, ARCHS):
        yield ("reduce", "column_sum_kernel", {"x_ptr": dtype, "out_ptr": dtype},
               dict(COLUMN_SUM_BLOCKS), arch, 4, 1, False)


POOL_GEOMETRIES = {  # ResNet's stem pool first; then non-overlapping; then every option at once
    "3x3 s2 p1": dict(KH=3, KW=3, SH=2, SW=2, PH=1, PW=1, DH=1, DW=1),
    "2x2 s2": dict(KH=2, KW=2, SH=2, SW=2, PH=0, PW=0, DH=1, DW=1),
    "2x3 s(1,3) p(1,0) d2": dict(KH=2, KW=3, SH=1, SW=3, PH=1, PW=0, DH=2, DW=2),
}
# the tiles ops/max_pool.py picks on a GPU: ResNet's stem pool (forward, backward), 7x7 maps, 1x1 maps
POOL_NCHW_BLOCKS = ({"BLOCK_P": 2, "BLOCK_H": 8, "BLOCK_W": 64}, {"BLOCK_P": 1, "BLOCK_H": 8, "BLOCK_W": 128},
                    {"BLOCK_P": 128, "BLOCK_H": 1, "BLOCK_W": 8}, {"BLOCK_P": 1024, "BLOCK_H": 1, "BLOCK_W": 1})
POOL_NHWC_BLOCKS = ({"BLOCK_P": 16, "BLOCK_C": 64}, {"BLOCK_P": 256, "BLOCK_C": 4}, {"BLOCK_P": 1024, "BLOCK_C": 1})
# unit strides a contiguous / channels_last input specializes to constexpr 1
POOL_UNIT_STRIDE = {"nchw": {"stride_xw": 1}, "nhwc": {"stride_xc": 1}}
POOL_UNIT_STRIDE_BACKWARD = {"nchw": {"stride_gw": 1, "stride_iw": 1}, "nhwc": {"stride_gc": 1, "stride_ic": 1}}


def pool_specs():
    from tritonn.ops.max_pool import NUM_WARPS

    blocks = {"nchw": POOL_NCHW_BLOCKS, "nhwc": POOL_NHWC_BLOCKS}
    index_dtypes = {"none": "i8", "tap": "i8", "flat": "i64"}
    resnet = POOL_GEOMETRIES["3x3 s2 p1"]
    # every dtype and index mode, both targets, at the ResNet geometry and the GPU's usual tile
    for layout, dtype, arch in itertools.product(("nchw", "nhwc"), DTYPE_SIZES, ARCHS):
        for index, idx_dtype in index_dtypes.items():
            yield ("pool", f"max_pool2d_{layout}_kernel", {"x_ptr": dtype, "y_ptr": dtype, "idx_ptr": idx_dtype},
                   dict(**resnet, INDEX=index, WIDE=False, **blocks[layout][0], **POOL_UNIT_STRIDE[layout]),
                   arch, NUM_WARPS, 1, True)
        for index, idx_dtype in (("tap", "i8"), ("tap", "i32"), ("flat", "i64")):
            yield ("pool", f"max_pool2d_{layout}_backward_kernel",
                   {"g_ptr": dtype, "idx_ptr": idx_dtype, "dx_ptr": dtype},
                   dict(**resnet, INDEX=index, WIDE=False, **blocks[layout][0], **POOL_UNIT_STRIDE_BACKWARD[layout]),
                   arch, NUM_WARPS, 1, True)
    # every tile shape and geometry, unaligned and with runtime strides
    for layout, geometry, block, arch in itertools.product(
            ("nchw", "nhwc"), POOL_GEOMETRIES.values(), POOL_NCHW_BLOCKS + POOL_NHWC_BLOCKS, ARCHS):
        if ("BLOCK_C" in block) != (layout == "nhwc"):
            continue
        wide = block is POOL_NCHW_BLOCKS[-1] or block is POOL_NHWC_BLOCKS[-1]  # int64 splits too
        yield ("pool", f"max_pool2d_{layout}_kernel", {"x_ptr": "bf16", "y_ptr": "bf16", "idx_ptr": "i64"},
               dict(**geometry, INDEX="flat", WIDE=wide, **block), arch, NUM_WARPS, 1, False)
        yield ("pool", f"max_pool2d_{layout}_backward_kernel", {"g_ptr": "fp32", "idx_ptr": "i8", "dx_ptr": "fp32"},
               dict(**geometry, INDEX="tap", WIDE=wide, **block), arch, NUM_WARPS, 1, False)


# batch norm: (x dtype, parameter dtype, statistics dtype) as launched
BN_DTYPES = (("fp32", "fp32", "fp32"), ("bf16", "fp32", "fp32"), ("fp16", "fp32", "fp32"), ("bf16", "bf16", "fp32"),
             ("fp64", "fp64", "fp64"))
BN_BIG_KERNELS = ("batch_norm_partial_stats_kernel", "batch_norm_forward_kernel",
                  "batch_norm_partial_grads_kernel", "batch_norm_backward_kernel")


def _bn_pointers(kernel, x, param, acc):
    roles = {"x_ptr": x, "y_ptr": x, "dy_ptr": x, "dx_ptr": x, "w_ptr": param, "b_ptr": param,
             "rmean_ptr": param, "rvar_ptr": param, "dw_ptr": param, "db_ptr": param, "partial_ptr": acc,
             "stats_ptr": acc, "sums_ptr": acc, "nbt_ptr": "i64"}
    names = _unwrap(getattr(importlib.import_module("tritonn.kernels.norm"), kernel)).arg_names
    return {n: roles[n] for n in names if n.endswith("_ptr")}


def _bn_layout(kernel, channel_fast):
    """What a launch specializes: unit strides of the fast axis; channels_last rows are
    merged into an (N * L, C, 1) view, so L and the column chunking are 1 too."""
    names = _unwrap(getattr(importlib.import_module("tritonn.kernels.norm"), kernel)).arg_names
    axis = "c" if channel_fast else "l"
    out = {n: 1 for n in names if n.startswith("stride_") and n.endswith(axis)}
    if channel_fast:
        out.update(L=1, CHUNK_L=1, NCHUNK_L=1)
    return out


def _bn_flags(kernel, act="relu", full=True):
    return {
        "batch_norm_partial_stats_kernel": dict(INCREMENT_NBT=full),
        "batch_norm_forward_kernel": dict(HAS_WEIGHT=full, HAS_BIAS=full, ACTIVATION=act),
        "batch_norm_partial_grads_kernel": dict(NEED_XMU=full, HAS_WEIGHT=full, HAS_BIAS=full, ACTIVATION=act),
        "batch_norm_backward_kernel": dict(BATCH_STATS=full, HAS_WEIGHT=full, HAS_BIAS=full, ACTIVATION=act),
    }[kernel]


def batch_norm_specs():
    from tritonn.kernels.activations import ACTIVATIONS
    from tritonn.ops.batch_norm import FINALIZE_BLOCKS_GPU, FINALIZE_WARPS, GPU_WARPS, gpu_tile_shapes

    shapes = [dict(zip(("BLOCK_N", "BLOCK_C", "BLOCK_L"), s)) for s in gpu_tile_shapes()]
    # every tile shape the launcher can pick (sm_90, bfloat16 x, the heaviest variant)
    for blocks, kernel in itertools.product(shapes, BN_BIG_KERNELS):
        channel_fast = blocks["BLOCK_L"] == 1
        yield ("norm", kernel, _bn_pointers(kernel, *BN_DTYPES[1]),
               dict(**_bn_flags(kernel), **blocks, **_bn_layout(kernel, channel_fast)), 90, GPU_WARPS, 1, True)
    # every dtype at one NCHW and one channels_last tile, both targets; bare variants with runtime strides;
    # every activation
    typical = [(False, {"BLOCK_N": 32, "BLOCK_C": 1, "BLOCK_L": 64}),
               (True, {"BLOCK_N": 16, "BLOCK_C": 128, "BLOCK_L": 1})]
    assert all(b in shapes for _, b in typical)
    for (channel_fast, blocks), kernel, arch in itertools.product(typical, BN_BIG_KERNELS, ARCHS):
        for dt in BN_DTYPES if arch == 90 else BN_DTYPES[:2]:
            yield ("norm", kernel, _bn_pointers(kernel, *dt),
                   dict(**_bn_flags(kernel), **blocks, **_bn_layout(kernel, channel_fast)), arch, GPU_WARPS, 1, True)
        for dt in BN_DTYPES[:2]:
            yield ("norm", kernel, _bn_pointers(kernel, *dt),
                   dict(**_bn_flags(kernel, "none", False), **blocks), arch, GPU_WARPS, 1, False)
    for (channel_fast, blocks), kernel, act in itertools.product(typical[:1], BN_BIG_KERNELS[1:], ACTIVATIONS):
        yield ("norm", kernel, _bn_pointers(kernel, *BN_DTYPES[1]),
               dict(**_bn_flags(kernel, act), **blocks, **_bn_layout(kernel, channel_fast)), 90, GPU_WARPS, 1, True)
    for arch in ARCHS:  # an empty batch in training: only num_batches_tracked += 1
        kernel = "batch_norm_partial_stats_kernel"
        yield ("norm", kernel, _bn_pointers(kernel, *BN_DTYPES[0]),
               dict(INCREMENT_NBT=True, BLOCK_N=1, BLOCK_C=1, BLOCK_L=1), arch, GPU_WARPS, 1, False)
    # the per-channel kernels, every combination of flags a launch uses
    stats_flags = [(False, False, False), (True, False, False), (True, True, False), (True, True, True)]
    grads_flags = [f for f in itertools.product((True, False), repeat=3) if any(f)]
    for arch, dt in itertools.product(ARCHS, BN_DTYPES):
        for batch, update, cumulative in stats_flags:
            yield ("norm", "batch_norm_finalize_stats_kernel", _bn_pointers("batch_norm_finalize_stats_kernel", *dt),
                   dict(BATCH_STATS=batch, UPDATE_RUNNING=update, CUMULATIVE=cumulative, **FINALIZE_BLOCKS_GPU),
                   arch, FINALIZE_WARPS, 1, False)
        for need_w, need_b, store in grads_flags:
            yield ("norm", "batch_norm_finalize_grads_kernel", _bn_pointers("batch_norm_finalize_grads_kernel", *dt),
                   dict(NEED_W=need_w, NEED_B=need_b, STORE_SUMS=store, **FINALIZE_BLOCKS_GPU),
                   arch, FINALIZE_WARPS, 1, False)


def conv_specs():
    from .compile_specs_conv import conv_specs as specs

    yield from specs()


# The kernels whose K loop must be software-pipelined on aligned operands.
PIPELINED_KERNELS = ("gemm_kernel", "conv_forward_kernel", "conv_dgrad_kernel", "conv_wgrad_kernel")

SPECS = [gemm_specs, elementwise_specs, conv_specs, pool_specs, batch_norm_specs]


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
