"""A character-level LSTM language model trained on a page of Alice's Adventures in Wonderland
(examples/data), in plain torch and converted to tritonn, side by side from the same weights.

    python examples/char_lstm.py                 # no GPU: Triton's interpreter, tiny sizes, a few steps
    python examples/char_lstm.py --json out.json # on a GPU: larger sizes, ms/step of both
"""

import sys
from pathlib import Path

import torch
from harness import convert, finish, parse, print_row, train  # first: it sets up the interpreter

SIZES = {  # the interpreter runs the recurrence step by step on the CPU: "small" keeps it short and narrow
    "small": dict(batch=8, seq=16, embed=16, hidden=32, layers=2, steps=5),
    "gpu": dict(batch=64, seq=128, embed=128, hidden=512, layers=2, steps=50),
}
TEXT = Path(__file__).parent / "data" / "alice_rabbit_hole.txt"


class CharLM(torch.nn.Module):
    """Embedding (stays torch: no tritonn twin) -> LSTM -> Linear, predicting the next character."""

    def __init__(self, vocab, embed, hidden, layers):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, embed)
        # dropout=0: tritonn's Philox masks differ from torch's, so active dropout could only agree in distribution.
        self.lstm = torch.nn.LSTM(embed, hidden, num_layers=layers, batch_first=True, dropout=0.0)
        self.head = torch.nn.Linear(hidden, vocab)

    def forward(self, ids):
        out, _ = self.lstm(self.embed(ids))
        return self.head(out)


def windows(data, batch, seq, gen):
    """``batch`` random windows of the text: inputs and the same shifted by one character."""
    start = torch.randint(0, len(data) - seq - 1, (batch, 1), generator=gen)
    idx = start + torch.arange(seq + 1)
    return data[idx[:, :-1]], data[idx[:, 1:]]


def main(argv=None):
    args, size, tol = parse(argv, SIZES, __doc__.split("\n\n")[0])
    text = TEXT.read_text()
    vocab = sorted(set(text))
    data = torch.tensor([vocab.index(c) for c in text])
    held_out = len(data) * 9 // 10  # the last tenth is only evaluated
    print(f"{TEXT.name}: {len(text)} characters, {len(vocab)} distinct")

    torch.manual_seed(0)
    ref = CharLM(len(vocab), size["embed"], size["hidden"], size["layers"]).to(args.device)
    models = {"torch": ref, "tritonn": convert(ref)}
    opts = {k: torch.optim.Adam(m.parameters(), lr=1e-2) for k, m in models.items()}
    gen = torch.Generator().manual_seed(1)
    batches = [windows(data[:held_out], size["batch"], size["seq"], gen) for _ in range(args.steps)]

    def loss_of(model, batch):
        x, y = (t.to(args.device) for t in batch)
        return torch.nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten())

    losses, times = train(models, opts, batches, loss_of, args.device)
    test = windows(data[held_out:], size["batch"], size["seq"], gen)
    with torch.no_grad():
        evals = {k: loss_of(m.eval(), test).item() for k, m in models.items()}
    print_row("eval", evals["torch"], evals["tritonn"])
    return finish(args, losses, times, tol, evals)


if __name__ == "__main__":
    sys.exit(main())
