"""Compile-tier specs of the attention kernels (see tests/compile_tier.py).

The GPU blocks are fixed per head dim (``ops.attention.gpu_config``), so the tier
compiles exactly what a launch uses: head dims 64/128/256 (and 32), bf16 and fp32 on
both targets, the heaviest variant (two masks, causal, dropout) and the bare one.
"""

import itertools

ATTENTION_KERNELS = ("attention_forward_kernel", "attention_dkdv_kernel", "attention_dq_kernel")
CONFIG_KIND = {"attention_forward_kernel": "forward", "attention_dkdv_kernel": "dkdv", "attention_dq_kernel": "dq",
               "attention_weights_kernel": "weights"}


def attention_specs():
    from tritonn.kernels import attention
    from tritonn.ops.attention import ADDITIVE, DROP_TRUE, gpu_config

    from .compile_tier import DTYPE_SIZES, _unwrap

    def args(kernel):
        return _unwrap(getattr(attention, kernel)).arg_names

    def pointers(kernel, dtype):
        acc = "fp64" if dtype == "fp64" else "fp32"
        roles = {"lse_ptr": acc, "delta_ptr": acc, "scale_ptr": acc, "mask1_ptr": dtype, "mask2_ptr": "u8"}
        return {a: roles.get(a, dtype) for a in args(kernel) if a.endswith("_ptr")}

    def unit_strides(kernel):
        """Contiguous head dims (and key-contiguous masks), as a launch on contiguous tensors specializes."""
        return {a: 1 for a in args(kernel) if a.startswith("stride_") and (a.endswith("d") or a.endswith("m1n"))}

    def spec(kernel, dtype, d, arch, full):
        cfg = gpu_config(CONFIG_KIND[kernel], d, DTYPE_SIZES[dtype])
        flags = dict(MASK1=ADDITIVE if full else 0, MASK2=DROP_TRUE if full else 0, IS_CAUSAL=full, DROPOUT=full)
        if kernel == "attention_forward_kernel":
            flags["NAN_ROWS"] = full
        if kernel == "attention_weights_kernel":
            flags["AVERAGE"] = full
        blocks = dict(BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"], BLOCK_D=d)
        if "BLOCK_DV" in args(kernel):
            blocks["BLOCK_DV"] = d
        precision = "tf32" if dtype == "fp32" else "ieee"
        constexprs = dict(**flags, INPUT_PRECISION=precision, **blocks,
                          **(unit_strides(kernel) if full else {}))
        return ("attention", kernel, pointers(kernel, dtype), constexprs, arch, cfg["num_warps"],
                cfg["num_stages"], full)

    # every head dim's blocks, both targets, bf16 and fp32 (TF32), the heaviest variant
    for kernel, dtype, d, arch in itertools.product(ATTENTION_KERNELS, ("bf16", "fp32"), (64, 128, 256), (80, 90)):
        yield spec(kernel, dtype, d, arch, True)
    # the bare variant (no mask, no dropout, runtime strides), fp16, a small head dim, float64
    for kernel in ATTENTION_KERNELS:
        for d in (64, 128, 256):
            yield spec(kernel, "bf16", d, 90, False)
        yield spec(kernel, "fp16", 32, 90, True)
        yield spec(kernel, "fp64", 64, 90, False)
    for d, dtype, full in itertools.product((64, 128, 256), ("bf16", "fp32"), (True, False)):
        yield spec("attention_weights_kernel", dtype, d, 90, full)
    for dtype, arch in itertools.product(("bf16", "fp32", "fp64"), (80, 90)):
        yield ("attention", "attention_preprocess_kernel",
               {"o_ptr": dtype, "do_ptr": dtype, "delta_ptr": "fp64" if dtype == "fp64" else "fp32"},
               dict(BLOCK_M=64, BLOCK_DV=128, stride_od=1, stride_dod=1), arch, 4, 1, True)
