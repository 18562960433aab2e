"""LSTM: a multi-layer, optionally bidirectional and projected LSTM on Triton kernels.

Per layer:
    G   = x W_ih^T + b_ih for every time step and both directions: one GEMM
          (weights of the directions stacked), float32 output (float64 for float64)
    the recurrence, one launch per direction (kernels/rnn.py): one program per
          block of batch rows walks the time loop, fused recurrent matmul, gates,
          cell update and projection; G is overwritten with the activated gates
    dropout between layers (training only): a Philox mask from a seed drawn from
          torch's generator, regenerated in backward
Backward, per layer from the last: the reverse time loop (kernels/rnn.py) writes
the gate gradients DG of every step; then GEMMs over all time steps:
    dW_ih = DG^T x (+ db from its ROW_SUM),  dW_hh = DG^T HP,  dW_hr = DR^T HS,
    dx = DG W_ih  (both directions in one GEMM, K = D * 4H).
Rows are (time, batch) pairs in the input's own layout (time-major, batch-first or
packed), so no transposing copy is made; see kernels/rnn.py for the addressing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton

from .. import runtime
from .compiled import apply, compilable, static_type
from ..kernels.rnn import lstm_backward_kernel, lstm_forward_kernel
from .autograd import first_order
from .attention import new_seed
from .dropout import apply_dropout_mask
from .gemm import _input_precision, column_sum, gemm

GPU_BLOCKS = {"BLOCK_B": 16, "BLOCK_H": 64, "BLOCK_K": 64}
INTERPRETER_BLOCKS = {"BLOCK_B": 16, "BLOCK_H": 32, "BLOCK_K": 32}
NUM_WARPS = 4
_FLOATING = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _blocks():
    return INTERPRETER_BLOCKS if runtime.INTERPRETING else GPU_BLOCKS


@static_type
@dataclass
class LSTMSpec:
    """Everything about a call but the tensors."""

    num_layers: int
    directions: int
    hidden: int
    proj: int  # 0: none
    has_bias: bool
    dropout: float
    train: bool
    N: int  # batch (the largest batch of a packed sequence)
    L: int  # time steps
    ST: int  # row(t, b) = t * ST + b * SB (dense)
    SB: int
    packed: bool
    offsets: torch.Tensor | None = None  # packed: first row of each time step (device)
    batch_sizes: torch.Tensor | None = None  # packed: rows of each time step (device)
    perm: torch.Tensor | None = None  # packed, unsorted: original index of each sorted row
    seeds: tuple = ()

    @property
    def R(self) -> int:
        return self.proj if self.proj > 0 else self.hidden

    def per_layer(self) -> int:
        return 2 + 2 * self.has_bias + (self.proj > 0)


def _layer_params(params, spec: LSTMSpec, layer: int, d: int) -> dict:
    base = (layer * spec.directions + d) * spec.per_layer()
    p = params[base:base + spec.per_layer()]
    out = {"w_ih": p[0], "w_hh": p[1], "b_ih": None, "b_hh": None, "w_hr": None}
    i = 2
    if spec.has_bias:
        out["b_ih"], out["b_hh"] = p[2], p[3]
        i = 4
    if spec.proj > 0:
        out["w_hr"] = p[i]
    return out


def _index(spec: LSTMSpec, layer: int, d: int, name: str) -> int:
    base = (layer * spec.directions + d) * spec.per_layer()
    order = ["w_ih", "w_hh"] + (["b_ih", "b_hh"] if spec.has_bias else []) + (["w_hr"] if spec.proj > 0 else [])
    return base + order.index(name)


def _acc_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def _packing_args(spec: LSTMSpec, dummy: torch.Tensor):
    return (spec.perm if spec.perm is not None else dummy,
            spec.offsets if spec.packed else dummy,
            spec.batch_sizes if spec.packed else dummy)


def _forward(spec: LSTMSpec, x, h0, c0, params):
    """Run every layer; returns y, h_n, c_n and what backward needs per layer."""
    dtype, device = x.dtype, x.device
    acc = _acc_dtype(dtype)
    D, H, R = spec.directions, spec.hidden, spec.R
    rows = x.shape[0]
    hn = runtime.empty((spec.num_layers * D, spec.N, R), dtype=dtype, device=device)
    cn = runtime.empty((spec.num_layers * D, spec.N, H), dtype=dtype, device=device)
    precision = _input_precision(dtype, device)
    blocks = _blocks()
    grid = (triton.cdiv(spec.N, blocks["BLOCK_B"]),)
    saved = []
    inp = x
    for layer in range(spec.num_layers):
        ps = [_layer_params(params, spec, layer, d) for d in range(D)]
        w_ih = ps[0]["w_ih"] if D == 1 else torch.cat([p["w_ih"] for p in ps], 0)
        b_ih = None
        if spec.has_bias:
            b_ih = ps[0]["b_ih"] if D == 1 else torch.cat([p["b_ih"] for p in ps], 0)
        G, _, _ = gemm(inp, w_ih.t(), bias=b_ih, out_dtype=acc)
        y = runtime.empty((rows, D * R), dtype=dtype, device=device)
        C = runtime.empty((D, rows, H), dtype=acc, device=device)
        HP = runtime.empty((D, rows, R), dtype=dtype, device=device)
        HS = runtime.empty((D, rows, H), dtype=dtype, device=device) if spec.proj > 0 else None
        for d in range(D):
            p = ps[d]
            idx = layer * D + d
            whh = p["w_hh"].contiguous()
            whr = p["w_hr"].contiguous() if spec.proj > 0 else whh
            bhh = p["b_hh"].contiguous() if spec.has_bias else whh
            h0i, c0i, hni, cni = h0[idx], c0[idx], hn[idx], cn[idx]
            hs = HS[d] if HS is not None else HP[d]
            if spec.N > 0 and spec.L > 0:
                lstm_forward_kernel[grid](
                    G[:, d * 4 * H:], C[d], HP[d], hs, y[:, d * R:],
                    whh, bhh, whr,
                    h0i, c0i, hni, cni,
                    *_packing_args(spec, G),
                    spec.N, spec.L, H, R, spec.ST, spec.SB,
                    G.stride(0), C.stride(1), HP.stride(1), hs.stride(0), y.stride(0),
                    whh.stride(0), whr.stride(0),
                    h0i.stride(0), c0i.stride(0), hni.stride(0), cni.stride(0),
                    REVERSE=d == 1, PACKED=spec.packed, PERM=spec.perm is not None,
                    HAS_BIAS=spec.has_bias, PROJ=spec.proj > 0, INPUT_PRECISION=precision,
                    num_warps=NUM_WARPS, **blocks,
                )
        saved.append((inp, G, C, HP, HS))
        if layer + 1 < spec.num_layers and spec.train and spec.dropout > 0:
            inp = apply_dropout_mask(y, spec.dropout, spec.seeds[layer])
        else:
            inp = y
    return inp, hn, cn, saved


def _backward(spec: LSTMSpec, needs, x, h0, c0, params, saved, grad_y, grad_hn, grad_cn):
    dtype, device = x.dtype, x.device
    acc = _acc_dtype(dtype)
    D, H, R = spec.directions, spec.hidden, spec.R
    rows = x.shape[0]
    precision = _input_precision(dtype, device)
    blocks = _blocks()
    grid = (triton.cdiv(spec.N, blocks["BLOCK_B"]),)
    need_x, need_h0, need_c0 = needs[0], needs[1], needs[2]
    need_p = needs[3:]
    grads = [None] * len(params)
    dh0 = runtime.empty(h0.shape, dtype=dtype, device=device)
    dc0 = runtime.empty(c0.shape, dtype=dtype, device=device)
    dy = grad_y
    dx = None
    for layer in reversed(range(spec.num_layers)):
        inp, G, C, HP, HS = saved[layer]
        ps = [_layer_params(params, spec, layer, d) for d in range(D)]
        DG = runtime.empty((rows, D * 4 * H), dtype=dtype, device=device)
        for d in range(D):
            p = ps[d]
            idx = layer * D + d
            whh = p["w_hh"].contiguous()
            whr = p["w_hr"].contiguous() if spec.proj > 0 else whh
            DR = runtime.empty((rows, R), dtype=dtype, device=device) if spec.proj > 0 else None
            dr = DR if DR is not None else DG
            dhs = runtime.empty((spec.N, R), dtype=acc, device=device)
            dcs = runtime.empty((spec.N, H), dtype=acc, device=device)
            ghn, gcn, gh0, gc0, c0i = grad_hn[idx], grad_cn[idx], dh0[idx], dc0[idx], c0[idx]
            if spec.N > 0 and spec.L > 0:
                lstm_backward_kernel[grid](
                    G[:, d * 4 * H:], C[d], DG[:, d * 4 * H:], dy[:, d * R:], dr,
                    whh, whr,
                    c0i, ghn, gcn, gh0, gc0, dhs, dcs,
                    *_packing_args(spec, G),
                    spec.N, spec.L, H, R, spec.ST, spec.SB,
                    G.stride(0), C.stride(1), DG.stride(0), dy.stride(0), dr.stride(0),
                    whh.stride(0), whr.stride(0),
                    c0i.stride(0), ghn.stride(0), gcn.stride(0), gh0.stride(0), gc0.stride(0),
                    dhs.stride(0), dcs.stride(0),
                    REVERSE=d == 1, PACKED=spec.packed, PERM=spec.perm is not None,
                    PROJ=spec.proj > 0, INPUT_PRECISION=precision,
                    num_warps=NUM_WARPS, **blocks,
                )
            else:
                gh0.zero_()
                gc0.zero_()
            # weight gradients over all time steps
            if need_p[_index(spec, layer, d, "w_hh")]:
                grads[_index(spec, layer, d, "w_hh")] = gemm(DG[:, d * 4 * H:(d + 1) * 4 * H].t(), HP[d])[0]
            if spec.proj > 0 and need_p[_index(spec, layer, d, "w_hr")]:
                grads[_index(spec, layer, d, "w_hr")] = gemm(DR.t(), HS[d])[0]
        need_wih = any(need_p[_index(spec, layer, d, "w_ih")] for d in range(D))
        need_b = spec.has_bias and any(
            need_p[_index(spec, layer, d, n)] for d in range(D) for n in ("b_ih", "b_hh"))
        db = None
        if need_wih:
            dw, _, db = gemm(DG.t(), inp, row_sum=need_b and rows > 0)
            for d in range(D):
                grads[_index(spec, layer, d, "w_ih")] = dw[d * 4 * H:(d + 1) * 4 * H]
        if need_b and db is None:
            db = column_sum(DG, dtype)
        if need_b:
            for d in range(D):
                part = db[d * 4 * H:(d + 1) * 4 * H]
                grads[_index(spec, layer, d, "b_ih")] = part
                grads[_index(spec, layer, d, "b_hh")] = part.clone()
        if layer > 0 or need_x:
            w_ih = ps[0]["w_ih"] if D == 1 else torch.cat([p["w_ih"] for p in ps], 0)
            dx, _, _ = gemm(DG, w_ih)
            if layer > 0:
                if spec.train and spec.dropout > 0:
                    dx = apply_dropout_mask(dx, spec.dropout, spec.seeds[layer - 1])
                dy = dx
    return (dx if need_x else None, dh0 if need_h0 else None, dc0 if need_c0 else None, grads)


@compilable("lstm")
class LSTMFunction(torch.autograd.Function):
    """x (rows, I), h0 (layers*D, N, R), c0 (layers*D, N, H), params -> y (rows, D*R), h_n, c_n."""

    @staticmethod
    def forward(ctx, spec, needs_grad, x, h0, c0, *params):
        y, hn, cn, saved = _forward(spec, x, h0, c0, params)
        ctx.spec = spec
        ctx.num_params = len(params)
        if needs_grad:
            flat = [x, h0, c0, *params]
            for s in saved:
                flat += list(s)
            ctx.save_for_backward(*flat)
        return y, hn, cn

    @staticmethod
    @first_order("lstm")
    def backward(ctx, grad_y, grad_hn, grad_cn):
        spec = ctx.spec
        flat = ctx.saved_tensors
        x, h0, c0 = flat[0], flat[1], flat[2]
        params = flat[3:3 + ctx.num_params]
        rest = flat[3 + ctx.num_params:]
        saved = [tuple(rest[5 * i:5 * i + 5]) for i in range(spec.num_layers)]
        rows = x.shape[0]
        D, R = spec.directions, spec.R
        if grad_y is None:
            grad_y = torch.zeros((rows, D * R), dtype=x.dtype, device=x.device)
        if grad_hn is None:
            grad_hn = torch.zeros(h0.shape, dtype=x.dtype, device=x.device)
        if grad_cn is None:
            grad_cn = torch.zeros(c0.shape, dtype=x.dtype, device=x.device)
        grad_y = grad_y.contiguous()
        grad_hn = grad_hn.contiguous()
        grad_cn = grad_cn.contiguous()
        needs = ctx.needs_input_grad[2:]
        dx, dh0, dc0, grads = _backward(spec, needs, x, h0, c0, params, saved, grad_y, grad_hn, grad_cn)
        return (None, None, dx, dh0, dc0, *grads)


def _dtype_name(dtype):
    return str(dtype).replace("torch.", "")


def lstm(input, hx, params, has_biases: bool, num_layers: int, dropout: float, train: bool,
         bidirectional: bool, batch_first: bool, *, batch_sizes=None, sorted_indices=None):
    """An LSTM over ``input`` with torch's flat parameter list (per layer and direction:
    w_ih, w_hh, [b_ih, b_hh], [w_hr]), like ``torch._VF.lstm``; returns
    ``(output, h_n, c_n)``.

    input: (L, N, I), (N, L, I) with ``batch_first``, or the data (T, I) of a packed
    sequence with ``batch_sizes`` (its CPU int64 tensor; then ``sorted_indices``, if not
    None, maps sorted rows to the original batch order of ``hx`` and of h_n/c_n).
    hx: ``(h_0, c_0)`` of shapes (num_layers * D, N, R) and (num_layers * D, N, H), or
    None for zeros. Follows ``torch.autocast`` like nn.LSTM.
    """
    params = list(params)
    D = 2 if bidirectional else 1
    per = 2 + 2 * bool(has_biases)
    if len(params) not in (num_layers * D * per, num_layers * D * (per + 1)):
        raise RuntimeError(
            f"lstm: expected {num_layers * D * per} or {num_layers * D * (per + 1)} parameters "
            f"({num_layers} layers x {D} directions), got {len(params)}")
    proj_on = len(params) == num_layers * D * (per + 1)
    H = params[1].shape[1] if not proj_on else params[per].shape[1]
    R = params[per].shape[0] if proj_on else H
    packed = batch_sizes is not None
    h0, c0 = hx if hx is not None else (None, None)
    if input.dim() != (2 if packed else 3):
        raise RuntimeError(f"input must have {2 if packed else 3} dimensions, got {input.dim()}")
    if input.shape[-1] != params[0].shape[1]:
        raise RuntimeError(
            f"input.size(-1) must be equal to input_size. Expected {params[0].shape[1]}, got {input.shape[-1]}")
    if packed:
        N = int(batch_sizes[0]) if batch_sizes.numel() > 0 else 0
        steps = batch_sizes.numel()
    else:
        N = input.shape[0] if batch_first else input.shape[1]
        steps = input.shape[1] if batch_first else input.shape[0]
    if steps == 0:
        raise RuntimeError("Expected sequence length to be larger than 0 in RNN, got an input of "
                           f"{'no time steps' if packed else f'shape {list(input.shape)}'}")
    for name, t, width in (("hidden[0]", h0, R), ("hidden[1]", c0, H)):
        expected = (num_layers * D, N, width)
        if t is not None and tuple(t.shape) != expected:
            raise RuntimeError(f"Expected {name} size {expected}, got {list(t.shape)}")
    if not runtime.runs_on_triton(input, h0, c0, *params):
        runtime.fallback("lstm", input, h0, c0, *params)
        if hx is None:
            hx = _zeros_state(input, num_layers * D, N, H, R)
        if packed:
            if sorted_indices is not None:
                hx = tuple(h.index_select(1, sorted_indices) for h in hx)
            out = torch._VF.lstm(input, batch_sizes, hx, params, has_biases, num_layers, dropout, train,
                                 bidirectional)
            if sorted_indices is not None:
                inverse = torch.empty_like(sorted_indices)
                inverse[sorted_indices] = torch.arange(sorted_indices.numel(), device=sorted_indices.device)
                out = (out[0], out[1].index_select(1, inverse), out[2].index_select(1, inverse))
            return out
        return torch._VF.lstm(input, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first)
    input, h0, c0, *params = runtime.autocast(input, h0, c0, *params)
    if input.dtype not in _FLOATING:
        raise NotImplementedError(
            f"tritonn lstm: expected a floating dtype (float16, bfloat16, float32, float64), got {input.dtype}")
    for name, t in (("h_0", h0), ("c_0", c0), *((f"parameter {i}", p) for i, p in enumerate(params))):
        if t is not None and t.dtype != input.dtype:
            raise RuntimeError(
                f"lstm: expected {name} to have dtype {_dtype_name(input.dtype)} like the input, "
                f"got {_dtype_name(t.dtype)}")
    if h0 is None:
        h0, c0 = _zeros_state(input, num_layers * D, N, H, R)
    device = input.device
    if packed:
        sizes = [int(b) for b in batch_sizes.tolist()]
        starts = [0]
        for b in sizes[:-1]:
            starts.append(starts[-1] + b)
        spec = LSTMSpec(num_layers, D, H, R if proj_on else 0, bool(has_biases), float(dropout), bool(train),
                        N, len(sizes), 0, 0, True,
                        offsets=torch.tensor(starts, dtype=torch.int64, device=device),
                        batch_sizes=torch.tensor(sizes, dtype=torch.int32, device=device),
                        perm=sorted_indices.to(device) if sorted_indices is not None else None)
        x = input.contiguous()
    else:
        L = input.shape[1] if batch_first else input.shape[0]
        st, sb = (1, L) if batch_first else (N, 1)
        spec = LSTMSpec(num_layers, D, H, R if proj_on else 0, bool(has_biases), float(dropout), bool(train),
                        N, L, st, sb, False)
        x = input.contiguous().view(-1, input.shape[-1])
    if spec.train and spec.dropout > 0 and num_layers > 1:
        spec.seeds = tuple(new_seed(spec.dropout) for _ in range(num_layers - 1))
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (input, h0, c0, *params))
    y, hn, cn = apply("lstm", spec, needs_grad, x, h0.contiguous(), c0.contiguous(), *params)
    if not packed:
        y = y.view(*input.shape[:2], D * R)
    return y, hn, cn


def _zeros_state(input, layers_dirs, N, H, R):
    h0 = torch.zeros((layers_dirs, N, R), dtype=input.dtype, device=input.device)
    c0 = torch.zeros((layers_dirs, N, H), dtype=input.dtype, device=input.device)
    return h0, c0
