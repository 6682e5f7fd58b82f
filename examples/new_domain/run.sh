#!/usr/bin/env bash
# A new domain from a plain CSV, start to finish: the generic `tabular` adapter with a
# TOML mapping, a small model, evaluation beside the baselines, a few generated runs.
# Usage: examples/new_domain/run.sh [OUT]   (STEPS=... to change the training budget)
set -euo pipefail
HERE=$(dirname "$0")
OUT=${1:-new-domain-out}
STEPS=${STEPS:-300}

seqlm ingest tabular "$HERE/events.csv" --config "$HERE/mapping.toml" --out "$OUT/corpus"
seqlm corpus info "$OUT/corpus"
seqlm train "$OUT/corpus" --out "$OUT/run" --set model.layers=2 --set model.width=64 \
    --set model.context=256 --set train.steps="$STEPS"
seqlm eval "$OUT/run" --corpus "$OUT/corpus" --out "$OUT/eval"
seqlm generate "$OUT/run" --corpus "$OUT/corpus" --n 3 --max-tokens 64 --out "$OUT/generated"
echo "results in $OUT: eval/eval.json, generated/"
