#!/usr/bin/env bash
# PRISM-style next-event prediction on the chest-pain cohort of a MEDS dataset: ingest
# with prism_cardiac.toml, train, score beside the baselines (top-1/5/10 accuracy),
# generate trajectories and write them back as a MEDS dataset (generated/meds/).
# Usage: examples/prism_cardiac/run.sh MEDS_FOLDER [OUT]   (BUDGET=2m by default)
set -euo pipefail
HERE=$(dirname "$0")
MEDS=${1:?usage: run.sh MEDS_FOLDER [OUT]}
OUT=${2:-prism-cardiac-out}
BUDGET=${BUDGET:-2m}

# The MIMIC-IV demo's cohort is 5 subjects, all in the dataset's own train split: split
# them ourselves (1 tuning, 1 held out) and keep rare tokens, which the privacy threshold
# would otherwise hide in so small a cohort. On full MIMIC-IV drop these three options.
seqlm ingest meds "$MEDS" --config "$HERE/prism_cardiac.toml" --out "$OUT/corpus" \
    --option splits.use_source_split=false --option splits.held_out=0.2 \
    --option splits.tuning=0.2 --option scheme.min_entities=1
# No shape given: the recipe sizes the model for this small cohort (RUN/recipe.json).
seqlm train "$OUT/corpus" --out "$OUT/run" --budget "$BUDGET" --set train.cpu_threads=1
seqlm eval "$OUT/run" --corpus "$OUT/corpus" --out "$OUT/eval"
seqlm generate "$OUT/run" --corpus "$OUT/corpus" --sequence 0 --prompt-length 32 --n 5 \
    --max-tokens 128 --out "$OUT/generated"
echo "results in $OUT: eval/eval.json (top-1/5/10 beside the baselines), generated/"
