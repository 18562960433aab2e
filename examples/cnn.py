"""A small CNN (grouped and depthwise convolutions, BatchNorm, MaxPool) trained on synthetic
images, in plain torch and converted to tritonn, side by side from the same weights.

    python examples/cnn.py                 # no GPU: Triton's interpreter, tiny sizes, a few steps
    python examples/cnn.py --json out.json # on a GPU: larger sizes, ms/step of both
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

SIZES = {  # the interpreter runs every program serially on the CPU: "small" keeps the pixel count tiny
    "small": dict(batch=8, side=8, width=12, steps=5),
    "gpu": dict(batch=256, side=64, width=96, steps=30),
}
CLASSES = 4
NOISE = 0.2


def images(n, side, gen):
    """Four classes of 3-channel patterns (horizontal stripes, vertical stripes, checkerboard,
    centred blob) with random phase, colour and noise: easy enough that the loss falls in a few steps."""
    y = torch.randint(0, CLASSES, (n,), generator=gen)
    r = torch.arange(side, dtype=torch.float32)
    rows, cols = r.view(-1, 1).expand(side, side), r.view(1, -1).expand(side, side)
    phase = torch.randint(0, 4, (n, 1, 1), generator=gen)
    stripes_h = ((rows + phase) // 2 % 2) * 2 - 1
    stripes_v = ((cols + phase) // 2 % 2) * 2 - 1
    blob = (-((rows - side / 2) ** 2 + (cols - side / 2) ** 2) / (side * side / 16)).exp() * 4 - 1
    patterns = torch.stack([stripes_h, stripes_v, stripes_h * stripes_v, blob.expand(n, side, side)], 1)
    colour = torch.rand(n, 3, 1, 1, generator=gen) + 0.5
    x = patterns[torch.arange(n), y].unsqueeze(1) * colour + NOISE * torch.randn(n, 3, side, side, generator=gen)
    return x, y


def block(c_in, c_out, groups):
    return [torch.nn.Conv2d(c_in, c_out, 3, padding=1, groups=groups, bias=False),
            torch.nn.BatchNorm2d(c_out), torch.nn.ReLU()]


def make_model(width, side):
    return torch.nn.Sequential(
        *block(3, width, 1),
        torch.nn.MaxPool2d(2),
        *block(width, 2 * width, groups=3),               # grouped
        *block(2 * width, 2 * width, groups=2 * width),   # depthwise
        torch.nn.Conv2d(2 * width, 2 * width, 1),         # pointwise: runs on the GEMM core
        torch.nn.MaxPool2d(3, stride=2, padding=1),       # overlapping windows: gradients meet
        torch.nn.Flatten(),
        torch.nn.Linear(2 * width * (side // 4) ** 2, CLASSES),
    )


def main(argv=None):
    args, size, tol = parse(argv, SIZES)
    torch.manual_seed(0)
    ref = make_model(size["width"], size["side"]).to(args.device)
    models = {"torch": ref, "tritonn": convert(ref)}
    opts = {k: torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for k, m in models.items()}
    gen = torch.Generator().manual_seed(1)
    batches = [images(size["batch"], size["side"], gen) for _ in range(args.steps)]

    def loss_of(model, batch):
        x, y = (t.to(args.device) for t in batch)
        return torch.nn.functional.cross_entropy(model(x), y)

    losses, times = train(models, opts, batches, loss_of, args.device)
    # Eval mode normalizes with the running statistics each model accumulated.
    held_out = images(size["batch"], size["side"], gen)
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
