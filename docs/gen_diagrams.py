"""Draw the documentation's diagrams as SVG files in docs/img/.

    python docs/gen_diagrams.py            # (re)write them
    python docs/gen_diagrams.py --check    # exit 1 when a committed file differs

Standard library only: each diagram is a list of shapes placed by hand, written as plain
SVG (text stays text), so the output is small and byte-for-byte reproducible.
tests/test_docs.py checks that the committed files are what this script writes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from xml.sax.saxutils import escape

IMG = Path(__file__).resolve().parent / "img"

INK = "#263238"
GREY = "#90a4ae"
BLUE, BLUE_FILL = "#3f6fb5", "#dce7f5"
ORANGE, ORANGE_FILL = "#d9822b", "#fbe5cf"
GREEN, GREEN_FILL = "#4f9a4a", "#dcefd9"
PURPLE, PURPLE_FILL = "#8e5ea2", "#ecdff2"
RED, RED_FILL = "#c44e52", "#f6dcdc"
PAPER = "#fafbfc"


def _scripts(s: str, size: int) -> str:
    """Escaped text with ``_{sub}`` / ``^{sup}`` as shifted, smaller tspans. Shifts use dy,
    which every browser honours (baseline-shift is not), relative to the previous chunk."""
    chunks = []  # (text, offset from the baseline, font size or None)
    i = 0
    while i < len(s):
        if s[i] in "_^" and s[i + 1:i + 2] == "{":
            end = s.index("}", i)
            chunks.append((s[i + 2:end], round(size * (0.3 if s[i] == "_" else -0.4), 1), round(size * 0.72, 1)))
            i = end + 1
        else:
            j = i + 1
            while j < len(s) and not (s[j] in "_^" and s[j + 1:j + 2] == "{"):
                j += 1
            chunks.append((s[i:j], 0.0, None))
            i = j
    out, level = [], 0.0
    for text, offset, small in chunks:
        if offset == level and small is None:
            out.append(escape(text))
            continue
        attrs = f' dy="{round(offset - level, 1)}"' if offset != level else ""
        attrs += f' font-size="{small}"' if small else ""
        out.append(f"<tspan{attrs}>{escape(text)}</tspan>")
        level = offset
    return "".join(out)


class Svg:
    def __init__(self, width: int, height: int, title: str):
        self.width, self.height, self.title = width, height, title
        self.parts: list[str] = []
        self.markers: dict[str, str] = {}

    def _marker(self, color: str) -> str:
        if color not in self.markers:
            self.markers[color] = f"arrow{len(self.markers)}"
        return self.markers[color]

    def rect(self, x, y, w, h, fill="#ffffff", stroke=INK, rx=5, dash=False, width=1.2):
        extra = ' stroke-dasharray="5 4"' if dash else ""
        self.parts.append(f'<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="{rx}" fill="{fill}" '
                          f'stroke="{stroke}" stroke-width="{width}"{extra}/>')

    def box(self, cx, cy, w, h, label, fill="#ffffff", stroke=INK, size=13, dash=False, sub=None):
        """A rounded box centred on (cx, cy) with a label (and an optional smaller second line)."""
        self.rect(cx - w / 2, cy - h / 2, w, h, fill, stroke, dash=dash)
        if sub is None:
            self.text(cx, cy + size * 0.35, label, size=size)
        else:
            self.text(cx, cy - 2, label, size=size)
            self.text(cx, cy + size - 1, sub, size=size - 3, fill="#455a64")

    def text(self, x, y, s, size=13, anchor="middle", fill=INK, weight="normal", italic=False):
        """Text; ``_{...}`` and ``^{...}`` mark subscripts and superscripts."""
        style = ' font-style="italic"' if italic else ""
        bold = f' font-weight="{weight}"' if weight != "normal" else ""
        self.parts.append(f'<text x="{x}" y="{y}" font-size="{size}" text-anchor="{anchor}" fill="{fill}"'
                          f'{bold}{style} xml:space="preserve">{_scripts(s, size)}</text>')

    def line(self, points, color=INK, arrow=True, dash=False, width=1.4, opacity=1.0):
        pts = " ".join(f"{x},{y}" for x, y in points)
        extra = f' marker-end="url(#{self._marker(color)})"' if arrow else ""
        extra += ' stroke-dasharray="5 4"' if dash else ""
        extra += f' stroke-opacity="{opacity}"' if opacity != 1.0 else ""
        self.parts.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="{width}" '
                          f'stroke-linejoin="round"{extra}/>')

    def op(self, cx, cy, symbol, r=11, fill="#ffffff"):
        """A circled operator: "x" (elementwise product) or "+" (sum)."""
        self.parts.append(f'<circle cx="{cx}" cy="{cy}" r="{r}" fill="{fill}" stroke="{INK}" stroke-width="1.2"/>')
        d = r * 0.55
        if symbol == "+":
            self.line([(cx - d, cy), (cx + d, cy)], arrow=False)
            self.line([(cx, cy - d), (cx, cy + d)], arrow=False)
        else:
            e = d * 0.8
            self.line([(cx - e, cy - e), (cx + e, cy + e)], arrow=False)
            self.line([(cx - e, cy + e), (cx + e, cy - e)], arrow=False)

    def dot(self, cx, cy, r=3.5, color=INK):
        self.parts.append(f'<circle cx="{cx}" cy="{cy}" r="{r}" fill="{color}"/>')

    def render(self) -> str:
        defs = "".join(
            f'<marker id="{mid}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
            f'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="{color}"/></marker>'
            for color, mid in self.markers.items())
        head = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.width}" height="{self.height}" '
                f'viewBox="0 0 {self.width} {self.height}" font-family="Helvetica, Arial, sans-serif" '
                f'role="img" aria-label="{escape(self.title)}">\n<title>{escape(self.title)}</title>\n'
                f'<defs>{defs}</defs>\n'
                f'<rect x="0" y="0" width="{self.width}" height="{self.height}" fill="{PAPER}"/>\n')
        return head + "\n".join(self.parts) + "\n</svg>\n"


# ---------------------------------------------------------------------------- grouped convolution


def grouped_conv() -> str:
    """Which input channels each output channel reads, for groups = 1, 3 and C_in (depthwise)."""
    s = Svg(900, 410, "Grouped convolution: how groups splits the channels")
    s.text(450, 26, "Conv2d(6, 6, kernel_size, groups=g): which input channels each output channel reads",
           size=15, weight="bold")
    colors = [(BLUE, BLUE_FILL), (ORANGE, ORANGE_FILL), (GREEN, GREEN_FILL), (PURPLE, PURPLE_FILL),
              (RED, RED_FILL), ("#3d8b8b", "#d7eeee")]
    panels = [
        (1, "groups = 1", "weight (6, 6, kH, kW)", "implicit GEMM (1x1: the GEMM core)"),
        (3, "groups = 3", "weight (6, 2, kH, kW)", "implicit GEMM, groups a grid axis"),
        (6, "groups = 6 = C_in (depthwise)", "weight (6, 1, kH, kW)", "direct depthwise kernel"),
    ]
    n = 6
    for p, (g, title, weight, route) in enumerate(panels):
        px = 20 + p * 295
        s.text(px + 130, 60, title, size=14, weight="bold")
        s.text(px + 55, 84, "input x", size=12, fill="#455a64")
        s.text(px + 215, 84, "output y", size=12, fill="#455a64")
        per_in, per_out = n // g, n // g
        for o in range(n):
            group = o // per_out
            color = colors[group][0] if g > 1 else BLUE
            for i in range(group * per_in, (group + 1) * per_in):
                s.line([(px + 80, 111 + i * 36), (px + 190, 111 + o * 36)], color=color, arrow=False,
                       width=1.3, opacity=0.55 if g == 1 else 1.0)
        for c in range(n):
            fill_in = colors[c // per_in][1] if g > 1 else BLUE_FILL
            fill_out = colors[c // per_out][1] if g > 1 else BLUE_FILL
            s.box(px + 55, 111 + c * 36, 50, 26, f"c{c}", fill=fill_in, size=12)
            s.box(px + 215, 111 + c * 36, 50, 26, f"c{c}", fill=fill_out, size=12)
        s.text(px + 135, 338, weight, size=13)
        s.text(px + 135, 358, route, size=12, fill="#455a64", italic=True)
    s.text(450, 392, "Group j: output channels j*C_out/g ... (j+1)*C_out/g - 1 read input channels "
           "j*C_in/g ... (j+1)*C_in/g - 1 only (C_in and C_out divisible by g).", size=12)
    return s.render()


# ---------------------------------------------------------------------------- LSTM cell


def lstm_cell() -> str:
    s = Svg(880, 450, "The LSTM cell: gates i, f, g, o and the flow of c and h")
    s.text(440, 26, "One LSTM step (one layer, one direction)", size=15, weight="bold")
    s.rect(150, 44, 560, 300, fill="#ffffff", stroke=GREY, rx=12)
    # cell state line
    s.line([(40, 80), (249, 80)], color=GREEN, width=2)
    s.text(40, 70, "c_{t-1}", size=13, anchor="start", fill=GREEN)
    s.op(260, 80, "x")
    s.line([(271, 80), (379, 80)], color=GREEN, width=2)
    s.op(390, 80, "+")
    s.line([(401, 80), (850, 80)], color=GREEN, width=2)
    s.text(850, 70, "c_{t}", size=13, anchor="end", fill=GREEN)
    # gates from the projections
    gates = [(260, "f", "sigmoid", "forget"), (350, "i", "sigmoid", "input"), (440, "g", "tanh", "cell"),
             (540, "o", "sigmoid", "output")]
    for cx, name, act, role in gates:
        s.box(cx, 250, 70, 40, f"{name} = {act}", fill=BLUE_FILL, stroke=BLUE, size=12, sub=f"{role} gate")
        s.line([(cx, 300), (cx, 272)], color=BLUE)
    s.line([(260, 230), (260, 92)], color=BLUE)          # f -> c_{t-1} * f
    s.op(390, 160, "x")
    s.line([(350, 230), (350, 160), (378, 160)], color=BLUE)  # i
    s.line([(440, 230), (440, 160), (402, 160)], color=BLUE)  # g
    s.line([(390, 149), (390, 92)], color=INK)           # i * g -> +
    # output: o * tanh(c_t)
    s.line([(620, 80), (620, 126)], color=GREEN)
    s.box(620, 140, 60, 26, "tanh", fill=GREEN_FILL, stroke=GREEN, size=12)
    s.line([(620, 153), (620, 188)], color=GREEN)
    s.op(620, 200, "x")
    s.line([(540, 230), (540, 200), (608, 200)], color=BLUE)
    s.line([(632, 200), (730, 200)], color=ORANGE, width=2)
    s.box(770, 200, 76, 40, "h W_{hr}^{T}", fill=ORANGE_FILL, stroke=ORANGE, size=12, dash=True, sub="proj_size > 0")
    s.line([(808, 200), (850, 200)], color=ORANGE, width=2)
    s.text(850, 226, "h_{t}", size=13, anchor="end", fill=ORANGE)
    # inputs: one bus carrying the four pre-activations
    s.line([(40, 310), (600, 310)], color=INK, arrow=False, width=2)
    s.text(40, 300, "h_{t-1}", size=13, anchor="start", fill=ORANGE)
    s.line([(200, 372), (200, 313)], color=INK, width=2)
    s.text(210, 372, "x_{t}", size=13, anchor="start")
    for cx, *_ in gates:
        s.dot(cx, 310)
    s.text(430, 332, "x_{t} W_{ih}^{T} + b_{ih} + h_{t-1} W_{hh}^{T} + b_{hh}, split into 4 chunks (i, f, g, o)",
           size=12, fill="#455a64")
    s.text(440, 404, "c_{t} = f * c_{t-1} + i * g        h_{t} = o * tanh(c_{t})        (* elementwise)", size=13)
    s.text(440, 430, "x_{t} W_{ih}^{T} for every step is one GEMM before the time loop; the rest is one kernel "
           "per layer and direction.", size=12, fill="#455a64")
    return s.render()


# ---------------------------------------------------------------------------- LSTM layout


def lstm_layout() -> str:
    s = Svg(900, 580, "A stacked bidirectional LSTM: layers, directions and the indices of h_n")
    s.text(450, 26, "LSTM(num_layers=2, bidirectional=True): four time steps", size=15, weight="bold")
    s.text(450, 52, "fwd: the forward direction (weight_*_l{k}), rev: the reverse direction "
           "(weight_*_l{k}_reverse), one cell per time step", size=12, fill="#455a64")
    cols = [250, 390, 530, 670]
    layer_in = [486, 318]  # y of each layer's input dots (layer 1's = layer 0's output dots)
    top = 150
    for layer, y_in in enumerate(layer_in):
        yf, yr, y_out = y_in - 52, y_in - 112, y_in - 168
        s.text(24, (yf + yr) / 2 + 4, f"layer {layer}", size=14, anchor="start", weight="bold")
        k_f, k_r = 2 * layer, 2 * layer + 1
        # recurrences
        s.line([(150, yf), (cols[0] - 48, yf)], color=BLUE)
        s.text(145, yf + 4, f"h_0[{k_f}], c_0[{k_f}]", size=12, anchor="end", fill=BLUE)
        for a, b in zip(cols, cols[1:]):
            s.line([(a - 22 + 26, yf), (b - 22 - 26, yf)], color=BLUE, width=1.8)
            s.line([(b + 22 - 26, yr), (a + 22 + 26, yr)], color=ORANGE, width=1.8)
        s.line([(cols[-1] + 4, yf), (770, yf)], color=BLUE)
        s.text(776, yf + 4, f"h_n[{k_f}], c_n[{k_f}]", size=12, anchor="start", fill=BLUE)
        s.line([(770, yr), (cols[-1] + 48, yr)], color=ORANGE)
        s.text(776, yr + 4, f"h_0[{k_r}], c_0[{k_r}]", size=12, anchor="start", fill=ORANGE)
        s.line([(cols[0] - 4, yr), (150, yr)], color=ORANGE)
        s.text(145, yr + 4, f"h_n[{k_r}], c_n[{k_r}]", size=12, anchor="end", fill=ORANGE)
        for t, cx in enumerate(cols):
            # input dot -> both directions; both outputs -> the output dot (concatenation)
            s.line([(cx, y_in), (cx - 22, yf + 17)], color=GREY)
            s.line([(cx, y_in), (cx + 22, y_in - 14), (cx + 22, yr + 17)], color=GREY)
            s.line([(cx - 22, yf - 17), (cx - 22, y_out + 14), (cx, y_out)], color=GREY, arrow=False)
            s.line([(cx + 22, yr - 17), (cx, y_out)], color=GREY, arrow=False)
            s.box(cx - 22, yf, 52, 34, "fwd", fill=BLUE_FILL, stroke=BLUE, size=12)
            s.box(cx + 22, yr, 52, 34, "rev", fill=ORANGE_FILL, stroke=ORANGE, size=12)
            s.dot(cx, y_in)
            if layer == 0:
                s.text(cx, y_in + 24, f"input[{t}]", size=12)
            s.dot(cx, y_out)
    # between layers, and the output
    s.text(860, 322, "concat", size=12, anchor="end", fill="#455a64")
    s.text(860, 338, "+ dropout", size=12, anchor="end", fill="#455a64")
    s.text(860, 354, "(training)", size=12, anchor="end", fill="#455a64")
    for t, cx in enumerate(cols):
        s.line([(cx, top), (cx, top - 40)], color=INK)
        s.text(cx, top - 48, f"output[{t}]", size=12)
    s.text(450, 530, "Each output dot joins both directions: D * H_out features (D = 2, H_out = proj_size "
           "or hidden_size). fwd runs t = 0 ... L-1, rev runs t = L-1 ... 0.", size=12)
    s.text(450, 552, "h_0, c_0, h_n, c_n are indexed by layer * D + direction; output holds the last layer "
           "only.", size=12)
    return s.render()


# ---------------------------------------------------------------------------- Transformer


def _stack(s: Svg, x, y_bottom, w, blocks, label, repeat):
    """Sublayer boxes from the bottom up, each followed by Add & Norm, with residual skips."""
    cx = x + w / 2
    y = y_bottom
    s.line([(cx, y + 30), (cx, y)], color=INK)
    for name, fill, stroke in blocks:
        start = y
        s.box(cx, y - 22, w - 40, 30, name, fill=fill, stroke=stroke, size=12)
        s.line([(cx, y - 37), (cx, y - 52)], color=INK)
        s.box(cx, y - 68, w - 40, 30, "Add & Norm", fill="#fff6d6", stroke="#b58b00", size=12)
        s.line([(cx, start + 4), (x + 8, start + 4), (x + 8, y - 68), (x + 20, y - 68)], color=GREY)
        y -= 98
        s.line([(cx, y + 15), (cx, y)], color=INK)
    s.rect(x, y, w, y_bottom - y + 4, fill="none", stroke=GREY, rx=10)
    s.text(x + w + 6, y_bottom - (y_bottom - y) / 2, repeat, size=13, anchor="start", weight="bold")
    s.text(cx, y_bottom + 48, label, size=13, weight="bold")
    return y


def transformer() -> str:
    s = Svg(980, 640, "The Transformer: encoder and decoder stacks, post-norm and pre-norm layers")
    s.text(490, 26, "nn.Transformer / tritonn.Transformer (post-norm, the default)", size=15, weight="bold")
    enc = [("Self-attention", BLUE_FILL, BLUE), ("Feed-forward", GREEN_FILL, GREEN)]
    dec = [("Masked self-attention", BLUE_FILL, BLUE), ("Cross-attention", PURPLE_FILL, PURPLE),
           ("Feed-forward", GREEN_FILL, GREEN)]
    top_e = _stack(s, 40, 540, 190, enc, "src", "x N_enc")
    top_d = _stack(s, 320, 540, 190, dec, "tgt", "x N_dec")
    s.box(135, top_e - 30, 150, 28, "LayerNorm", fill="#fff6d6", stroke="#b58b00", size=12)
    s.line([(135, top_e), (135, top_e - 16)], color=INK)
    cross_y = 540 - 98 - 22  # the decoder's second sublayer
    s.line([(135, top_e - 44), (135, top_e - 84), (278, top_e - 84), (278, cross_y), (338, cross_y)],
           color=PURPLE, width=1.6)
    s.text(127, top_e - 62, "memory", size=13, anchor="end", weight="bold")
    s.text(284, cross_y - 30, "key,", size=11, anchor="start", fill=PURPLE)
    s.text(284, cross_y - 17, "value", size=11, anchor="start", fill=PURPLE)
    s.box(415, top_d - 30, 150, 28, "LayerNorm", fill="#fff6d6", stroke="#b58b00", size=12)
    s.line([(415, top_d), (415, top_d - 16)], color=INK)
    s.line([(415, top_d - 44), (415, top_d - 70)], color=INK)
    s.text(415, top_d - 76, "output", size=13, weight="bold")
    s.text(275, 620, "masks: src_mask, tgt_mask (causal), memory_mask; key padding masks per sequence", size=12,
           fill="#455a64")

    # one sublayer, post-norm and pre-norm, with what tritonn fuses
    x0 = 600
    s.text(770, 66, "One sublayer, two orders", size=14, weight="bold")

    def chain(y, items, fused, note):
        xs = []
        x = x0
        for kind, label, fill, stroke, w in items:
            if kind == "op":
                s.op(x + 11, y, "+")
                xs.append((x, x + 22))
                x += 22
            else:
                s.box(x + w / 2, y, w, 30, label, fill=fill, stroke=stroke, size=11)
                xs.append((x, x + w))
                x += w
            x += 16
        for (a0, a1), (b0, b1) in zip(xs, xs[1:]):
            s.line([(a1, y), (b0, y)], color=INK)
        f0, f1 = fused
        s.rect(xs[f0][0] - 6, y - 24, xs[f1][1] - xs[f0][0] + 12, 48, fill="none", stroke=RED, dash=True)
        s.text((xs[0][0] + xs[-1][1]) / 2, y + 40, note, size=11, fill=RED)
        return xs

    sub = ("box", "sublayer", BLUE_FILL, BLUE, 64)
    drop = ("box", "dropout", "#eceff1", GREY, 58)
    plus = ("op", "+", None, None, 22)
    norm = ("box", "LayerNorm", "#fff6d6", "#b58b00", 72)

    y1 = 130
    s.text(x0, y1 - 36, "norm_first=False:  x = norm(x + dropout(sublayer(x)))", size=12, anchor="start")
    xs = chain(y1, [sub, drop, plus, norm], (1, 3), "one kernel: add_dropout_layer_norm")
    s.line([(x0 - 24, y1), (xs[0][0], y1)], color=INK)
    s.line([(x0 - 14, y1), (x0 - 14, y1 + 24), (xs[2][0] + 11, y1 + 24), (xs[2][0] + 11, y1 + 11)], color=GREY)

    y2 = 260
    s.text(x0, y2 - 36, "norm_first=True:  x = x + dropout(sublayer(norm(x)))", size=12, anchor="start")
    pre = ("box", "LayerNorm", "#fff6d6", "#b58b00", 72)
    nxt = ("box", "next norm", "#fff6d6", "#b58b00", 66)
    xs = chain(y2, [pre, ("box", "sublayer", BLUE_FILL, BLUE, 58), drop, plus, nxt], (2, 4),
               "one kernel, fused with the next sublayer's norm")
    s.line([(x0 - 24, y2), (xs[0][0], y2)], color=INK)
    s.line([(x0 - 14, y2), (x0 - 14, y2 + 24), (xs[3][0] + 11, y2 + 24), (xs[3][0] + 11, y2 + 11)], color=GREY)

    notes = [
        "Self-attention: query = key = value = the layer input.",
        "Cross-attention: query from the decoder, key = value = memory.",
        "Feed-forward: linear1 -> activation -> dropout -> linear2;",
        "relu / gelu run in linear1's GEMM epilogue.",
        "Add & Norm: the residual add, the sublayer's dropout",
        "and the LayerNorm, fused (red boxes above).",
        "Pre-norm: the first LayerNorm of a layer and its last",
        "residual add are separate kernels.",
    ]
    for i, line in enumerate(notes):
        s.text(x0 - 20, 360 + 20 * i, line, size=12, anchor="start")
    return s.render()


DIAGRAMS = {
    "grouped_conv.svg": grouped_conv,
    "lstm_cell.svg": lstm_cell,
    "lstm_layout.svg": lstm_layout,
    "transformer.svg": transformer,
}


def generate() -> dict[Path, str]:
    return {IMG / name: make() for name, make in DIAGRAMS.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only compare with the committed files")
    args = parser.parse_args(argv)
    stale = []
    for path, text in generate().items():
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(path)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path}")
    for path in stale:
        print(f"out of date: {path} (run python docs/gen_diagrams.py)", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
