"""Modules: subclasses of the torch.nn classes they replace."""

from .linear import Linear

__all__ = ["Linear"]
