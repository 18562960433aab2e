"""One process of tests/test_distributed.py: trains a small tritonn model for a few SGD
steps, either as one rank of a two-process gloo group (DDP or FSDP2) or alone on the
full batch (the reference), and saves the final parameters and buffers.

Run as a script by the test, never imported by pytest::

    python tests/distributed_worker.py MODE MODEL OUT.pt

MODE is ``ddp``, ``fsdp`` or ``single``; MODEL is ``cnn`` or ``seq``. A distributed
rank reads RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT (torchrun's variables) from
its environment. The test sets TRITON_INTERPRET / TRITONN_STRICT / TRITONN_POISON in
that environment, so they are in place before tritonn is imported here; ``main``
checks that they took effect.
"""

from __future__ import annotations

import datetime
import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F

import tritonn

STEPS = 3
GLOBAL_BATCH = 4
LR = 0.1
MOMENTUM = 0.9


class Cnn(torch.nn.Sequential):
    """Conv2d -> BatchNorm2d -> ReLU -> MaxPool2d -> Linear, every layer with weights a tritonn one.
    The convolution has no bias: BatchNorm cancels it, so its gradient is zero up to rounding."""

    def __init__(self):
        super().__init__(
            tritonn.Conv2d(2, 4, 3, padding=1, bias=False),
            tritonn.BatchNorm2d(4),
            torch.nn.ReLU(),
            tritonn.MaxPool2d(2),
            torch.nn.Flatten(),
            tritonn.Linear(4 * 3 * 3, 3),
        )

    @staticmethod
    def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(100 + step)
        return torch.randn(GLOBAL_BATCH, 2, 6, 6, generator=g), torch.randn(GLOBAL_BATCH, 3, generator=g)

    def shard(self) -> list[torch.nn.Module]:
        return [self[0], self[5]]


class Seq(torch.nn.Module):
    """TransformerEncoderLayer (MultiheadAttention, Linear, LayerNorm) -> LSTM -> Linear, dropout 0."""

    def __init__(self):
        super().__init__()
        self.enc = tritonn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0, batch_first=True)
        self.lstm = tritonn.LSTM(8, 8, batch_first=True)
        self.head = tritonn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.lstm(self.enc(x))
        return self.head(h[:, -1])

    @staticmethod
    def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(200 + step)
        return torch.randn(GLOBAL_BATCH, 5, 8, generator=g), torch.randn(GLOBAL_BATCH, 3, generator=g)

    def shard(self) -> list[torch.nn.Module]:
        return [self.enc, self.lstm, self.head]


MODELS = {"cnn": Cnn, "seq": Seq}


def build(name: str) -> torch.nn.Module:
    """The same initial weights in every process."""
    torch.manual_seed(0)
    return MODELS[name]()


def train_single(name: str, halves: bool) -> torch.nn.Module:
    """The single-process reference on the full batch of each step.

    ``halves=False``: one forward over the whole batch (what DDP/FSDP equal when the
    model has no batch-coupled layer). ``halves=True``: what data parallelism without
    SyncBatchNorm computes when BatchNorm normalizes each rank's half with that half's
    own statistics: the loss is the mean of the two halves' losses, each half forwarded
    on its own. The running statistics are those rank 0 ends with (DDP broadcasts rank
    0's buffers before every forward): updated from the first half only.
    """
    model = build(name)
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    for step in range(STEPS):
        x, y = model.batch(step)
        opt.zero_grad()
        if halves:
            x0, x1 = x.chunk(2)
            y0, y1 = y.chunk(2)
            saved = {k: b.clone() for k, b in model.named_buffers()}
            loss1 = F.mse_loss(model(x1), y1)
            with torch.no_grad():
                for k, b in model.named_buffers():
                    b.copy_(saved[k])
            loss = (F.mse_loss(model(x0), y0) + loss1) / 2
        else:
            loss = F.mse_loss(model(x), y)
        loss.backward()
        opt.step()
    return model


def train_distributed(mode: str, name: str) -> dict:
    rank, world = dist.get_rank(), dist.get_world_size()
    model = build(name)
    if mode == "ddp":
        net = torch.nn.parallel.DistributedDataParallel(model)
    else:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        # torch 2.13's FSDP2 warns that tritonn's Linear / LayerNorm / TransformerEncoderLayer return
        # views (torch's Linear does too for 3-D input): only an in-place op on such an output would
        # matter, and there is none here.
        mesh = init_device_mesh("cpu", (world,))
        for sub in model.shard():
            fully_shard(sub, mesh=mesh)
        net = fully_shard(model, mesh=mesh)
    opt = torch.optim.SGD(net.parameters(), lr=LR, momentum=MOMENTUM)
    for step in range(STEPS):
        x, y = model.batch(step)
        x, y = x.chunk(world)[rank], y.chunk(world)[rank]
        opt.zero_grad()
        F.mse_loss(net(x), y).backward()
        opt.step()
    return snapshot(model)


def snapshot(model: torch.nn.Module) -> dict:
    """Parameters (FSDP2's DTensor shards gathered whole) and buffers, plus which parameters were DTensors."""
    params, sharded = {}, []
    for k, p in model.named_parameters():
        if hasattr(p, "full_tensor"):
            sharded.append(k)
            p = p.full_tensor()
        params[k] = p.detach().clone()
    buffers = {k: b.detach().clone() for k, b in model.named_buffers()}
    return {"params": params, "buffers": buffers, "sharded": sharded}


def main(argv: list[str]) -> None:
    mode, name, out = argv
    assert tritonn.runtime.INTERPRETING, "TRITON_INTERPRET=1 was not set before tritonn was imported"
    assert tritonn.runtime.strict(), "TRITONN_STRICT=1 is not set"
    torch.set_num_threads(1)
    if mode == "single":
        state = {"init": snapshot(build(name)), "full": snapshot(train_single(name, halves=False))}
        if name == "cnn":
            state["halves"] = snapshot(train_single(name, halves=True))
        torch.save(state, out)
        return
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
    try:
        state = train_distributed(mode, name)
        torch.save(state, out)
        dist.barrier()
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1:])
