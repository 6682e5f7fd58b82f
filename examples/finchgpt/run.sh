#!/usr/bin/env bash
# FinchGPT-style study on the bundled Bengalese finch lesion data: one model per bird
# trained on pre-lesion song, pre vs post-lesion perplexity beside per-bird n-grams,
# attention-distance statistics and the effective context length of each bird's model.
# Usage: examples/finchgpt/run.sh [OUT]   (STEPS=... to change the training budget)
set -euo pipefail
OUT=${1:-finchgpt-out}
STEPS=${STEPS:-600}
CONFIG=$(dirname "$0")/finchgpt.toml
DATA=$(python -c "from seqlm.datasets import finch_lesions_path; print(finch_lesions_path())")

# 1. All birds, pre and post lesion; one bout per entity, entity-level splits.
seqlm ingest birdsong-strings "$DATA"/bird?_prelesion "$DATA"/bird?_postlesion --out "$OUT/corpus"

# 2. One model per bird on its pre-lesion train bouts, then held-out pre vs post.
seqlm lesion "$OUT/corpus" --out "$OUT/lesion" --per-bird --config "$CONFIG" --set train.steps="$STEPS"

# 3. Attention statistics and effective context length of bird 1's model.
seqlm attention stats "$OUT/lesion/run-bird1" --corpus "$OUT/lesion/pre-bird1" --out "$OUT/attention-bird1"
seqlm attention span "$OUT/lesion/run-bird1" --corpus "$OUT/lesion/pre-bird1" \
    --windows 1,2,4,8,16,32,64,128 --bootstrap 200 --out "$OUT/span-bird1"
echo "results in $OUT: lesion/lesion.json, lesion/lesion.png, attention-bird1/, span-bird1/"
