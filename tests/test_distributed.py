"""tritonn layers train under DistributedDataParallel and FSDP2 (``fully_shard``).

Two processes on the CPU (gloo, kernels in Triton's interpreter, strict: a silent torch
fallback raises) train a small model for a few SGD steps, each rank on its half of every
global batch; the parameters they end with must equal those of one process trained on
the full batches from the same initial weights. The training code runs in
``distributed_worker.py``, started as a fresh interpreter per process with torchrun's
environment variables (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT) and tritonn's
switches set before it imports tritonn. The single-process reference runs in a third
process, next to the two ranks, so it is computed under exactly the same switches
whatever the pytest process itself was set up for (on a CUDA machine the children still
run on the CPU: gloo, interpreter, CUDA hidden).

Models (``distributed_worker.MODELS``), fp32, dropout 0:
* ``seq``: TransformerEncoderLayer (MultiheadAttention, Linear, LayerNorm) -> LSTM ->
  Linear. Nothing in it couples the samples of a batch, so data parallelism must give
  the full-batch result.
* ``cnn``: Conv2d -> BatchNorm2d -> ReLU -> MaxPool2d -> Linear. BatchNorm in training
  mode normalizes each rank's half with that half's statistics (tritonn has no
  SyncBatchNorm, and neither DDP nor FSDP makes BN's statistics global), so a full-batch
  forward is *not* what data parallelism computes, with torch's layers as with
  tritonn's. The reference for this model is therefore the same single process, same
  full batches, with each step's loss taken as the mean of the two halves' losses, each
  half forwarded on its own: mathematically what two ranks compute. It keeps BatchNorm
  in training mode (its Triton batch statistics and backward are what is exercised),
  and the test also checks that the plain full-batch run differs, so the tolerance is
  tight enough to see which statistics were used.

Tolerance: rtol 1e-5, atol 1e-6 (fp32). The ranks average two half-batch gradients where
the reference sums the whole batch in one reduction, so the results differ by rounding
only: at most 3e-8 absolute seen for ``seq`` (0 for ``cnn``), while training moves every
parameter by 3e-3 to 0.7 (checked to exceed 1e-4) and full-batch BN statistics move the
``cnn`` weights by 0.1. Perturbing one rank's learning rate by 1e-4 (relative) fails the test.
Ranks must end bit-identical to each other (they apply the same all-reduced gradients).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("distributed_worker.py")
ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 150
RTOL, ATOL = 1e-5, 1e-6

_references: dict[str, dict] = {}

pytestmark = pytest.mark.skipif(
    not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
    reason="this torch build has no torch.distributed with the gloo backend",
)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        TRITON_INTERPRET="1", TRITONN_STRICT="1", TRITONN_POISON="1", CUDA_VISIBLE_DEVICES="",
        OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        **extra,
    )
    if sys.platform.startswith("linux"):
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # gloo on loopback, whatever the host name resolves to
    return env


def _launch(jobs: list[tuple[list[str], dict[str, str]]], logdir: Path) -> list[tuple[int, str]]:
    """Start every job at once and wait for all; (returncode, output) per job. When one
    fails or time runs out the others are killed rather than left waiting on a collective."""
    logs = [logdir / ("-".join(args[:2]) + f"-{i}.log") for i, (args, _) in enumerate(jobs)]
    procs = []
    for (args, env), log in zip(jobs, logs):
        with open(log, "w") as f:
            procs.append(subprocess.Popen([sys.executable, str(WORKER), *args], env=env, cwd=ROOT,
                                          stdout=f, stderr=subprocess.STDOUT))
    deadline = time.monotonic() + TIMEOUT_S
    timed_out = False
    try:
        while any(p.poll() is None for p in procs) and not any(p.poll() not in (None, 0) for p in procs):
            timed_out = time.monotonic() > deadline
            if timed_out:
                break
            time.sleep(0.1)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
    if timed_out:
        pytest.fail(f"distributed workers timed out after {TIMEOUT_S} s:\n"
                    + "\n----\n".join(log.read_text()[-3000:] for log in logs))
    return [(p.returncode, log.read_text()) for p, log in zip(procs, logs)]


def _train(mode: str, model: str, tmp_path: Path) -> tuple[dict, dict, dict]:
    """Runs both ranks (and, once per model, the single-process reference alongside);
    returns (rank 0 state, rank 1 state, reference states)."""
    outs = [tmp_path / f"{mode}-{model}-rank{r}.pt" for r in range(2)]
    ref_out = tmp_path / f"single-{model}.pt"
    for attempt in range(3):
        port = str(_free_port())
        jobs = [([mode, model, str(out)], _env(RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE="2",
                                               MASTER_ADDR="127.0.0.1", MASTER_PORT=port))
                for r, out in enumerate(outs)]
        if model not in _references:
            jobs.append((["single", model, str(ref_out)], _env()))
        results = _launch(jobs, tmp_path)
        failed = [(i, out) for i, (rc, out) in enumerate(results) if rc != 0]
        if not failed:
            break
        # Another process may have taken the port between _free_port and the store's bind: retry then only.
        if attempt < 2 and any("address already in use" in out.lower() for _, out in failed):
            continue
        first = [(i, out) for i, out in failed if results[i][0] > 0] or failed  # < 0: killed by _launch
        pytest.fail("\n\n".join(f"worker {jobs[i][0][:2]} exited with {results[i][0]}:\n{out[-6000:]}"
                                  for i, out in first))
    if model not in _references:
        _references[model] = torch.load(ref_out)
    return torch.load(outs[0]), torch.load(outs[1]), _references[model]


def _assert_ranks_identical(rank0: dict, rank1: dict) -> None:
    for k, p in rank0["params"].items():
        assert torch.equal(p, rank1["params"][k]), f"{k}: the two ranks' parameters differ"


def _assert_close(got: dict, want: dict, what: str) -> None:
    assert got.keys() == want.keys()
    for k, w in want.items():
        torch.testing.assert_close(got[k], w, rtol=RTOL, atol=ATOL, msg=lambda m, k=k: f"{what} {k}: {m}")


def _assert_trained(final: dict, init: dict) -> None:
    """Every parameter moved well beyond the tolerance: the comparison is not between untouched weights."""
    for k, p in final["params"].items():
        assert (p - init["params"][k]).abs().max() > 100 * ATOL, f"{k} did not change in training"


def _assert_sharded(state: dict, mode: str) -> None:
    if mode == "fsdp":  # every parameter was a DTensor shard, gathered for the comparison
        assert sorted(state["sharded"]) == sorted(state["params"]), "fully_shard left parameters unsharded"
    else:
        assert state["sharded"] == []


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_transformer_lstm_equals_full_batch(mode, tmp_path):
    """TransformerEncoderLayer + LSTM + Linear: two ranks on half batches end where one
    process on the full batches does (DDP; FSDP2 with every layer and the root sharded)."""
    rank0, rank1, ref = _train(mode, "seq", tmp_path)
    _assert_sharded(rank0, mode)
    _assert_trained(ref["full"], ref["init"])
    _assert_ranks_identical(rank0, rank1)
    _assert_close(rank0["params"], ref["full"]["params"], f"{mode} vs single process:")


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_conv_batchnorm_pool_linear_per_rank_statistics(mode, tmp_path):
    """Conv2d + BatchNorm2d (training mode) + MaxPool2d + Linear: two ranks end where one
    process does that forwards each half of the full batch on its own (the BatchNorm
    statistics each rank sees; see the module docstring). Rank 0's running statistics
    and num_batches_tracked equal the reference's, updated from the first halves (DDP
    broadcasts rank 0's buffers before each forward; FSDP leaves each rank its own)."""
    rank0, rank1, ref = _train(mode, "cnn", tmp_path)
    _assert_sharded(rank0, mode)
    _assert_trained(ref["halves"], ref["init"])
    _assert_ranks_identical(rank0, rank1)
    _assert_close(rank0["params"], ref["halves"]["params"], f"{mode} vs single process (per-half BN statistics):")
    _assert_close(rank0["buffers"], ref["halves"]["buffers"], f"{mode} rank 0 buffers vs single process:")
    # The control: full-batch statistics give measurably different weights, so the comparison above can tell.
    with pytest.raises(AssertionError):
        _assert_close(rank0["params"], ref["full"]["params"], "")
