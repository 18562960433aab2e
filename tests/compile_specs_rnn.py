"""Compile-tier specs of the LSTM kernels (see tests/compile_tier.py)."""

import itertools

# (input dtype, workspace dtype: gates, cell state, recurrent-gradient scratch, tl.dot precision)
RNN_DTYPES = (("bf16", "fp32", "ieee"), ("fp16", "fp32", "ieee"), ("fp32", "fp32", "tf32"), ("fp64", "fp64", "ieee"))
WORKSPACE = {"g_ptr", "c_ptr", "dhs_ptr", "dcs_ptr"}
INDEX = {"perm_ptr": "i64", "offs_ptr": "i64", "bs_ptr": "i32"}
# every flag on (a packed, unsorted, projected, reverse direction) or off (a plain dense forward direction)
FLAG_SETS = (dict(REVERSE=False, PACKED=False, PERM=False, PROJ=False),
             dict(REVERSE=True, PACKED=True, PERM=True, PROJ=True))


def rnn_specs():
    from tritonn.kernels import rnn
    from tritonn.ops.dropout import BLOCK as DROPOUT_BLOCK
    from tritonn.ops.lstm import GPU_BLOCKS, NUM_WARPS

    from .compile_tier import ARCHS, _unwrap

    def pointers(kernel, dtype, workspace):
        names = [a for a in _unwrap(getattr(rnn, kernel)).arg_names if a.endswith("_ptr")]
        return {a: INDEX.get(a, workspace if a in WORKSPACE else dtype) for a in names}

    for kernel in ("lstm_forward_kernel", "lstm_backward_kernel"):
        for (dtype, workspace, precision), arch, flags in itertools.product(RNN_DTYPES, ARCHS, FLAG_SETS):
            constexprs = dict(flags, INPUT_PRECISION=precision if arch == 90 or dtype != "fp32" else "ieee",
                              **GPU_BLOCKS)
            if kernel == "lstm_forward_kernel":
                constexprs["HAS_BIAS"] = not flags["PROJ"]
            yield ("rnn", kernel, pointers(kernel, dtype, workspace), constexprs, arch, NUM_WARPS, 1,
                   not flags["PACKED"])
    for (dtype, _, _), arch in itertools.product(RNN_DTYPES, ARCHS):
        yield ("dropout", "dropout_kernel", {"x_ptr": dtype, "out_ptr": dtype}, dict(BLOCK=DROPOUT_BLOCK), arch, 4, 1,
               True)
