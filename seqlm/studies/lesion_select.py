"""Per group, the fine-tuned run or the pool it started from, chosen on the group's
tuning split.

`seqlm lesion --per-bird --init POOL` fine-tunes one model per bird from the pool. A
bird with little song (finch bird1: 81 train bouts, 11 tuning bouts) cannot show on its
tuning split that fine-tuning helped: its tuning loss moves within the noise of 11 bouts
while the fine-tuned model drifts from the pool on held-out song (1.648 -> 1.69). So the
fine-tuned run is kept only where it is better than the pool on the bird's own tuning
bouts beyond the paired bootstrap interval (cross-entropy, resampled by bout); otherwise
the bird is scored with the pool, which has its bird's conditioning token and was
trained on its bouts too. The choice reads the tuning split only, never the held-out
split that is scored, and `lesion.json` records it under `fine_tune_choice`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from seqlm.corpus import load_corpus
from seqlm.evaluation.model_scorer import scorer_from_run
from seqlm.evaluation.paired import ComparisonOptions, paired_comparison, resampling_units

FINE_TUNED, POOL = "fine-tuned", "pool"


@dataclass
class GroupChoice:
    """Which run scores one group, and the tuning-split comparison that chose it."""

    group: str = field(metadata={"help": "the group (bird)"})
    chosen: str = field(metadata={"help": "'fine-tuned' or 'pool'"})
    run: str = field(metadata={"help": "the run folder that scores the group"})
    tuning_ce_fine_tuned: float = field(metadata={"help": "fine-tuned run, nats per target"})
    tuning_ce_pool: float = field(metadata={"help": "pool, nats per target"})
    ce_difference: float = field(metadata={"help": "fine-tuned minus pool"})
    ci95: tuple[float, float] = field(metadata={"help": "paired bootstrap interval"})
    units: int = field(metadata={"help": "tuning sequences (or entities) resampled"})

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "ci95": list(self.ci95)}

    def sentence(self) -> str:
        low, high = self.ci95
        verdict = "better" if high < 0 else "not better"
        kept = "kept" if self.chosen == FINE_TUNED else "not kept: the pool scores it"
        return (
            f"[{self.group}] fine-tuned run {verdict} than the pool on its {self.units} "
            f"tuning sequences: cross-entropy {self.ce_difference:+.4f} "
            f"[{low:+.4f}, {high:+.4f}] nats; {kept}"
        )


def choose_fine_tuned_or_pool(
    group: str,
    tuned: str | Path,
    pool: str | Path,
    group_corpus: str | Path,
    *,
    tuning_split: str = "tuning",
    device: str = "auto",
    checkpoint: str = "best",
) -> GroupChoice:
    """The fine-tuned run where it beats the pool on the group's tuning split beyond the
    95% paired bootstrap interval, else the pool (see the module docstring)."""
    corpus = load_corpus(Path(group_corpus))
    rows = corpus.index.filter(pl.col("split") == tuning_split)
    sequences = [np.asarray(corpus.sequence(int(i))) for i in rows["seq_id"].to_list()]
    context_only = corpus.vocabulary.condition_ids
    scored = {}
    for name, run in ((FINE_TUNED, tuned), (POOL, pool)):
        scorer, _ = scorer_from_run(run, name=name, checkpoint=checkpoint, device=device)
        scored[name] = scorer.score(sequences).without_tokens(context_only)
    units, unit = resampling_units(rows)
    comparison = paired_comparison(
        scored[FINE_TUNED],
        scored[POOL],
        units,
        unit=unit,
        options=ComparisonOptions(seed=0),
        names=(FINE_TUNED, POOL),
    )
    ce = comparison.metrics["cross_entropy"]
    chosen = FINE_TUNED if ce.high < 0 else POOL
    return GroupChoice(
        group=group,
        chosen=chosen,
        run=str(tuned if chosen == FINE_TUNED else pool),
        tuning_ce_fine_tuned=ce.model,
        tuning_ce_pool=ce.baseline,
        ce_difference=ce.difference,
        ci95=(ce.low, ce.high),
        units=comparison.units,
    )
