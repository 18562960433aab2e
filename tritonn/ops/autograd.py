"""What every tritonn autograd Function shares."""

from __future__ import annotations

import functools

import torch


def first_order(op: str):
    """Decorate a Function's backward: run it without building a graph, and refuse
    ``create_graph=True`` when the result would have to be differentiated again.

    The kernels compute first derivatives only. ``once_differentiable`` would look
    at the incoming gradients alone and return gradients silently cut off from the
    saved weights, which a gradient penalty would then get wrong without a word.
    """

    def decorate(backward):
        @functools.wraps(backward)
        def wrapper(ctx, *grads):
            if torch.is_grad_enabled() and any(
                t is not None and t.requires_grad for t in (*ctx.saved_tensors, *grads)
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
