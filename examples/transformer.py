"""A small encoder-decoder Transformer learning to reverse sequences of tokens of varying length
(padding masks on both sides, a causal decoder mask), in plain torch and converted to tritonn,
side by side from the same weights.

    python examples/transformer.py                 # no GPU: Triton's interpreter, tiny sizes, a few steps
    python examples/transformer.py --json out.json # on a GPU: larger sizes, ms/step of both
"""

import argparse
import copy
import json
import os
import statistics
import sys
import time
import warnings

import torch

if not torch.cuda.is_available():
    # Before importing tritonn: @triton.jit picks interpreter or compiler when it decorates.
    os.environ["TRITON_INTERPRET"] = "1"
# A silent fallback to torch would make the comparison pass trivially: make it an error instead.
os.environ.setdefault("TRITONN_STRICT", "1")

import tritonn  # noqa: E402
from tritonn.convert import supported  # noqa: E402

SIZES = {  # the interpreter runs every program serially on the CPU: "small" is a toy
    "small": dict(batch=8, seq=10, vocab=12, d_model=32, heads=4, ff=64, layers=1, steps=5, lr=1e-2),
    "gpu": dict(batch=128, seq=64, vocab=64, d_model=512, heads=8, ff=2048, layers=3, steps=50, lr=5e-4),
}
PAD, BOS, EOS = 0, 1, 2  # the other token ids are the symbols to reverse


class Reverser(torch.nn.Module):
    """Token + learned position embeddings (stay torch: no tritonn twin) -> nn.Transformer -> Linear."""

    def __init__(self, vocab, seq, d_model, heads, ff, layers):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, d_model)
        self.pos = torch.nn.Embedding(seq + 1, d_model)
        # dropout=0: tritonn's Philox masks differ from torch's, so active dropout could only agree in distribution.
        self.transformer = torch.nn.Transformer(d_model, heads, layers, layers, ff, dropout=0.0, batch_first=True)
        self.head = torch.nn.Linear(d_model, vocab)

    def forward(self, src, tgt):
        def embed(ids):
            return self.embed(ids) + self.pos(torch.arange(ids.shape[1], device=ids.device))

        causal = torch.ones(tgt.shape[1], tgt.shape[1], dtype=torch.bool, device=tgt.device).triu(1)
        out = self.transformer(embed(src), embed(tgt), tgt_mask=causal, tgt_is_causal=True,
                               src_key_padding_mask=src == PAD, tgt_key_padding_mask=tgt == PAD,
                               memory_key_padding_mask=src == PAD)
        return self.head(out)


def reversals(batch, seq, vocab, gen):
    """Sources of random lengths padded to ``seq``; the decoder reads BOS + reversed source
    (teacher forcing) and predicts the reversed source + EOS."""
    lengths = torch.randint(seq // 2, seq + 1, (batch, 1), generator=gen)
    pos = torch.arange(seq + 1)
    symbols = torch.randint(EOS + 1, vocab, (batch, seq), generator=gen)
    src = torch.where(pos[:seq] < lengths, symbols, PAD)
    rev = symbols.gather(1, (lengths - 1 - pos[:seq]).clamp(min=0))  # rev[i] = src[len - 1 - i]
    rev = torch.where(pos[:seq] < lengths, rev, PAD)
    target = torch.cat([rev, torch.full((batch, 1), PAD)], 1).scatter(1, lengths, EOS)
    tgt_in = torch.cat([torch.full((batch, 1), BOS), rev], 1)
    return src, tgt_in, target


def main(argv=None):
    args, size, tol = parse(argv, SIZES)
    torch.manual_seed(0)
    ref = Reverser(size["vocab"], size["seq"], size["d_model"], size["heads"], size["ff"], size["layers"])
    ref = ref.to(args.device)
    models = {"torch": ref, "tritonn": convert(ref)}
    opts = {k: torch.optim.Adam(m.parameters(), lr=size["lr"]) for k, m in models.items()}
    gen = torch.Generator().manual_seed(1)
    batches = [reversals(size["batch"], size["seq"], size["vocab"], gen) for _ in range(args.steps)]

    def loss_of(model, batch):
        src, tgt_in, target = (t.to(args.device) for t in batch)
        return torch.nn.functional.cross_entropy(model(src, tgt_in).flatten(0, 1), target.flatten(),
                                                 ignore_index=PAD)

    losses, times = train(models, opts, batches, loss_of, args.device)
    held_out = reversals(size["batch"], size["seq"], size["vocab"], gen)
    # torch's eval under no_grad takes its fast path (nested tensors, with a prototype warning); tritonn never does.
    warnings.filterwarnings("ignore", message="The PyTorch API of nested tensors")
    with torch.no_grad():
        evals = {k: loss_of(m.eval(), held_out).item() for k, m in models.items()}
    print_row("eval", evals["torch"], evals["tritonn"])
    return finish(args, losses, times, tol, evals)


# ---- the comparison harness (the same in every example) --------------------------------------


def parse(argv, sizes):
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if cuda else "cpu",
                   help="default: cuda if available; cpu runs the kernels in the interpreter, which is only "
                        "turned on by itself without CUDA (else set TRITON_INTERPRET=1)")
    p.add_argument("--size", choices=sizes, help="default: gpu on a CUDA device, else small")
    p.add_argument("--steps", type=int, help="default: per --size")
    p.add_argument("--tf32", action="store_true", help="allow TF32 on the GPU (both models; looser tolerance)")
    p.add_argument("--tol", type=float, help="max relative loss difference (default 1e-4 CPU, 1e-3 GPU, 2e-2 TF32)")
    p.add_argument("--json", help="write the losses and timings here")
    args = p.parse_args(argv)
    on_gpu = args.device.startswith("cuda")
    args.size = args.size or ("gpu" if on_gpu else "small")
    args.steps = args.steps or sizes[args.size]["steps"]
    if on_gpu:  # torch's convolutions default to TF32 there; the comparison is exact fp32 unless asked
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = args.tf32
    tol = args.tol if args.tol is not None else 1e-4 if not on_gpu else 2e-2 if args.tf32 else 1e-3
    return args, sizes[args.size], tol


def convert(model):
    """A tritonn copy of ``model`` (same weights), after checking every layer with a twin was replaced."""
    converted, report = tritonn.convert(copy.deepcopy(model), report=True)
    kinds = sorted({src.rsplit(".", 1)[-1] for _, src, _ in report.replaced})
    left = sorted({f"{cls.rsplit('.', 1)[-1]} ({why.split(';')[0]})" for _, cls, why in report.left})
    print(f"tritonn.convert replaced {len(report.replaced)} layers ({', '.join(kinds)}); "
          f"left as torch: {', '.join(left) or 'nothing'}")
    missed = [n for n, m in converted.named_modules() if type(m) in supported()]
    if missed:
        sys.exit(f"not converted: {missed}")
    return converted


def print_row(step, a, b):
    print(f"{step:>4} {a:>12.6f} {b:>12.6f} {abs(a - b):>10.2e}")


def train(models, opts, batches, loss_of, device):
    """One step of each model per batch; the loss of each (before its update) and the step time."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    losses, times = {k: [] for k in models}, {k: [] for k in models}
    print(f"{'step':>4} {'torch loss':>12} {'tritonn loss':>12} {'|diff|':>10}")
    for step, batch in enumerate(batches):
        for name, model in models.items():
            sync()
            start = time.perf_counter()
            loss = loss_of(model, batch)
            opts[name].zero_grad()
            loss.backward()
            opts[name].step()
            sync()
            times[name].append(time.perf_counter() - start)
            losses[name].append(loss.item())
        print_row(step, losses["torch"][-1], losses["tritonn"][-1])
    return losses, times


def finish(args, losses, times, tol, evals=None):
    """Timings, the JSON record, and the verdict: exit status 1 when the losses diverged."""
    pairs = list(zip(losses["torch"], losses["tritonn"])) + ([(evals["torch"], evals["tritonn"])] if evals else [])
    diff = max(abs(a - b) for a, b in pairs)
    rel = max(abs(a - b) / max(abs(a), 1e-12) for a, b in pairs)
    ms = {k: statistics.median(t[1:] or t) * 1e3 for k, t in times.items()}  # step 0 compiles and autotunes
    on_gpu = args.device.startswith("cuda")
    if on_gpu:
        print(f"ms/step (median, step 0 excluded): torch {ms['torch']:.2f}  tritonn {ms['tritonn']:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"example": os.path.basename(sys.argv[0]), "device": torch.cuda.get_device_name()
                       if on_gpu else "cpu (interpreter)", "size": args.size, "tf32": args.tf32,
                       "torch": torch.__version__, "tritonn": tritonn.__version__, "losses": losses,
                       "eval": evals, "ms_per_step": ms, "max_rel_diff": rel}, f, indent=1)
    ok = rel <= tol
    print(f"max |loss diff| = {diff:.3e} (relative {rel:.3e}, tolerance {tol:.0e}): {'OK' if ok else 'DIVERGED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
