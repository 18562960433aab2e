"""Helpers every kernel family shares: tile scheduling, dot operands, output casts.

They paper over the two places a kernel runs (see ``tritonn.runtime``): compiled for a
GPU, or executed by Triton's interpreter, which mishandles bfloat16 arithmetic and
rounds float32 -> bfloat16 by truncation. ``INTERPRETING`` is a constexpr, so the
compiled kernels carry none of the interpreter workarounds.
"""

import triton
import triton.language as tl

INTERPRETING = tl.constexpr(bool(triton.knobs.runtime.interpret))


@triton.jit
def grouped_tile(pid, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """Map a flat program id to a (row-tile, column-tile) pair, walking GROUP_M row
    tiles down a column before moving right, so neighbouring programs share the
    same B columns in L2."""
    tiles_m = tl.cdiv(M, BLOCK_M)
    tiles_n = tl.cdiv(N, BLOCK_N)
    tiles_per_group = GROUP_M * tiles_n
    group = pid // tiles_per_group
    first_m = group * GROUP_M
    group_rows = tl.minimum(tiles_m - first_m, GROUP_M)
    pid_m = first_m + (pid % tiles_per_group) % group_rows
    pid_n = (pid % tiles_per_group) // group_rows
    return pid_m, pid_n


@triton.jit
def dot_operand(x):
    """A tile as tl.dot should see it. The interpreter's bfloat16 dots are wrong, so
    there it gets float32 (exact: bfloat16 products fit in float32)."""
    if INTERPRETING and x.dtype == tl.bfloat16:
        return x.to(tl.float32)
    else:
        return x


@triton.jit
def _round_to_bfloat16(x):
    # Round-to-nearest-even on the float32 bit pattern, leaving NaN alone.
    bits = x.to(tl.uint32, bitcast=True)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return tl.where(x != x, x, bits.to(tl.float32, bitcast=True))


@triton.jit
def cast_to(x, dtype: tl.constexpr):
    """``x.to(dtype)`` with round-to-nearest-even everywhere (the interpreter truncates
    float32 -> bfloat16; the rounding is done by hand there so tests see GPU numerics)."""
    if INTERPRETING:
        if dtype == tl.bfloat16:
            x = _round_to_bfloat16(x.to(tl.float32))
    return x.to(dtype)
