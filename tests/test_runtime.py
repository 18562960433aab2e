"""Where a call runs."""

import torch

from tritonn import runtime


def test_cpu_tensors_run_triton_under_the_interpreter_and_cuda_always():
    cpu = torch.zeros(1)
    assert runtime.runs_on_triton(cpu) == runtime.INTERPRETING
    assert runtime.runs_on_triton(cpu, None)
    assert not runtime.runs_on_triton(torch.zeros(1, device="meta"))
    if torch.cuda.is_available():
        assert runtime.runs_on_triton(torch.zeros(1, device="cuda"))
        assert not runtime.runs_on_triton(torch.zeros(1, device="cuda"), cpu)


def test_strict_is_read_at_call_time(monkeypatch):
    monkeypatch.setenv("TRITONN_STRICT", "0")
    assert not runtime.strict()
    monkeypatch.setenv("TRITONN_STRICT", "1")
    assert runtime.strict()


def test_autotuning_offers_one_config_under_the_interpreter():
    configs = ["a", "b", "c"]
    picked = runtime.autotune_configs(configs, "interp")
    assert picked == (["interp"] if runtime.INTERPRETING else configs if runtime.AUTOTUNE else configs[:1])


def test_autocast_casts_like_torch():
    x, d = torch.randn(2, 3), torch.randn(3, dtype=torch.float64)
    assert runtime.autocast(x, None)[0] is x
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cx, none, cd = runtime.autocast(x, None, d)
    assert cx.dtype == torch.bfloat16 and none is None and cd.dtype == torch.float64


def test_tf32_follows_torch():
    before = torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = True
        assert runtime.tf32_enabled()
        torch.backends.cuda.matmul.allow_tf32 = False
        assert not runtime.tf32_enabled()
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before
