"""The GEMM core: C[b] = act(A[b] @ B[b] + bias[b]) for a batch of matrices.

Layout: A is (batch, M, K), B is (batch, K, N), C is (batch, M, N), each addressed by
its own (batch, row, column) strides, so transposed or broadcast operands (stride 0
for a weight shared across the batch) are views, never copies. Program
(pid, batch) computes one BLOCK_M x BLOCK_N tile of C[batch]; ``grouped_tile`` maps
pid to the tile. The K loop accumulates in float32 (float64 for float64 inputs;
TF32 products for float32 inputs when INPUT_PRECISION == "tf32").

Epilogue, in order: + bias (one value per column of C, ``bias_ptr + batch *
stride_biasb + n * stride_biasn``), store the pre-activation to ``preact_ptr`` (same strides as C,
for the backward of a fused activation), apply ACTIVATION, (DROPOUT) zero the dropped
elements and scale the kept by 1/(1-p) with the mask ``kernels.dropout`` draws for the
contiguous element index of C (a Transformer's feed-forward dropout), cast, store C.

ROW_SUM: the programs of the first column tile also write sum_k A[b, m, k] to
``rowsum_ptr + batch * stride_rsb + m``. With A = dY^T this is the bias gradient,
computed from tiles the weight-gradient GEMM loads anyway.

Rows of A and columns of B are read modulo M and N, so only K needs a load mask;
the store is masked. Offsets are int64 so tensors past 2^31 elements address right.
"""

import torch
import triton
import triton.language as tl

from ..runtime import autotune_configs, shared_memory_limit
from .activations import apply_activation
from .common import cast_to, dot_operand, grouped_tile
from .dropout import dropped


def gemm_config(bm, bn, bk, stages, warps, group_m=8):
    """An autotuner candidate for a GEMM-shaped kernel."""
    return triton.Config(
        {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": group_m},
        num_stages=stages, num_warps=warps,
    )


# Candidates for Hopper/Ampere, largest first; configs whose pipeline does not fit
# in shared memory for the operand size are pruned before tuning.
GEMM_CONFIGS = [
    gemm_config(128, 256, 64, 3, 8),
    gemm_config(256, 128, 64, 3, 8),
    gemm_config(128, 128, 64, 4, 8),
    gemm_config(128, 128, 32, 4, 4),
    gemm_config(64, 128, 64, 4, 4),
    gemm_config(128, 64, 64, 4, 4),
    gemm_config(64, 64, 64, 4, 4),
    gemm_config(64, 32, 32, 5, 2),
    gemm_config(32, 64, 32, 5, 2),
]
GEMM_INTERPRETER_CONFIG = gemm_config(32, 32, 32, 1, 4, group_m=2)

def fits_in_shared_memory(config, element_size, limit):
    """Whether the operand tiles of every pipeline stage fit in ``limit`` bytes."""
    kw = config.kwargs
    return (kw["BLOCK_M"] + kw["BLOCK_N"]) * kw["BLOCK_K"] * element_size * config.num_stages <= limit


def prune_for(operand: str):
    """An autotuner pruner keeping the configs that suit the dtype and device of ``operand``."""

    def prune(configs, named_args, **kwargs):
        a = named_args[operand]
        if a.dtype == torch.float64:  # no tensor cores: big tiles only spill registers
            configs = [c for c in configs if c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"] <= 64 * 64]
        limit = shared_memory_limit(a.device)
        kept = [c for c in configs if fits_in_shared_memory(c, a.element_size(), limit)]
        return kept or configs[-1:]

    return prune


@triton.jit
def accumulate(acc, a, b, INPUT_PRECISION: tl.constexpr):
    """acc + a @ b on the tensor cores, accumulated in acc's dtype."""
    return tl.dot(dot_operand(a), dot_operand(b), acc, input_precision=INPUT_PRECISION, out_dtype=acc.dtype)


@triton.jit
def epilogue(acc, c_ptrs, preact_ptrs, bias_ptrs, mask, mask_n,
             HAS_BIAS: tl.constexpr, STORE_PREACT: tl.constexpr, ACTIVATION: tl.constexpr,
             DROPOUT: tl.constexpr = False, drop_offs=0, p=0.0, scale_hi=1.0, scale_lo=0.0, seed=0):
    """The end of every GEMM-shaped kernel: + bias (one per column), keep the
    pre-activation, activate, (DROPOUT) drop with the mask of elements ``drop_offs``,
    round, store. Pointers are tiles (bias: a row)."""
    if HAS_BIAS:
        acc += tl.load(bias_ptrs, mask=mask_n, other=0.0).to(acc.dtype)[None, :]
    if STORE_PREACT:
        tl.store(preact_ptrs, cast_to(acc, preact_ptrs.dtype.element_ty), mask=mask)
    acc = apply_activation(acc, ACTIVATION)
    if DROPOUT:
        acc = dropped(acc, seed, drop_offs, p, scale_hi, scale_lo)
    tl.store(c_ptrs, cast_to(acc, c_ptrs.dtype.element_ty), mask=mask)


@triton.autotune(
    configs=autotune_configs(GEMM_CONFIGS, GEMM_INTERPRETER_CONFIG),
    key=["M", "N", "K"],
    prune_configs_by={"early_config_prune": prune_for("a_ptr")},
)
@triton.heuristics({"EVEN_K": lambda args: args["K"] % args["BLOCK_K"] == 0})
@triton.jit
def gemm_kernel(
    a_ptr, b_ptr, c_ptr, bias_ptr, preact_ptr, rowsum_ptr,
    M, N, K,
    stride_ab, stride_am, stride_ak,
    stride_bb, stride_bk, stride_bn,
    stride_cb, stride_cm, stride_cn,
    stride_biasb, stride_biasn, stride_rsb,
    p, scale_hi, scale_lo, seed,
    HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr, STORE_PREACT: tl.constexpr,
    ROW_SUM: tl.constexpr, DROPOUT: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr, EVEN_K: tl.constexpr,
):
    ACC: tl.constexpr = tl.float64 if a_ptr.dtype.element_ty == tl.float64 else tl.float32
    batch = tl.program_id(1).to(tl.int64)
    pid_m, pid_n = grouped_tile(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    rows_a = (offs_m % M).to(tl.int64)
    cols_b = (offs_n % N).to(tl.int64)
    a_ptrs = a_ptr + batch * stride_ab + rows_a[:, None] * stride_am + offs_k[None, :].to(tl.int64) * stride_ak
    b_ptrs = b_ptr + batch * stride_bb + offs_k[:, None].to(tl.int64) * stride_bk + cols_b[None, :] * stride_bn

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    row_sum = tl.zeros((BLOCK_M,), dtype=ACC)
    for k in range(0, tl.cdiv(K, BLOCK_K)):
        if EVEN_K:
            a = tl.load(a_ptrs)
            b = tl.load(b_ptrs)
        else:
            k_left = K - k * BLOCK_K
            a = tl.load(a_ptrs, mask=offs_k[None, :] < k_left, other=0.0)
            b = tl.load(b_ptrs, mask=offs_k[:, None] < k_left, other=0.0)
        acc = accumulate(acc, a, b, INPUT_PRECISION)
        if ROW_SUM:
            if pid_n == 0:
                row_sum += tl.sum(a.to(ACC), axis=1)
        a_ptrs += BLOCK_K * stride_ak
        b_ptrs += BLOCK_K * stride_bk

    mask_m = offs_m < M
    mask_n = offs_n < N
    mask = mask_m[:, None] & mask_n[None, :]
    c_offs = batch * stride_cb + offs_m[:, None].to(tl.int64) * stride_cm + offs_n[None, :].to(tl.int64) * stride_cn
    bias_ptrs = bias_ptr + batch * stride_biasb + offs_n.to(tl.int64) * stride_biasn
    # dropout's element index is the output's contiguous one: the mask functional.dropout draws
    drop_offs = (batch * M + offs_m[:, None]) * N + offs_n[None, :]
    epilogue(acc, c_ptr + c_offs, preact_ptr + c_offs, bias_ptrs, mask, mask_n, HAS_BIAS, STORE_PREACT, ACTIVATION,
             DROPOUT, drop_offs, p, scale_hi, scale_lo, seed)
    if ROW_SUM:
        if pid_n == 0:
            rs_ptrs = rowsum_ptr + batch * stride_rsb + offs_m
            tl.store(rs_ptrs, cast_to(row_sum, rowsum_ptr.dtype.element_ty), mask=mask_m)
