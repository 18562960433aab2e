"""Compile every kernel for sm_80 and sm_90 on the CPU (see tests/compile_tier.py)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def compile_results():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = "1"
    proc = subprocess.run([sys.executable, "-m", "tests.compile_tier"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return lines[0], lines[1:]


def test_every_kernel_has_a_compile_spec(compile_results):
    inventory, _ = compile_results
    missing = set(inventory["kernels"]) - set(inventory["covered"])
    assert not missing, f"kernels without a compile spec in tests/compile_tier.py: {sorted(missing)}"


def test_every_kernel_compiles_for_sm80_and_sm90(compile_results):
    _, results = compile_results
    assert results, "nothing was compiled"
    failures = [f"{r['label']}: {r['error']}" for r in results if not r["ok"]]
    assert not failures, "\n".join(failures[:20])
    assert {r["label"].split()[1] for r in results} == {"sm_80", "sm_90"}
