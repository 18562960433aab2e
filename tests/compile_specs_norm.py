"""Compile-tier specs of the batch-norm kernels (see tests/compile_tier.py).

The launcher picks one of ``gpu_tile_shapes()`` (no autotuning). The heaviest kernel
(the input gradient with every flag) is compiled at every shape; the others at one
shape per kind of layout (long spatial rows, mixed, channels_last); every dtype, flag
combination and activation at a typical tile."""

import importlib
import itertools

# (x dtype, parameter dtype, statistics dtype) as launched
BN_DTYPES = (("fp32", "fp32", "fp32"), ("bf16", "fp32", "fp32"), ("fp16", "fp32", "fp32"), ("bf16", "bf16", "fp32"),
             ("fp64", "fp64", "fp64"))
BN_BIG_KERNELS = ("batch_norm_partial_stats_kernel", "batch_norm_forward_kernel",
                  "batch_norm_partial_grads_kernel", "batch_norm_backward_kernel")


def _arg_names(kernel):
    from .compile_tier import _unwrap

    return _unwrap(getattr(importlib.import_module("tritonn.kernels.norm"), kernel)).arg_names


def _bn_pointers(kernel, x, param, acc):
    roles = {"x_ptr": x, "y_ptr": x, "dy_ptr": x, "dx_ptr": x, "w_ptr": param, "b_ptr": param,
             "rmean_ptr": param, "rvar_ptr": param, "dw_ptr": param, "db_ptr": param, "partial_ptr": acc,
             "stats_ptr": acc, "sums_ptr": acc, "nbt_ptr": "i64"}
    return {n: roles[n] for n in _arg_names(kernel) if n.endswith("_ptr")}


def _bn_layout(kernel, channel_fast):
    """What a launch specializes: unit strides of the fast axis; channels_last rows are
    merged into an (N * L, C, 1) view, so L and the column chunking are 1 too."""
    axis = "c" if channel_fast else "l"
    out = {n: 1 for n in _arg_names(kernel) if n.startswith("stride_") and n.endswith(axis)}
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

    from .compile_tier import ARCHS

    def big(kernel, blocks, dtypes=BN_DTYPES[1], arch=90, act="relu", full=True, aligned=True):
        channel_fast = blocks["BLOCK_L"] == 1
        layout = _bn_layout(kernel, channel_fast) if aligned else {}
        return ("norm", kernel, _bn_pointers(kernel, *dtypes), dict(**_bn_flags(kernel, act, full), **blocks, **layout),
                arch, GPU_WARPS, 1, aligned)

    shapes = [dict(zip(("BLOCK_N", "BLOCK_C", "BLOCK_L"), s)) for s in gpu_tile_shapes()]
    nchw, mixed, channels_last = ({"BLOCK_N": 32, "BLOCK_C": 1, "BLOCK_L": 64}, {"BLOCK_N": 32, "BLOCK_C": 8,
                                  "BLOCK_L": 8}, {"BLOCK_N": 16, "BLOCK_C": 128, "BLOCK_L": 1})
    assert all(b in shapes for b in (nchw, mixed, channels_last))
    for blocks in shapes:
        yield big("batch_norm_backward_kernel", blocks)
    for kernel, blocks in itertools.product(BN_BIG_KERNELS[:3], (nchw, mixed, channels_last)):
        yield big(kernel, blocks)
    for kernel, blocks in itertools.product(BN_BIG_KERNELS, (nchw, channels_last)):
        if blocks is nchw:
            for dtypes in BN_DTYPES[:1] + BN_DTYPES[2:]:
                yield big(kernel, blocks, dtypes)
        yield big(kernel, blocks, arch=80)
        yield big(kernel, blocks, act="none", full=False, aligned=False)
    for kernel, act in itertools.product(BN_BIG_KERNELS[1:], ACTIVATIONS):
        if act != "relu":
            yield big(kernel, nchw, act=act)
    # an empty batch in training: only num_batches_tracked += 1
    yield ("norm", "batch_norm_partial_stats_kernel", _bn_pointers("batch_norm_partial_stats_kernel", *BN_DTYPES[0]),
           dict(INCREMENT_NBT=True, BLOCK_N=1, BLOCK_C=1, BLOCK_L=1), 90, GPU_WARPS, 1, False)
    # the per-channel kernels: every flag combination a launch uses, every dtype, both targets
    stats_flags = [(False, False, False), (True, False, False), (True, True, False), (True, True, True)]
    grads_flags = [f for f in itertools.product((True, False), repeat=3) if any(f)]

    def stats(flags, dtypes, arch):
        batch, update, cumulative = flags
        kernel = "batch_norm_finalize_stats_kernel"
        return ("norm", kernel, _bn_pointers(kernel, *dtypes),
                dict(BATCH_STATS=batch, UPDATE_RUNNING=update, CUMULATIVE=cumulative, **FINALIZE_BLOCKS_GPU),
                arch, FINALIZE_WARPS, 1, False)

    def grads(flags, dtypes, arch):
        need_w, need_b, store = flags
        kernel = "batch_norm_finalize_grads_kernel"
        return ("norm", kernel, _bn_pointers(kernel, *dtypes),
                dict(NEED_W=need_w, NEED_B=need_b, STORE_SUMS=store, **FINALIZE_BLOCKS_GPU),
                arch, FINALIZE_WARPS, 1, False)

    for flags in stats_flags:
        yield stats(flags, BN_DTYPES[1], 90)
    for flags in grads_flags:
        yield grads(flags, BN_DTYPES[1], 90)
    for dtypes, arch in itertools.product(BN_DTYPES, ARCHS):
        if (dtypes != BN_DTYPES[1]) == (arch == 90):  # other dtypes on sm_90, the usual one on sm_80
            yield stats(stats_flags[-1], dtypes, arch)
            yield grads(grads_flags[0], dtypes, arch)
