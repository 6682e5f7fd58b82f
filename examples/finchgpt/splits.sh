#!/usr/bin/env bash
# The FinchGPT study of run.sh (steps 1-3) repeated over several entity-level splits of
# the bundled finch song, then pooled per bird with `seqlm lesion-splits`: a bird with
# little song (bird1: 10 held-out bouts a split) gets every bout that any split held out.
# Each split is ingested again with its own seed, so its vocabulary, n-grams and models
# see only that split's train bouts.
# Usage: examples/finchgpt/splits.sh [OUT]
#   SEEDS="0 1 2 3 4" (split seeds), BUDGET=3Mtok (pooled model), BIRD_BUDGET=200ktok
set -euo pipefail
OUT=${1:-finchgpt-splits}
SEEDS=${SEEDS:-0 1 2 3 4}
BUDGET=${BUDGET:-3Mtok}
BIRD_BUDGET=${BIRD_BUDGET:-200ktok}
HERE=$(dirname "$0")

POOLED=() PER_BIRD=()
for SEED in $SEEDS; do
    # run.sh's steps 1-3 on this split: ingest, condition, pool, per-bird flow
    SPLIT_SEED=$SEED ATTENTION=0 BUDGET=$BUDGET BIRD_BUDGET=$BIRD_BUDGET \
        bash "$HERE/run.sh" "$OUT/split$SEED"
    POOLED+=("$OUT/split$SEED/lesion-pool") PER_BIRD+=("$OUT/split$SEED/lesion")
done

# Each bird against its own n-gram, pooled over the splits (interval resampled by bout).
seqlm lesion-splits "${POOLED[@]}" --out "$OUT/pooled-model"
seqlm lesion-splits "${PER_BIRD[@]}" --out "$OUT/per-bird-models"
echo "results in $OUT: pooled-model/ and per-bird-models/ (lesion_splits.json, lesion_splits.png)"
