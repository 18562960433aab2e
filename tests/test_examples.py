"""examples/: each script trains a torch model and its tritonn conversion side by side; the losses must agree."""

import importlib.util
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import tritonn

ROOT = Path(__file__).resolve().parents[1]
# The layers each example must have converted (the script prints convert's report).
EXAMPLES = {
    "cnn.py": ("BatchNorm2d", "Conv2d", "Linear", "MaxPool2d"),
    "char_lstm.py": ("LSTM", "Linear"),
    "transformer.py": ("LayerNorm", "Linear", "MultiheadAttention", "TransformerDecoderLayer",
                       "TransformerEncoderLayer"),
}
ROW = re.compile(r"^\s*(\d+|eval)\s+(\S+)\s+(\S+)\s+\S+$", re.M)
VERDICT = re.compile(r"^max \|loss diff\| = (\S+) \(relative (\S+), tolerance (\S+)\): (\w+)$", re.M)


def load(script, monkeypatch):
    """The script as a module, as `python examples/<script>` would see it (examples/ on the path)."""
    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    spec = importlib.util.spec_from_file_location(f"example_{Path(script).stem}", ROOT / "examples" / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("script", EXAMPLES)
def test_example_trains_tritonn_like_torch(script):
    # The test's switches (interpreter, strict: a torch fallback raises, poisoned outputs) reach the script.
    env = dict(os.environ, TRITONN_STRICT="1")
    if not torch.cuda.is_available():
        env["TRITON_INTERPRET"] = "1"
    proc = subprocess.run([sys.executable, f"examples/{script}", "--size", "small"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]

    replaced = re.search(r"^tritonn\.convert replaced \d+ layers \((.*?)\);", out, re.M)
    assert replaced and set(EXAMPLES[script]) <= set(replaced.group(1).split(", ")), out

    rows = [(step, float(a), float(b)) for step, a, b in ROW.findall(out)]
    train = [(a, b) for step, a, b in rows if step != "eval"]
    assert len(train) >= 3 and rows[-1][0] == "eval", out
    for _, a, b in rows:
        # Printed to 6 decimals: 1e-4 relative plus the rounding of both.
        assert math.isfinite(a) and abs(a - b) <= 1e-4 * abs(a) + 2e-6, out
    assert min(a for a, _ in train[1:]) < train[0][0], f"the loss never fell:\n{out}"

    verdict = VERDICT.search(out)
    assert verdict and verdict.group(4) == "OK" and float(verdict.group(2)) <= 1e-4, out


def test_example_fails_when_a_tritonn_layer_is_wrong(monkeypatch, capsys):
    """The comparison is not vacuous: a tritonn Linear off by 1% makes the script exit 1."""
    example = load("char_lstm.py", monkeypatch)
    forward = tritonn.Linear.forward
    monkeypatch.setattr(tritonn.Linear, "forward", lambda self, x: forward(self, x) * 1.01)
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        assert example.main(["--size", "small", "--steps", "1"]) == 1
    finally:  # on a GPU the script sets the TF32 switches for its comparison
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    assert "DIVERGED" in capsys.readouterr().out
