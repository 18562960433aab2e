#!/usr/bin/env bash
# Pure-Python test tools for the GPU machine, which has torch and triton but maybe not
# these, and no network. Run on the CPU machine before a GPU session; carry .gpu-deps
# (git-ignored) with the run: gpu_check.sh puts it on PYTHONPATH.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .gpu-deps
python3 -m pip install -q --no-deps --target .gpu-deps \
    pytest pluggy iniconfig packaging pytest-benchmark py-cpuinfo pytest-xdist execnet
du -sh .gpu-deps
