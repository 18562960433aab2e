"""Write the benchmarks page and the layer pages' benchmark summaries from benchmarks/results/.

    python docs/gen_benchmarks.py            # (re)write docs/benchmarks.md, docs/benchmarks/
    python docs/gen_benchmarks.py --check    # exit 1 when a committed file differs

Reads every GPU run committed under ``benchmarks/results/``: a folder holding the
``bench.json`` (pytest-benchmark) or ``bench.jsonl`` (``TRITONN_BENCH_JSONL``) that
``benchmarks/gpu_check.sh`` and ``python -m tritonn bench`` write, or such a file directly.
Records are read and paired by ``benchmarks/render.py`` (the benchmarks' own reader);
CPU records (interpreter smoke runs) are skipped: they say nothing about speed.

Writes:
* ``docs/benchmarks.md``: per run its GPU, versions, date and commit; per benchmark file a
  speedup chart and render.py's table; then what each benchmark file measures (its docstring).
* ``docs/benchmarks/<run>/<suite>_speedup.png``: the charts (matplotlib).
* ``docs/benchmarks/summary/<page>.md``: the summary each layer page includes.

With no GPU results the pages say so, and how to produce them.
tests/test_docs.py checks that the committed Markdown is what this script writes.
"""

from __future__ import annotations

import argparse
import ast
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
BENCH = ROOT / "benchmarks"
RESULTS = BENCH / "results"

sys.path.insert(0, str(BENCH))
import render  # noqa: E402  (benchmarks/render.py)

# layer page -> (benchmark suite, the cases of that suite it covers; None: all)
LAYER_SUITES: dict[str, tuple[str | None, set[str] | None]] = {
    "linear": ("linear", None),
    "conv2d": ("conv", None),
    "maxpool2d": ("pool", None),
    "batchnorm2d": ("batch_norm", None),
    "lstm": ("lstm", None),
    "attention": ("attention", None),
    "layernorm": ("transformer", {"layer_norm"}),
    "transformer": ("transformer", {"encoder_layer", "transformer_base"}),
    "dropout": (None, None),
}

NO_GPU = ("No GPU has been available to the project so far: nothing here is measured, and every "
          "performance target is unmeasured.")


@dataclass
class Run:
    name: str
    source: Path
    meta: dict
    suites: dict[str, list[dict]] = field(default_factory=dict)

    def env(self, field_name: str) -> str:
        values = sorted({str(rec.get(field_name)) for rows in self.suites.values() for row in rows
                         for impl, rec in row.items() if isinstance(rec, dict) and field_name in rec})
        return ", ".join(values) or "?"

    @property
    def date(self) -> str:
        return self.meta.get("date") or self.env("date")

    def header(self) -> str:
        return (f"GPU {self.env('gpu')}; torch {self.env('torch')}, triton {self.env('triton')}, "
                f"tritonn {self.env('tritonn')}; {self.date}")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "run"


def find_runs(results: Path = RESULTS) -> list[Run]:
    """The GPU runs under ``results``, in name order."""
    runs = []
    if not results.is_dir():
        return runs
    for entry in sorted(results.iterdir()):
        if entry.is_dir():
            candidates = [entry / "bench.json", entry / "bench.jsonl"]
        elif entry.suffix in (".json", ".jsonl"):
            candidates = [entry]
        else:
            continue
        for path in candidates:
            if not path.is_file():
                continue
            records, meta = render.load(path)
            records = [r for r in records if not str(r.get("gpu", "")).startswith("cpu")]
            if records:
                name = entry.name if entry.is_dir() else entry.stem
                runs.append(Run(_safe(name), path, meta, render.pair(records)))
                break
    return runs


def _docstring(path: Path) -> str:
    return ast.get_docstring(ast.parse(path.read_text())) or ""


def suite_files(bench: Path = BENCH) -> dict[str, Path]:
    """suite name -> its benchmark file (test_bench_<suite>.py)."""
    return {p.stem.removeprefix("test_bench_"): p for p in sorted(bench.glob("test_bench_*.py"))}


def _as_markdown(doc: str) -> str:
    """A benchmark file's docstring as Markdown: a blank line before each list."""
    out: list[str] = []
    for line in doc.splitlines():
        if line.startswith("* ") and out and out[-1].strip() and not out[-1].startswith(("* ", "  ")):
            out.append("")
        out.append(line)
    return "\n".join(out)


def _first_paragraph(doc: str) -> str:
    return " ".join(doc.split("\n\n")[0].split())


def _relpath(path: Path) -> str:
    try:
        return path.relative_to(ROOT).as_posix()
    except ValueError:
        return path.as_posix()


# ---------------------------------------------------------------------------- pages


def _suite_rows(run: Run, suite: str, cases: set[str] | None) -> list[dict]:
    return [r for r in run.suites.get(suite, []) if cases is None or r["case"] in cases]


def _geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def summary(page: str, runs: list[Run], files: dict[str, Path]) -> str:
    """The benchmark section a layer page includes (links relative to docs/layers/)."""
    suite, cases = LAYER_SUITES[page]
    if suite is None:
        text = ("No benchmark of its own: dropout runs inside the Transformer benchmarks "
                "(`dropout=0.1`, training mode), see [Transformer family](transformer.md#benchmarks).")
        return text + ("" if runs else " " + NO_GPU) + "\n"
    file = files.get(suite)
    where = f"[`benchmarks/{file.name}`](../benchmarks.md#suite-{suite})" if file else f"`{suite}`"
    lines = []
    measured = [(run, _suite_rows(run, suite, cases)) for run in runs]
    measured = [(run, rows) for run, rows in measured if rows]
    if not measured:
        lines += [f"!!! warning \"Not measured on a GPU yet\"\n    {NO_GPU}\n"]
        what = _first_paragraph(_docstring(file)) if file else ""
        lines += [f"What {where} measures, once a GPU run is committed: {what}", "",
                  "How to run it: [Benchmarks](../benchmarks.md#reproduce)."]
        return "\n".join(lines) + "\n"
    lines += [f"From {where}: speedup = torch ms / tritonn ms (above 1: tritonn faster), geometric mean "
              "over the cases of each dtype and mode.", "",
              "| run | GPU | dtype | mode | cases | speedup (geomean) | min | max |",
              "|---|---|---|---|--:|--:|--:|--:|"]
    for run, rows in measured:
        groups: dict[tuple, list[float]] = {}
        for row in rows:
            s = render.speedup(row)
            if s is not None and s > 0:
                groups.setdefault((row["dtype"], row["mode"]), []).append(s)
        for (dtype, mode), values in groups.items():
            lines.append(f"| {run.name} | {run.env('gpu')} | {dtype} | {mode} | {len(values)} "
                         f"| {_geomean(values):.2f}x | {min(values):.2f}x | {max(values):.2f}x |")
    return "\n".join(lines) + "\n"


def benchmarks_page(runs: list[Run], files: dict[str, Path], charts: dict[tuple[str, str], Path]) -> str:
    lines = [
        "# Benchmarks",
        "",
        "<!-- Generated by docs/gen_benchmarks.py from benchmarks/results/; edit the script, not this page. -->",
        "",
        "Every benchmark times tritonn and torch in the same process, on the same GPU and inputs, and "
        "reports the ratio: speedup = torch ms / tritonn ms, above 1 when tritonn is faster. Times are "
        "medians of `triton.testing.do_bench` (CUDA events, L2 flushed before each call); the first call "
        "(compilation, autotuning) is never timed. On a machine without a GPU the same files run tiny "
        "shapes through Triton's interpreter: a smoke test, never a measurement, and never shown here.",
        "",
        "## Results",
        "",
    ]
    if not runs:
        lines += [
            '!!! warning "No GPU results yet"',
            f"    {NO_GPU} No results are committed under `benchmarks/results/`; this page "
            "lists what the benchmarks measure and how to run them. Once a run is committed, "
            "[regenerating](#reproduce) this page adds its tables and charts, and a summary to each layer page.",
            "",
        ]
    for run in runs:
        lines += [f"### {run.name}", "",
                  f"- GPU: {run.env('gpu')}",
                  f"- versions: torch {run.env('torch')}, triton {run.env('triton')}, tritonn {run.env('tritonn')}",
                  f"- date: {run.date}"]
        if run.meta.get("commit"):
            lines.append(f"- commit: `{run.meta['commit']}`{' (dirty)' if run.meta.get('dirty') else ''}")
        lines += [f"- source: `{_relpath(run.source)}`", ""]
        for suite, rows in run.suites.items():
            lines += [f"#### {suite}", ""]
            png = charts.get((run.name, suite))
            if png is not None:
                lines += [f"![{suite} speedup on {run.env('gpu')}]({png.relative_to(DOCS).as_posix()})", ""]
            table = render.markdown(suite, rows, run.meta).splitlines()[1:]  # without its own title
            while table and not table[0].strip():
                table.pop(0)
            lines += table
            lines.append("")
    lines += [
        "## Reproduce { #reproduce }",
        "",
        "On a machine with a CUDA GPU, from the repository root (the benchmarks need `pytest-benchmark`, "
        "the charts `matplotlib`: `pip install -e \".[bench]\"`):",
        "",
        "```bash",
        "# the prepared GPU session: tests, benchmarks, tables; each step time-bounded",
        "bash benchmarks/gpu_check.sh benchmarks/results/<gpu>-<date>",
        "# or only the benchmarks (JSON, markdown table and chart per file)",
        "python -m tritonn bench --out benchmarks/results/<gpu>-<date>",
        "# one file, or a subset of the cases",
        "python -m pytest benchmarks/test_bench_linear.py -q -k bf16",
        "```",
        "",
        "Commit the run's folder, then regenerate this page and the layer pages' summaries:",
        "",
        "```bash",
        "python docs/gen_benchmarks.py",
        "```",
        "",
        "## What is benchmarked",
        "",
        "Each file under `benchmarks/` compares one family of layers with torch; the text below is the "
        "file's own docstring.",
        "",
    ]
    for suite, path in files.items():
        lines += [f"### `{path.name}` {{ #suite-{suite} }}", "", _as_markdown(_docstring(path)), ""]
    return "\n".join(lines).rstrip() + "\n"


def generate(results: Path = RESULTS, draw: bool = True) -> tuple[dict[Path, str], list[Path]]:
    """({markdown path: text}, [chart paths]); charts are drawn only when ``draw``."""
    runs = find_runs(results)
    files = suite_files()
    charts: dict[tuple[str, str], Path] = {}
    for run in runs:
        for suite, rows in run.suites.items():
            path = DOCS / "benchmarks" / run.name / f"{suite}_speedup.png"
            title = f"tritonn vs torch: {suite}\n{run.header()}"
            if not draw or render.chart(title, rows, path):
                charts[(run.name, suite)] = path
    pages = {DOCS / "benchmarks.md": benchmarks_page(runs, files, charts)}
    for page in LAYER_SUITES:
        pages[DOCS / "benchmarks" / "summary" / f"{page}.md"] = summary(page, runs, files)
    return pages, list(charts.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only compare with the committed files")
    parser.add_argument("--results", type=Path, default=RESULTS, help="results folder (default: benchmarks/results)")
    args = parser.parse_args(argv)
    pages, charts = generate(args.results, draw=not args.check)
    if args.check:
        stale = [p for p, text in pages.items() if not p.exists() or p.read_text() != text]
        stale += [p for p in charts if not p.exists()]
        for path in stale:
            print(f"out of date: {_relpath(path)} (run python docs/gen_benchmarks.py)", file=sys.stderr)
        return 1 if stale else 0
    for path, text in pages.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {_relpath(path)}")
    keep = set(charts)
    for old in (DOCS / "benchmarks").glob("*/*_speedup.png"):
        if old not in keep:
            old.unlink()
            print(f"removed {_relpath(old)}")
    for path in charts:
        print(f"wrote {_relpath(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
