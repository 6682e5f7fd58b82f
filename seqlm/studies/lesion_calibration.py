"""Temperature scaling of the lesion study's models, fitted on the tuning split.

A model trained on little song (finch bird1: 81 train bouts) can be confidently wrong on
held-out bouts that hold a motif its train bouts never do (one bird1 bout pays 12.1 nats
more than the n-gram on two such targets). One temperature per scored run (per bird when
each bird has its own, or the pool's on every bird), fitted on the pre-lesion tuning
sequences that run covers (`seqlm.evaluation.calibration.fit_temperature`, conditioning
targets left out), softens or sharpens its predictions before the held-out and
post-lesion song are scored. The fit reads the tuning split only, as the n-gram's order
choice does, and `lesion.json` records it under `temperature_fit`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

from seqlm.evaluation.calibration import fit_temperature
from seqlm.evaluation.model_scorer import ModelScorer

FIT_ELEMENTS = 2**25  # logits held for the fit: targets x vocabulary


def calibrate_on_tuning(
    scorer: ModelScorer,
    corpus: Any,
    tuning_rows: pl.DataFrame,
    context_only_ids: Sequence[int] | np.ndarray = (),
    name: str = "all",
) -> dict[str, Any]:
    """Fit the scorer's temperature on `tuning_rows`' sequences and set it; returns what
    `lesion.json` records (the temperature, the tuning targets, the mean NLL before and
    after), or why no temperature was fitted (the scorer is then left at T = 1)."""
    sequences = [np.asarray(corpus.sequence(int(i))) for i in tuning_rows["seq_id"].to_list()]
    # at most ~128 MB of float32 logits: evenly spaced targets beyond that
    rows = max(1, FIT_ELEMENTS // int(scorer.model.config.vocab_size))
    logits, true_ids = (
        scorer.target_logits(sequences, context_only_ids, max_rows=rows) if sequences else ([], [])
    )
    if len(true_ids) == 0:
        scorer.temperature = 1.0
        reason = "no tuning targets: not calibrated (T = 1)"
        return {"temperature": 1.0, "skipped": reason, "sentence": f"[{name}] {reason}"}
    fit = fit_temperature(logits, true_ids)
    scorer.temperature = fit.temperature
    sentence = (
        f"[{name}] temperature {fit.temperature:.3f} fitted on {tuning_rows.height} tuning "
        f"sequences ({fit.tokens:,} targets): NLL {fit.nll_before:.4f} -> {fit.nll_after:.4f}"
    )
    return {**fit.to_dict(), "sequences": tuning_rows.height, "sentence": sentence}
