#!/usr/bin/env bash
# The prepared GPU session (../shared/GUIDE.md section 6): tests, then benchmarks, then tables.
#
#   bash benchmarks/gpu_check.sh OUTDIR        # from the repo root
#
# For a CUDA machine with torch and triton preinstalled (python3) and no network:
# nothing is installed, the repo is used from PYTHONPATH, plus .gpu-deps/ (pytest,
# pytest-benchmark, pytest-xdist, made by benchmarks/gpu_deps.sh on the CPU machine and
# carried to the GPU one) when it exists. Every step is bounded by
# `timeout` (tests 240 s + benchmarks 200 s + the three examples at GPU size, 150 s each at
# most + render; override with TESTS_TIMEOUT / BENCH_TIMEOUT / EXAMPLES_TIMEOUT; BENCH_K="bf16" passes -k "bf16" to the
# benchmarks to run a subset). A timeout sends SIGINT, so pytest still writes
# its summary and pytest-benchmark its JSON; the benchmarks also append one JSON line
# per case to OUTDIR/bench.jsonl, which render.py reads when bench.json is missing
# (run killed, or pytest-benchmark not installed there).
#
# The benchmarks run even when the tests fail. Exit status: the tests' when they
# failed, else 3 if the benchmarks, an example or the rendering failed, else 0.
# OUTDIR/status.txt records every step's exit code (124: timed out).

set -u -o pipefail

OUT=${1:?usage: bash benchmarks/gpu_check.sh OUTDIR}
PY=${PYTHON:-python3}
TESTS_TIMEOUT=${TESTS_TIMEOUT:-240}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-200}

mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# test tools the GPU machine may lack, installed here by benchmarks/gpu_deps.sh and carried along
if [ -d "$PWD/.gpu-deps" ]; then
    export PYTHONPATH="$PYTHONPATH:$PWD/.gpu-deps"
fi
export TRITONN_BENCH_JSONL="$OUT/bench.jsonl"
rm -f "$OUT/bench.jsonl" "$OUT/bench.json"

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)"
    nvidia-smi || echo "nvidia-smi failed"
    "$PY" - <<'EOF'
import sys
import torch, triton
print("python", sys.version.split()[0])
print("torch", torch.__version__, "cuda", torch.version.cuda)
print("triton", triton.__version__)
print("cuda available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("gpu", torch.cuda.get_device_name(), "capability", torch.cuda.get_device_capability())
for name in ("tritonn", "pytest", "pytest_benchmark", "matplotlib", "numpy"):
    try:
        module = __import__(name)
        print(name, getattr(module, "__version__", "?"), getattr(module, "__file__", ""))
    except ImportError as e:
        print(name, "MISSING", e)
EOF
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

echo "== tests (timeout ${TESTS_TIMEOUT}s)"
# correctness only: one GEMM config instead of tuning every test shape (the compile tier covers the rest)
# pytest-xdist, when there, spreads the kernels' first compiles over the CPU cores
workers=()
if "$PY" -c "import xdist" 2>/dev/null; then
    workers=(-n "${TEST_WORKERS:-8}")
fi
TRITONN_AUTOTUNE=0 timeout -s INT -k 20 "$TESTS_TIMEOUT" "$PY" -m pytest tests -q -x "${workers[@]}" 2>&1 \
    | tee "$OUT/tests.log"
tests_rc=${PIPESTATUS[0]}

echo "== benchmarks (timeout ${BENCH_TIMEOUT}s)"
bench_args=(-q)
if [ -n "${BENCH_K:-}" ]; then
    bench_args+=(-k "$BENCH_K")
fi
if "$PY" -c "import pytest_benchmark" 2>/dev/null; then
    bench_args+=(--benchmark-json "$OUT/bench.json" --benchmark-columns=median,rounds)
else
    echo "pytest-benchmark is not installed: results go to $OUT/bench.jsonl only" | tee "$OUT/bench.log"
fi
timeout -s INT -k 20 "$BENCH_TIMEOUT" "$PY" -m pytest benchmarks "${bench_args[@]}" 2>&1 | tee -a "$OUT/bench.log"
bench_rc=${PIPESTATUS[0]}

echo "== examples at GPU size, timed against plain torch (timeout ${EXAMPLES_TIMEOUT:-150}s each)"
examples_rc=0
for example in cnn char_lstm transformer; do
    timeout -s INT -k 10 "${EXAMPLES_TIMEOUT:-150}" "$PY" "examples/$example.py" --json "$OUT/example_$example.json" \
        2>&1 | tee "$OUT/example_$example.log"
    rc=${PIPESTATUS[0]}
    [ "$rc" -eq 0 ] || examples_rc=$rc
done

echo "== render"
results="$OUT/bench.json"
[ -s "$results" ] || results="$OUT/bench.jsonl"
timeout 60 "$PY" benchmarks/render.py "$results" --out "$OUT" 2>&1 | tee "$OUT/render.log"
render_rc=${PIPESTATUS[0]}

status="tests_rc=$tests_rc bench_rc=$bench_rc examples_rc=$examples_rc render_rc=$render_rc rendered_from=$(basename "$results")"
echo "$status" | tee "$OUT/status.txt"
if [ "$tests_rc" -ne 0 ]; then
    exit "$tests_rc"
fi
if [ "$bench_rc" -ne 0 ] || [ "$examples_rc" -ne 0 ] || [ "$render_rc" -ne 0 ]; then
    exit 3
fi
exit 0
