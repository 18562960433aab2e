"""Turn a benchmark run into a markdown table and a speedup chart.

    python benchmarks/render.py RESULTS [--out DIR]

RESULTS is pytest-benchmark's ``--benchmark-json`` file, or the JSONL file the
benchmarks append to when ``TRITONN_BENCH_JSONL`` is set (kept for runs cut short,
or machines without pytest-benchmark). The numbers come from each record's
``extra_info`` (see conftest.py), never from pytest-benchmark's own statistics.
torch, torch.compile and tritonn records are paired per (case, shape, dtype, mode);
speedup is torch_ms / tritonn_ms (and torch.compile_ms / tritonn_ms), so above 1 means
tritonn is faster.

Writes DIR/<name>.md and DIR/<name>_speedup.png for each benchmark file
(test_bench_<name>.py). The PNG needs matplotlib; without it only the markdown is
written. Standard library only otherwise, so it runs on the GPU machine as is.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

KEY = ("case", "shape", "dtype", "mode")
ENV = ("gpu", "torch", "triton", "tritonn")

# Dense bf16/fp16 matmul TFLOP/s of these GPUs (the team's GPU guide, ../shared/GUIDE.md, section 6).
PEAK_TFLOPS = {"H200": 790.0, "H100": 800.0}


def load(path: Path) -> tuple[list[dict], dict]:
    """Records (extra_info plus the test's name) and run metadata, from either format."""
    text = path.read_text()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = None
    if isinstance(data, dict) and "benchmarks" in data:
        benchmarks = data["benchmarks"]
        records = [{**b.get("extra_info", {}), "test": b.get("fullname", b.get("name", ""))} for b in benchmarks]
        commit = data.get("commit_info") or {}
        meta = {"date": data.get("datetime"), "commit": commit.get("id"), "dirty": commit.get("dirty")}
    else:
        records = [json.loads(line) for line in text.splitlines() if line.strip()]
        meta = {"date": records[0].get("date") if records else None}
    return [r for r in records if "impl" in r and "ms" in r], meta


def suite_name(test: str) -> str:
    """test_bench_linear.py::test_linear[...] -> linear."""
    match = re.search(r"test_bench_(\w+)\.py", test)
    return match.group(1) if match else "bench"


def pair(records: list[dict]) -> dict[str, list[dict]]:
    """Rows per suite, in the order the cases ran: the KEY fields plus torch and tritonn records."""
    suites: dict[str, dict[tuple, dict]] = {}
    for r in records:
        rows = suites.setdefault(suite_name(r.get("test", "")), {})
        row = rows.setdefault(tuple(r.get(k) for k in KEY), dict(zip(KEY, (r.get(k) for k in KEY))))
        row[r["impl"]] = r
    return {name: list(rows.values()) for name, rows in suites.items()}


def speedup(row: dict, baseline: str = "torch") -> float | None:
    """baseline ms / tritonn ms for a row (baseline "torch" or "torch.compile")."""
    if baseline in row and "tritonn" in row and row["tritonn"]["ms"] > 0:
        return row[baseline]["ms"] / row["tritonn"]["ms"]
    return None


def peak_fraction(row: dict) -> str:
    """tritonn's TFLOP/s as a share of the GPU's measured bf16/fp16 peak, where known."""
    rec = row.get("tritonn")
    if rec is None or row["dtype"] not in ("bf16", "fp16") or not rec.get("tflops"):
        return "-"
    peak = next((v for k, v in PEAK_TFLOPS.items() if k in rec.get("gpu", "")), None)
    return f"{100 * rec['tflops'] / peak:.0f}%" if peak else "-"


def rate(rec: dict | None) -> str:
    """A record's throughput in its own unit: TFLOP/s for compute, GB/s for memory-bound cases."""
    if rec is None:
        return "-"
    if rec.get("tflops"):
        return f"{rec['tflops']:.3g} TFLOP/s"
    if rec.get("gbps"):
        return f"{rec['gbps']:.4g} GB/s"
    return "-"


def _ms(rec: dict | None) -> str:
    return f"{rec['ms']:.4f}" if rec is not None else "-"


def _x(value: float | None) -> str:
    return f"{value:.2f}x" if value is not None else "-"


def markdown(name: str, rows: list[dict], meta: dict) -> str:
    first = next(r.get("tritonn") or r.get("torch") for r in rows)
    impls = [impl for impl in ("torch", "torch.compile", "tritonn") if any(impl in r for r in rows)]
    compiled = "torch.compile" in impls
    envs = {tuple(r[impl].get(k) for k in ENV) for r in rows for impl in impls if impl in r}
    env_line = "; ".join(
        f"GPU: {gpu}; torch {t}, triton {tr}, tritonn {tn}" for gpu, t, tr, tn in sorted(envs, key=str)
    )
    lines = [
        f"# tritonn vs torch: {name}",
        "",
        f"- {env_line}",
        f"- date: {meta.get('date') or first.get('date', '?')}",
    ]
    first_calls = {impl: sum(r[impl].get("first_call_s", 0.0) for r in rows if impl in r) for impl in impls}
    lines.append("- first calls (compile, autotune; not in the timings): "
                 + ", ".join(f"{impl} {t:.1f} s" for impl, t in first_calls.items()) + " in total")
    if meta.get("commit"):
        lines.append(f"- commit: {meta['commit']}{' (dirty)' if meta.get('dirty') else ''}")
    lines += [
        "- ms: median per call (GPU: triton.testing.do_bench, CUDA events, cold L2; "
        "CPU: interpreter wall clock, a smoke test, not a measurement)",
        "- speedup: torch ms / tritonn ms (above 1: tritonn faster)"
        + ("; vs compile: torch.compile ms / tritonn ms" if compiled else ""),
        "- rate: TFLOP/s from the case's FLOP count (GEMMs: 2MNK forward, 6MNK forward+backward), or, for "
        "memory-bound cases, GB/s: the least the op must move / time, to hold against the GPU's copy bandwidth",
        "",
    ]
    header = ["case", "shape", "dtype", "mode", "torch ms"] + (["torch.compile ms"] if compiled else []) + \
        ["tritonn ms", "speedup"] + (["vs compile"] if compiled else []) + \
        ["torch rate", "tritonn rate", "tritonn % of peak"]
    lines += ["| " + " | ".join(header) + " |", "|---|---|---|---|" + "--:|" * (len(header) - 4)]
    for row in rows:
        cells = [row["case"], row["shape"], row["dtype"], row["mode"], _ms(row.get("torch"))]
        cells += [_ms(row.get("torch.compile"))] if compiled else []
        cells += [_ms(row.get("tritonn")), _x(speedup(row))]
        cells += [_x(speedup(row, "torch.compile"))] if compiled else []
        cells += [rate(row.get("torch")), rate(row.get("tritonn")), peak_fraction(row)]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def chart(title: str, rows: list[dict], path: Path) -> bool:
    """A horizontal bar per paired case, speedup = torch ms / tritonn ms; False when
    matplotlib is missing or nothing is paired. The PNG carries no software stamp, so a
    chart of the same numbers is the same file."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"render.py: matplotlib is not installed, skipping {path.name}", file=sys.stderr)
        return False
    paired = [(f"{r['case']} {r['shape']} {r['dtype']} {r['mode']}", speedup(r)) for r in rows]
    paired = [(label, s) for label, s in paired if s is not None]
    if not paired:
        return False
    labels, values = zip(*reversed(paired))
    fig, ax = plt.subplots(figsize=(9, 0.3 * len(paired) + 1.6))
    ax.barh(labels, values, color=["tab:green" if v >= 1 else "tab:red" for v in values])
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xlabel("speedup = torch ms / tritonn ms (above 1: tritonn faster)")
    ax.set_title(title, fontsize=9)
    ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, help="pytest-benchmark JSON or TRITONN_BENCH_JSONL file")
    parser.add_argument("--out", type=Path, default=Path("."), help="output folder (default: .)")
    args = parser.parse_args(argv)
    records, meta = load(args.results)
    if not records:
        print(f"render.py: no tritonn benchmark records in {args.results}", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    for name, rows in pair(records).items():
        md = args.out / f"{name}.md"
        md.write_text(markdown(name, rows, meta))
        print(f"wrote {md}")
        png = args.out / f"{name}_speedup.png"
        gpu = next(r.get("tritonn", r.get("torch", {})).get("gpu", "?") for r in rows)
        if chart(f"tritonn vs torch: {name} ({gpu})", rows, png):
            print(f"wrote {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
