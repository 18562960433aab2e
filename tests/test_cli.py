"""python -m tritonn info / check."""

import os
import subprocess
import sys

import torch

import tritonn
from tritonn import __main__ as cli
from tritonn import check


def test_info_names_versions_and_the_path_a_call_takes(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    for word in (tritonn.__version__, torch.__version__, "interpreter", "runs"):
        assert word in out
    if not torch.cuda.is_available():
        assert "Triton interpreter" in out


def test_check_passes_on_every_layer(capsys):
    assert cli.main(["check"]) == 0
    out = capsys.readouterr().out
    assert "Linear" in out and "FAIL" not in out and " 0 failed" in out


def test_check_fails_loudly_on_a_wrong_layer(monkeypatch, capsys):
    class Broken(tritonn.Linear):
        def forward(self, x):
            return super().forward(x) * 1.01

    def broken(device, small):
        return check._module_case(torch.nn.Linear(8, 4), Broken(8, 4), (5, 8), {"out0": 8})

    monkeypatch.setattr(check, "CASES", [check.Case("Broken", broken, (torch.float32,))])
    assert cli.main(["check"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "1 failed" in out


def test_command_line_turns_the_interpreter_on_by_itself():
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "TRITONN_STRICT")}
    proc = subprocess.run([sys.executable, "-m", "tritonn", "check"], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "passed, 0 failed" in proc.stdout


def test_bench_runs_the_benchmarks_and_renders_a_table(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("TRITONN_POISON",)}
    proc = subprocess.run([sys.executable, "-m", "tritonn", "bench", "--out", str(tmp_path),
                           "-k", "linear and fp32 and forward and not backward"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = (tmp_path / "linear.md").read_text()
    assert "| linear |" in table and "tritonn ms" in table
    assert (tmp_path / "bench.json").stat().st_size > 0
