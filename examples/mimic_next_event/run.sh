#!/usr/bin/env bash
# Next-event prediction on the MIMIC-IV demo (MEDS): ingest with the default clinical
# tokens, train the recipe's GPT for a budget, score the dataset's own held-out subjects
# beside the n-grams and an LSTM trained with the same settings (perplexity, top-1/5/10).
# Usage: examples/mimic_next_event/run.sh MEDS_FOLDER [OUT]   (BUDGET=1Mtok by default)
# A budget in tokens gives the same model and result on a busy or an idle machine.
set -euo pipefail
MEDS=${1:?usage: run.sh MEDS_FOLDER [OUT]}
OUT=${2:-mimic-next-event-out}
BUDGET=${BUDGET:-1Mtok}

# The dataset's own 80/10/10 subject split (train / tuning / held_out).
seqlm ingest meds "$MEDS" --out "$OUT/corpus"
# No shape given: the recipe chooses it from the corpus and the budget (RUN/recipe.json).
# One torch thread: on a shared or small CPU it is as fast as two and disturbs less.
seqlm train "$OUT/corpus" --out "$OUT/run" --budget "$BUDGET" --set train.cpu_threads=1
# The LSTM baseline reads the same budget with the run's training settings.
seqlm eval "$OUT/run" --corpus "$OUT/corpus" --out "$OUT/eval" --baselines ngram,lstm
# The same, with what each subject's own sequence says (a lab's earlier values, codes
# already listed at the current time) mixed into the model, the n-gram and the LSTM
# alike (fitted on the tuning subjects; the LSTM is reused).
seqlm eval "$OUT/run" --corpus "$OUT/corpus" --out "$OUT/eval-sequence-history" \
    --baselines ngram,lstm --sequence-history
echo "results in $OUT: run/recipe.json, eval/eval.json (model beside the n-grams and the LSTM),"
echo "eval-sequence-history/eval.json (the same with each subject's sequence history)"
