"""Compile-tier specs of the max-pooling kernels (see tests/compile_tier.py).

The launcher picks fixed tiles (no autotuning): every tile it can pick is compiled
once, every dtype and index mode at the tile a GPU uses most, and the other
geometries (non-overlapping, every option at once) at one tile each."""

import itertools

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

    from .compile_tier import ARCHS, DTYPE_SIZES

    blocks = {"nchw": POOL_NCHW_BLOCKS, "nhwc": POOL_NHWC_BLOCKS}
    resnet = POOL_GEOMETRIES["3x3 s2 p1"]

    def forward(layout, dtype, index, idx_dtype, arch, geometry=resnet, block=None, aligned=True):
        block = block or blocks[layout][0]
        units = POOL_UNIT_STRIDE[layout] if aligned else {}
        wide = block is POOL_NCHW_BLOCKS[-1] or block is POOL_NHWC_BLOCKS[-1]  # int64 splits too
        return ("pool", f"max_pool2d_{layout}_kernel", {"x_ptr": dtype, "y_ptr": dtype, "idx_ptr": idx_dtype},
                dict(**geometry, INDEX=index, WIDE=wide, **block, **units), arch, NUM_WARPS, 1, aligned)

    def backward(layout, dtype, index, idx_dtype, arch, geometry=resnet, block=None, aligned=True):
        block = block or blocks[layout][0]
        units = POOL_UNIT_STRIDE_BACKWARD[layout] if aligned else {}
        wide = block is POOL_NCHW_BLOCKS[-1] or block is POOL_NHWC_BLOCKS[-1]
        return ("pool", f"max_pool2d_{layout}_backward_kernel", {"g_ptr": dtype, "idx_ptr": idx_dtype, "dx_ptr": dtype},
                dict(**geometry, INDEX=index, WIDE=wide, **block, **units), arch, NUM_WARPS, 1, aligned)

    for layout in ("nchw", "nhwc"):
        # every dtype on sm_90, bf16 on sm_80, with indices; the other index modes in bf16
        for dtype, arch in itertools.product(DTYPE_SIZES, ARCHS):
            if arch == 90 or dtype == "bf16":
                yield forward(layout, dtype, "flat", "i64", arch)
                yield backward(layout, dtype, "tap", "i8", arch)
        for index, idx_dtype in (("none", "i8"), ("tap", "i8")):
            yield forward(layout, "bf16", index, idx_dtype, 90)
        for index, idx_dtype in (("tap", "i32"), ("flat", "i64")):
            yield backward(layout, "bf16", index, idx_dtype, 90)
        # every tile the launcher can pick, and the other geometries, with runtime strides
        for block in blocks[layout][1:]:
            yield forward(layout, "bf16", "flat", "i64", 90, block=block, aligned=False)
            yield backward(layout, "fp32", "tap", "i8", 90, block=block, aligned=False)
        for geometry in list(POOL_GEOMETRIES.values())[1:]:
            yield forward(layout, "bf16", "flat", "i64", 90, geometry=geometry, aligned=False)
            yield backward(layout, "fp32", "tap", "i8", 90, geometry=geometry, aligned=False)
