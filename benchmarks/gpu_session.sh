#!/bin/bash
# The device checks of a session that has a GPU: the `cuda`-marked tests, then the GPU
# benchmark rows, each under its own time limit so that what finished comes back.
#
#   bash benchmarks/gpu_session.sh [all|tests|bench]     # logs and JSON under $OUT
#
# Where the GPU machine lacks seqlm's dependencies (polars there), carry wheels in .whl/
# (see the device notes) and this installs them; the shared data is read from
# ../shared, so carry a copy of it and link it (SHARED=path). Limits in seconds:
# TEST_S, TRAIN_S, KERN_S. Session 16 (H200) needed about 160 s for the tests with -n 8,
# about 10 s per bench_train measurement, and over 40 s for FlexAttention's first compile.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 3
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1
if [ -n "${SHARED:-}" ] && [ ! -e ../shared ]; then ln -sfn "$(realpath "$SHARED")" ../shared; fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/env.log"
python3 -c "import torch, polars, triton; print('torch', torch.__version__, 'polars', \
polars.__version__, 'triton', triton.__version__)" 2>&1 | tee -a "$OUT/env.log"
STAGE=${1:-all}
if [ "$STAGE" = all ] || [ "$STAGE" = tests ]; then
  timeout "${TEST_S:-300}" python3 -m pytest -m cuda tests -p no:cacheprovider -v -n 8 \
    --timeout 200 -rfE 2>&1 | tee "$OUT/cuda_tests.log" | tail -n 15
fi
if [ "$STAGE" = all ] || [ "$STAGE" = bench ]; then
  timeout "${TRAIN_S:-240}" python3 benchmarks/bench_train.py --device cuda --contexts 64,256 \
    --repeats 3 --steps 200 --no-compile --json "$OUT/bench_train_cuda.json" 2>&1 |
    tee "$OUT/bench_train.log" | tail -n 6
  timeout "${KERN_S:-300}" python3 benchmarks/bench_kernels.py --device cuda --repeats 5 \
    --timeout 150 --json "$OUT/bench_kernels_cuda.json" 2>&1 | tee "$OUT/bench_kernels.log" |
    tail -n 25
fi
