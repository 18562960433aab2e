"""Compile-tier specs of the LayerNorm kernels and the residual-dropout kernel
(see tests/compile_tier.py).

The launcher picks one of ``gpu_block_choices()`` (no autotuning). The forward is
compiled at every choice with every flag on (the fused residual + dropout + norm);
the backward at the row shapes that differ in kind (short rows many per program,
one long row in registers, rows longer than a tile); every dtype and both targets
at a typical choice, and the bare flag sets once."""

import itertools

# (x dtype, statistics / partial-sum dtype)
LN_DTYPES = (("bf16", "fp32"), ("fp32", "fp32"), ("fp16", "fp32"), ("fp64", "fp64"))
ACC_POINTERS = {"stats_ptr", "partial_ptr"}


def _pointers(kernel, dtype, acc):
    from tritonn.kernels import norm

    from .compile_tier import _unwrap

    names = [a for a in _unwrap(getattr(norm, kernel)).arg_names if a.endswith("_ptr")]
    return {a: acc if a in ACC_POINTERS else dtype for a in names}


def layer_norm_specs():
    from tritonn.ops.dropout import BLOCK
    from tritonn.ops.layer_norm import gpu_block_choices

    choices = gpu_block_choices()

    def fwd(b, dtypes=LN_DTYPES[0], arch=90, full=True, aligned=True):
        flags = dict(HAS_WEIGHT=full, HAS_BIAS=full, RESIDUAL=full, DROPOUT=full)
        blocks = {k: b[k] for k in ("BLOCK_M", "BLOCK_N", "ONE_PASS")}
        return ("norm", "layer_norm_forward_kernel", _pointers("layer_norm_forward_kernel", *dtypes),
                dict(flags, **blocks), arch, b["num_warps"], 1, aligned)

    def bwd(b, dtypes=LN_DTYPES[0], arch=90, full=True, aligned=True):
        flags = dict(HAS_WEIGHT=full, NEED_X=True, NEED_PARAMS=full, HAS_DH=full, DROPOUT=full)
        blocks = {k: b[k] for k in ("BLOCK_M", "BLOCK_N")}
        return ("norm", "layer_norm_backward_kernel", _pointers("layer_norm_backward_kernel", *dtypes),
                dict(flags, **blocks), arch, b["num_warps"], 1, aligned)

    typical = next(b for b in choices if b["BLOCK_N"] == 1024)
    kinds = [next(b for b in choices if b["BLOCK_N"] == 16), typical,
             next(b for b in choices if b["BLOCK_N"] == 8192 and b["ONE_PASS"]),
             next(b for b in choices if not b["ONE_PASS"])]
    for b in choices:
        yield fwd(b)
    for b in kinds:
        yield bwd(b)
    for dtypes in LN_DTYPES[1:]:
        yield fwd(typical, dtypes)
        yield bwd(typical, dtypes)
    yield fwd(typical, arch=80)
    yield bwd(typical, arch=80)
    yield fwd(typical, full=False, aligned=False)
    yield bwd(typical, full=False, aligned=False)
    for dtype, dropout in itertools.product(("bf16", "fp32"), (True, False)):
        yield ("dropout", "residual_dropout_kernel", {"r_ptr": dtype, "x_ptr": dtype, "out_ptr": dtype},
               dict(DROPOUT=dropout, BLOCK=BLOCK), 90 if dtype == "bf16" else 80, 4, 1, True)
