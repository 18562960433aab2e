"""The documentation site: every Python example runs, the site builds in strict mode,
and the generated pages (benchmarks, diagrams) are what their scripts write now.

Examples: every ```python block of docs/**/*.md and README.md runs, page by page, in
order, in one namespace per page, here in the test process (conftest.py has turned on
the interpreter and strict mode, so a tritonn call that would fall back to torch fails).
A block preceded by the comment ``<!-- docs-test: skip -->`` is not run; the marker is
for code that cannot run here (it needs something this process does not have), and
``MAX_SKIPPED`` keeps it rare.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

import tritonn

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SKIP = "<!-- docs-test: skip -->"
MAX_SKIPPED = 2

FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=indent)```[ \t]*$",
                   re.MULTILINE | re.DOTALL)


def code_blocks(text: str) -> list[dict]:
    """Every fenced block: language, code (dedented), first line number, skip marker."""
    blocks = []
    for m in FENCE.finditer(text):
        start = text.count("\n", 0, m.start("body")) + 1  # 1-based line of the code's first line
        before = text[:m.start()].rstrip("\n").splitlines()
        comments = []
        while before and before[-1].strip().startswith("<!--"):
            comments.append(before.pop().strip())
        info = m.group("info").strip()
        blocks.append({
            "lang": info.split()[0] if info else "",
            "code": textwrap.dedent(m.group("body")),
            "line": start,
            "skip": SKIP in comments,
        })
    return blocks


def pages() -> list[Path]:
    return [*sorted(DOCS.rglob("*.md")), ROOT / "README.md"]


def _id(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


@pytest.mark.parametrize("page", [p for p in pages() if any(b["lang"] == "python" for b in
                                                             code_blocks(p.read_text()))], ids=_id)
def test_examples_run(page):
    namespace = {"__name__": "__docs__"}
    for block in code_blocks(page.read_text()):
        if block["lang"] != "python" or block["skip"]:
            continue
        # pad with newlines so that a traceback points at the line in the Markdown file
        code = compile("\n" * (block["line"] - 1) + block["code"], str(page), "exec")
        exec(code, namespace)


def test_skip_marker_is_rare():
    skipped = [f"{_id(p)}:{b['line']}" for p in pages() for b in code_blocks(p.read_text())
               if b["skip"] and b["lang"] == "python"]
    assert len(skipped) <= MAX_SKIPPED, f"too many examples not run: {skipped}"


def test_fence_parser_sees_indented_blocks_and_markers():
    text = ("Text\n\n<!-- docs-test: skip -->\n```python\nraise SystemExit\n```\n\n!!! note\n    ```python\n"
            "    x = 1\n    ```\n```bash\nls\n```\n")
    blocks = code_blocks(text)
    assert [(b["lang"], b["skip"], b["line"]) for b in blocks] == [("python", True, 5), ("python", False, 10),
                                                                   ("bash", False, 13)]
    assert blocks[1]["code"] == "x = 1\n"


# ---------------------------------------------------------------------------- the site


def _mkdocs(config: Path, site: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    env.pop("TRITON_INTERPRET", None)
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config),
                           "--site-dir", str(site)], cwd=config.parent, env=env, capture_output=True, text=True,
                          timeout=600)


def test_site_builds_strict(tmp_path):
    proc = _mkdocs(ROOT / "mkdocs.yml", tmp_path / "site")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    for page in ("index.html", "layers/lstm/index.html", "benchmarks/index.html", "api/functional/index.html"):
        assert (tmp_path / "site" / page).is_file(), page
    lstm = (tmp_path / "site" / "layers/lstm/index.html").read_text()
    assert "lstm_layout.svg" in lstm and "h_0" in lstm


@pytest.mark.parametrize("broken", ["[gone](missing.md)", "[gone](#no-such-heading)",
                                    "[gone][tritonn.no_such_name]"], ids=["link", "anchor", "reference"])
def test_strict_build_fails_on_a_broken_link(tmp_path, broken):
    """The project's validation settings make each kind of broken link an error."""
    settings = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    config = {"site_name": "t", "strict": True, "validation": settings["validation"], "plugins": ["autorefs"]}
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "index.md").write_text(f"# Title\n\nSee {broken}.\n")
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(config))
    proc = _mkdocs(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert proc.returncode != 0, proc.stderr[-3000:]
    (tmp_path / "docs" / "index.md").write_text("# Title\n\nSee [it](#title).\n")
    assert _mkdocs(tmp_path / "mkdocs.yml", tmp_path / "site").returncode == 0


# ---------------------------------------------------------------------------- generated pages


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"docs_{name}", DOCS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


def test_benchmarks_page_is_current():
    """docs/benchmarks.md and the layer summaries are what docs/gen_benchmarks.py writes from
    benchmarks/results/ now (regenerate: python docs/gen_benchmarks.py)."""
    gen = _load("gen_benchmarks")
    pages, charts = gen.generate(draw=False)
    for path, text in pages.items():
        assert path.is_file() and path.read_text() == text, f"{_id(path)} is stale: run python docs/gen_benchmarks.py"
    for path in charts:
        assert path.is_file(), f"{_id(path)} is missing: run python docs/gen_benchmarks.py"
    if not gen.find_runs():
        assert "No GPU results yet" in pages[DOCS / "benchmarks.md"]


def test_benchmarks_page_from_a_gpu_run(tmp_path):
    """With a run in the results folder, the page shows its GPU, versions and date, and the
    layer summaries its speedups; CPU smoke records are left out."""
    gen = _load("gen_benchmarks")
    run = tmp_path / "H200-2026-01-01"
    run.mkdir()
    env = dict(gpu="NVIDIA H200", torch="2.13.0", triton="3.9.0", tritonn="0.1.0", date="2026-01-01T00:00:00")
    lines = []
    for gpu in ("NVIDIA H200", "cpu (interpreter smoke)"):
        for impl, ms in (("torch", 2.0), ("tritonn", 1.0)):
            lines.append(dict(env, gpu=gpu, impl=impl, ms=ms, tflops=1.0, flops=1e9, first_call_s=0.1, case="linear",
                              shape="8x8->8", dtype="bf16", mode="forward",
                              test="benchmarks/test_bench_linear.py::test_linear[x]"))
    import json
    (run / "bench.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    pages, _ = gen.generate(tmp_path, draw=False)
    page = pages[DOCS / "benchmarks.md"]
    assert "NVIDIA H200" in page and "torch 2.13.0, triton 3.9.0, tritonn 0.1.0" in page and "2026-01-01" in page
    assert "interpreter smoke" not in page
    assert "| H200-2026-01-01 | NVIDIA H200 | bf16 | forward | 1 | 2.00x |" in pages[DOCS / "benchmarks/summary/linear.md"]


def test_diagrams_are_current():
    gen = _load("gen_diagrams")
    for path, text in gen.generate().items():
        assert path.is_file() and path.read_text() == text, f"{_id(path)} is stale: run python docs/gen_diagrams.py"


def test_every_layer_is_documented():
    index = (DOCS / "index.md").read_text()
    layer_pages = "".join(p.read_text() for p in (DOCS / "layers").glob("*.md"))
    api = (DOCS / "api" / "tritonn.md").read_text()
    for name in tritonn.nn.__all__:
        assert name in index, f"docs/index.md: no row for tritonn.{name}"
        assert f"tritonn.{name}" in layer_pages, f"docs/layers/: no page for tritonn.{name}"
        assert f"::: tritonn.{name}\n" in api, f"docs/api/tritonn.md: no entry for tritonn.{name}"
    for name in tritonn.functional.__all__:
        assert name in layer_pages, f"docs/layers/: tritonn.functional.{name} is not mentioned"


def test_no_torch_state_leaks_from_examples():
    """Examples must leave the process as they found it (they run inside the test suite)."""
    assert torch.get_default_dtype() == torch.float32
    assert not torch.is_autocast_enabled("cpu")
    assert not (torch.distributed.is_available() and torch.distributed.is_initialized())
