"""What every tritonn autograd Function shares."""

from __future__ import annotations

import functools

import torch


def first_order(op: str, linear=False):
    """Decorate a Function's backward: run it without building a graph, and refuse
    ``create_graph=True`` (backward runs with grad mode on only then) whenever the
    gradient it returns would have a second derivative it cannot give.

    The kernels compute first derivatives only. ``linear`` (a bool, or a function of
    ctx) says the backward is linear in the incoming gradients with coefficients that
    are inputs saved as they are (max pooling, dropout, a GEMM without activation): a
    second derivative is then non-zero only through a saved tensor or an incoming
    gradient that requires grad, and without one the plain result is exact, as torch's.
    Any other backward (a fused activation's saved pre-activation, a norm's statistics:
    tensors that depend on the inputs but carry no graph) refuses outright; so does
    ``once_differentiable``'s case, gradients silently cut off from the saved weights.
    """

    def decorate(backward):
        @functools.wraps(backward)
        def wrapper(ctx, *grads):
            if torch.is_grad_enabled() and (
                not (linear(ctx) if callable(linear) else linear)
                or any(t is not None and t.requires_grad for t in (*ctx.saved_tensors, *grads))
            ):
                raise RuntimeError(
                    f"tritonn.{op}: double backward is not supported: backward was called with "
                    "create_graph=True through a tritonn op, whose gradient kernels cannot be differentiated again"
                )
            with torch.no_grad():
                return backward(ctx, *grads)

        return wrapper

    return decorate


def keeps_preact(activation: str, needs_grad: bool) -> bool:
    """Whether a fused activation's backward needs the pre-activation saved: relu's
    derivative can be read off its output, and nothing is needed without grad."""
    return needs_grad and activation not in ("none", "relu")


def activation_input(activation: str, output, preact):
    """What the backward of a fused activation reads: the pre-activation, or relu's output."""
    return preact if preact is not None else (output if activation == "relu" else None)
