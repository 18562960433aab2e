"""How tritonn is verified against torch: the float64 reference comparison.

Used by the test suite and by ``python -m tritonn check``. ``compare`` is how every
layer is verified. It runs a function three times on the
same values: tritonn in the dtype under test, torch in that dtype, and torch in
float64 on the CPU (the reference). It backpropagates the same random output
gradient through all three and checks every output and every leaf gradient:

    |tritonn - reference| <= 2 * |torch - reference| + eps(dtype) * sqrt(n) * max|reference|

that is, tritonn's error against float64 is within twice torch's own error in the
same dtype, plus a floor of a few rounding units grown with the reduction length
``n`` that produced the value (for outputs torch gets exactly right by luck).
"""

from __future__ import annotations

import math

import torch

EPS = {
    torch.float16: 2.0**-10,
    torch.bfloat16: 2.0**-7,
    torch.float32: 2.0**-23,
    torch.float64: 2.0**-52,
}


def _flatten(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _flatten(o)]
    return []


def _run(fn, leaves, dtype, device, grads_of_outputs):
    copies = {
        name: (v.detach().to(device=device, dtype=dtype if v.is_floating_point() else v.dtype)
               .requires_grad_(v.requires_grad))
        for name, v in leaves.items()
    }
    outs = _flatten(fn(**copies))
    outs_grad = [o for o in outs if o.requires_grad]
    if outs_grad:
        grads = [g.to(device=o.device, dtype=o.dtype) for o, g in zip(outs_grad, grads_of_outputs(outs_grad))]
        torch.autograd.backward(outs_grad, grads)
    grads_in = {name: c.grad for name, c in copies.items() if c.requires_grad}
    return outs, grads_in


def assert_close_to_reference(name, ours, theirs, reference, dtype, reduction=1):
    """The comparison rule above, for one tensor."""
    assert ours is not None, f"{name}: tritonn produced no value (torch did)"
    assert ours.shape == reference.shape, f"{name}: shape {tuple(ours.shape)}, expected {tuple(reference.shape)}"
    assert ours.dtype == theirs.dtype, f"{name}: dtype {ours.dtype}, torch gives {theirs.dtype}"
    if reference.numel() == 0:
        return 0.0, 0.0
    ref = reference.double().cpu()
    ours64 = ours.detach().double().cpu()
    assert torch.isfinite(ours64).all() == torch.isfinite(ref).all(), f"{name}: non-finite values (unwritten?)"
    err_ours = (ours64 - ref).abs().max().item()
    err_torch = (theirs.detach().double().cpu() - ref).abs().max().item()
    scale = ref.abs().max().item()
    bound = 2 * err_torch + EPS[dtype] * math.sqrt(max(reduction, 1)) * scale
    assert err_ours <= bound, (
        f"{name}: max error {err_ours:.3e} vs float64, bound {bound:.3e} "
        f"(torch's own error {err_torch:.3e}, dtype {dtype}, reduction {reduction})"
    )
    return err_ours, bound


def compare(ours, theirs, leaves: dict, dtype: torch.dtype, device, reductions: dict | None = None) -> dict:
    """Check ``ours(**leaves)`` against ``theirs(**leaves)``: outputs and the gradients of
    every leaf with ``requires_grad``. ``leaves`` hold float64 CPU master values;
    ``reductions`` maps "out0", "out1", ... and leaf names to reduction lengths.
    Raises AssertionError on the first value out of bounds; returns
    ``{name: (error, bound)}`` for every value compared."""
    reductions = reductions or {}
    cache = {}

    def grads_of_outputs(outs):
        if "g" not in cache:
            cache["g"] = [torch.randn(o.shape, dtype=torch.float64) for o in outs]
        return cache["g"]

    ref_out, ref_grad = _run(theirs, leaves, torch.float64, "cpu", grads_of_outputs)
    torch_out, torch_grad = _run(theirs, leaves, dtype, device, grads_of_outputs)
    our_out, our_grad = _run(ours, leaves, dtype, device, grads_of_outputs)
    assert len(our_out) == len(ref_out), f"{len(our_out)} outputs, torch gives {len(ref_out)}"
    errors = {}
    for i, (o, t, r) in enumerate(zip(our_out, torch_out, ref_out)):
        errors[f"out{i}"] = assert_close_to_reference(f"out{i}", o, t, r, dtype, reductions.get(f"out{i}", 1))
    for name in ref_grad:
        errors[f"grad {name}"] = assert_close_to_reference(
            f"grad {name}", our_grad[name], torch_grad[name], ref_grad[name], dtype, reductions.get(name, 1))
    return errors
