"""Test set-up: the interpreter when there is no GPU, strict mode, poisoned outputs.

TRITON_INTERPRET must be set before tritonn (and so @triton.jit) is imported:
the decorator picks interpreter or compiler when it runs.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"
os.environ["TRITONN_STRICT"] = "1"
os.environ["TRITONN_POISON"] = "1"
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

import pytest  # noqa: E402

import tritonn  # noqa: E402,F401  (imported here, after the switches above)


@pytest.fixture
def device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
