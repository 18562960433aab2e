"""A small encoder-decoder Transformer learning to reverse sequences of tokens of varying length
(padding masks on both sides, a causal decoder mask), in plain torch and converted to tritonn,
side by side from the same weights.

    python examples/transformer.py                 # no GPU: Triton's interpreter, tiny sizes, a few steps
    python examples/transformer.py --json out.json # on a GPU: larger sizes, ms/step of both
"""

import sys
import warnings

import torch
from harness import convert, finish, parse, print_row, train  # first: it sets up the interpreter

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
    args, size, tol = parse(argv, SIZES, __doc__.split("\n\n")[0])
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


if __name__ == "__main__":
    sys.exit(main())
