"""``python -m tritonn {info,check,bench}``.

Without a GPU the kernels must run under Triton's interpreter, which has to be on
before tritonn is imported; when it is not, the command re-executes itself with
``TRITON_INTERPRET=1`` (the package import above this file has already decorated
the kernels for compilation).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
from pathlib import Path

import torch
import triton

import tritonn
from tritonn import runtime


def _ensure_a_triton_path() -> None:
    if not torch.cuda.is_available() and not runtime.INTERPRETING:
        env = dict(os.environ, TRITON_INTERPRET="1")
        os.execve(sys.executable, [sys.executable, "-m", "tritonn", *sys.argv[1:]], env)


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def info(args) -> int:
    device = _device()
    path = "Triton, compiled" if device == "cuda" else ("Triton interpreter" if runtime.INTERPRETING else
                                                       "torch fallback (set TRITON_INTERPRET=1)")
    rows = [
        ("tritonn", tritonn.__version__),
        ("torch", torch.__version__),
        ("triton", triton.__version__),
        ("python", platform.python_version()),
        ("device", torch.cuda.get_device_name() if device == "cuda" else f"cpu ({os.cpu_count()} cores)"),
        ("interpreter", "on" if runtime.INTERPRETING else "off"),
        ("strict", "on" if runtime.strict() else "off"),
        (f"a call on {device} tensors runs", path),
        ("fp32 matmul", "TF32" if runtime.tf32_enabled() else "IEEE fp32"),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    return 0


def check(args) -> int:
    from tritonn.check import run

    device = _device()
    small = device != "cuda" or args.small
    print(f"tritonn check on {device} ({'small' if small else 'full'} shapes; "
          f"{'compiled' if device == 'cuda' else 'interpreter'})")
    results = run(device, small)
    width = max(len("layer"), *(len(r["layer"]) for r in results))
    print(f"{'layer':<{width}} {'dtype':<9} {'max error':>10} {'err/bound':>10} {'time s':>8}  result")
    for r in results:
        print(f"{r['layer']:<{width}} {r['dtype']:<9} {r['max_error']:>10.2e} {r['worst_margin']:>10.2f} "
              f"{r['seconds']:>8.2f}  {'pass' if r['ok'] else 'FAIL'}")
        if not r["ok"]:
            print("    " + r["detail"])
    failed = sum(not r["ok"] for r in results)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


def bench(args) -> int:
    root = Path(__file__).resolve().parents[1]
    bench_dir = root / "benchmarks"
    if not bench_dir.is_dir():
        print("tritonn bench: needs the repository checkout (benchmarks/ next to tritonn/)", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = out / "bench.json"
    select = ["-k", args.k] if args.k else []
    # a pytest of its own: not a worker of a pytest-xdist run this may be called from, whose
    # environment would make pytest-benchmark skip writing the JSON
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")}
    code = subprocess.call([sys.executable, "-m", "pytest", str(bench_dir), "-q", "-p", "no:cacheprovider",
                            f"--benchmark-json={result}", *select], cwd=root, env=env)
    if code != 0:
        return code
    return subprocess.call([sys.executable, str(bench_dir / "render.py"), str(result), "--out", str(out)], cwd=root)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tritonn", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="versions, device, and where a call runs").set_defaults(fn=info)
    p = sub.add_parser("check", help="every layer against its torch twin, forward and backward")
    p.add_argument("--small", action="store_true", help="small shapes on GPU too")
    p.set_defaults(fn=check)
    p = sub.add_parser("bench", help="run the benchmarks and print the comparison table")
    p.add_argument("--out", default="benchmarks/results/latest", help="where the JSON, table and plot go")
    p.add_argument("-k", default="", help="only the benchmark cases matching this pytest -k expression")
    p.set_defaults(fn=bench)
    args = parser.parse_args(argv)
    if args.command != "info":
        _ensure_a_triton_path()
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
