"""What the three examples share: the interpreter switch, the command line, converting the
torch model, training both side by side, and the verdict.

Import it before anything that imports tritonn: ``TRITON_INTERPRET`` must be set before
``@triton.jit`` decorates the kernels.
"""

import argparse
import copy
import json
import os
import statistics
import sys
import time

import torch

if not torch.cuda.is_available():
    # Before importing tritonn: @triton.jit picks interpreter or compiler when it decorates.
    os.environ["TRITON_INTERPRET"] = "1"
# A silent fallback to torch would make the comparison pass trivially: make it an error instead.
os.environ.setdefault("TRITONN_STRICT", "1")

import tritonn  # noqa: E402
from tritonn.convert import supported  # noqa: E402


def parse(argv, sizes, description):
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=description)
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
