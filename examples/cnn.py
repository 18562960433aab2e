"""A small CNN (grouped and depthwise convolutions, BatchNorm, MaxPool) trained on synthetic
images, in plain torch and converted to tritonn, side by side from the same weights.

    python examples/cnn.py                 # no GPU: Triton's interpreter, tiny sizes, a few steps
    python examples/cnn.py --json out.json # on a GPU: larger sizes, ms/step of both
"""

import sys

import torch
from harness import convert, finish, parse, print_row, train  # first: it sets up the interpreter

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
    args, size, tol = parse(argv, SIZES, __doc__.split("\n\n")[0])
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


if __name__ == "__main__":
    sys.exit(main())
