#!/usr/bin/env bash
# FinchGPT-style study on the bundled Bengalese finch lesion data: one GPT pooled over the
# 7 birds (each bout opens with its bird's conditioning token), then one model per bird
# fine-tuned from the pool; held-out pre vs post-lesion perplexity beside the per-bird
# n-grams, attention-distance statistics and bird 1's effective context length.
# Usage: examples/finchgpt/run.sh [OUT]
#   BUDGET=3Mtok (pooled model), BIRD_BUDGET=200ktok (each bird's fine-tuning),
#   SPLIT_SEED=0 (seed of the entity-level split), ATTENTION=1 (0: skip step 4)
set -euo pipefail
OUT=${1:-finchgpt-out}
BUDGET=${BUDGET:-3Mtok}
BIRD_BUDGET=${BIRD_BUDGET:-200ktok}
SPLIT_SEED=${SPLIT_SEED:-0}
ATTENTION=${ATTENTION:-1}
ONE_THREAD=(--set train.cpu_threads=1)
DATA=$(python -c "from seqlm.datasets import finch_lesions_path; print(finch_lesions_path())")

# 1. All birds, pre and post lesion; one bout per entity, entity-level splits; then each
#    bout's bird as a conditioning token (context only: never a target, never scored).
seqlm ingest birdsong-strings "$DATA"/bird?_prelesion "$DATA"/bird?_postlesion --out "$OUT/ingested" \
    --option splits.seed="$SPLIT_SEED"
seqlm corpus condition "$OUT/ingested" --on group --out "$OUT/corpus"
seqlm subset "$OUT/corpus" --where condition=pre --out "$OUT/pre"

# 2. The pooled model: no shape given, so the recipe chooses it for the budget.
seqlm train "$OUT/pre" --out "$OUT/pool" --budget "$BUDGET" "${ONE_THREAD[@]}"
#    Scored against the pooled and the per-bird n-grams, with one interval per bird too.
seqlm lesion "$OUT/corpus" --out "$OUT/lesion-pool" --run "$OUT/pool"

# 3. One model per bird, fine-tuned from the pool on that bird's pre-lesion train bouts;
#    a bird whose fine-tuned model is not better than the pool on its tuning bouts is
#    scored with the pool (lesion/lesion.json: fine_tune_choice). The `[all, pre]` line
#    compares every bird's model with its own n-gram over all birds' held-out bouts.
seqlm lesion "$OUT/corpus" --out "$OUT/lesion" --per-bird --init "$OUT/pool" \
    --budget "$BIRD_BUDGET" "${ONE_THREAD[@]}"

# 4. Attention statistics and effective context length of bird 1's model.
if [ "$ATTENTION" = 0 ]; then
    echo "results in $OUT: lesion-pool/ and lesion/ (lesion.json, lesion.png)"
    exit 0
fi
seqlm attention stats "$OUT/lesion/run-bird1" --corpus "$OUT/lesion/pre-bird1" --out "$OUT/attention-bird1"
seqlm attention span "$OUT/lesion/run-bird1" --corpus "$OUT/lesion/pre-bird1" \
    --windows 1,2,4,8,16,32,64,128 --bootstrap 200 --out "$OUT/span-bird1"
echo "results in $OUT: lesion-pool/ and lesion/ (lesion.json, lesion.png), attention-bird1/, span-bird1/"
