"""Compile-tier specs of the convolution kernels (see tests/compile_tier.py)."""

import itertools

CONV_LAYOUTS = {  # unit strides of (x or dy) and (y or dx) as launches specialize them
    "channels_last": {"stride_xc": 1, "stride_dyc": 1, "stride_yc": 1, "stride_dxc": 1},
    "nchw": {"stride_xw": 1, "stride_dyw": 1, "stride_yw": 1, "stride_dxw": 1},
}
FLAGS = {
    "conv_forward_kernel": dict(HAS_BIAS=True, STORE_PREACT=True, ACTIVATION="gelu"),
    "conv_dgrad_kernel": {},
    "conv_wgrad_kernel": dict(ROW_SUM=True),
    "depthwise_forward_kernel": dict(HAS_BIAS=True, STORE_PREACT=True, ACTIVATION="gelu"),
    "depthwise_dgrad_kernel": {},
    "depthwise_wgrad_kernel": dict(ROW_SUM=True),
}


def conv_specs():
    from tritonn.kernels import conv
    from tritonn.kernels.gemm import fits_in_shared_memory

    from .compile_tier import ARCHS, DTYPE_SIZES, _unwrap

    def args(kernel):
        return _unwrap(getattr(conv, kernel)).arg_names

    def layout(kernel, name):
        """The unit strides of one tensor layout; the implicit-GEMM kernels get
        channels_last weights (ops/conv.py), the depthwise ones contiguous weights."""
        weight = {"stride_wi": 1} if kernel.startswith("conv_") else {"stride_ww": 1}
        units = {**CONV_LAYOUTS[name], **weight, "stride_dwt": 1}
        return {k: v for k, v in units.items() if k in args(kernel)}

    def pointers(kernel, dtype):
        return {a: dtype for a in args(kernel) if a.endswith("_ptr")}

    for kernel, extra in FLAGS.items():
        padded = "PADDING_MODE" in args(kernel)
        gemm_like = kernel.startswith("conv_")
        base = dict(KH=3, KW=3, **extra, **({"PADDING_MODE": "zeros"} if padded else {}))
        if gemm_like:
            base["INPUT_PRECISION"] = "ieee"
        configs = conv.CONV_CONFIGS if gemm_like else conv.DEPTHWISE_CONFIGS
        # every config on both targets in the fast layout (channels_last), bf16 (depthwise: one
        # config on sm_80); the forward in TF32 on sm_90
        for dtype, arch, cfg in itertools.product(("bf16", "fp32"), ARCHS, configs):
            if dtype == "fp32" and (arch != 90 or kernel != "conv_forward_kernel"):
                continue
            if not gemm_like and arch != 90 and cfg is not configs[0]:
                continue
            if gemm_like and not fits_in_shared_memory(cfg, DTYPE_SIZES[dtype], ARCHS[arch]):
                continue
            constexprs = dict(base, **cfg.kwargs, **layout(kernel, "channels_last"))
            if gemm_like and dtype == "fp32":
                constexprs["INPUT_PRECISION"] = "tf32"
            yield ("conv", kernel, pointers(kernel, dtype), constexprs, arch, cfg.num_warps, cfg.num_stages,
                   gemm_like)
        # NCHW, and where they change the code: float16, float64, every padding mode; at one config
        cfg = configs[1]
        variants = [("nchw", "bf16", "zeros")]
        if kernel == "conv_forward_kernel":
            variants.append(("channels_last", "fp16", "zeros"))
        if kernel.endswith("forward_kernel"):
            variants.append(("nchw", "fp64", "zeros"))
        if padded and not kernel.endswith("dgrad_kernel"):
            variants += [("channels_last", "bf16", m) for m in ("reflect", "replicate", "circular")]
        for name, dtype, mode in variants:
            constexprs = dict(base, **cfg.kwargs, **layout(kernel, name))
            if padded:
                constexprs["PADDING_MODE"] = mode
            yield ("conv", kernel, pointers(kernel, dtype), constexprs, 90, cfg.num_warps, cfg.num_stages, False)
    for mode, dtype, arch in (("reflect", "bf16", 90), ("replicate", "bf16", 90), ("circular", "bf16", 90),
                              ("replicate", "fp32", 80)):
        yield ("conv", "pad_fold_kernel", {"src_ptr": dtype, "dst_ptr": dtype}, dict(MODE=mode, BLOCK=256),
               arch, 4, 1, False)
