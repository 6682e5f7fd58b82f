"""Per-entity sums of one lesion comparison: for each scored bout, the `unit_sums`
columns (targets, log-loss, top-1 hits, ...) of the model and of its group's own n-gram.

`seqlm lesion-splits` pools these over several entity-level splits
(`seqlm.studies.lesion_splits`). They stay in memory: entity names can be identifiers
(clinical subjects), so no seqlm output writes them.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import polars as pl

from seqlm.evaluation.paired import UNIT_SUMS, unit_sums
from seqlm.evaluation.scores import TokenScores

KEYS = ("group", "condition", "entity")
MODEL_SUMS = tuple(f"model_{c}" for c in UNIT_SUMS)
OWN_SUMS = tuple(f"own_ngram_{c}" for c in UNIT_SUMS)
COLUMNS = (*KEYS, *MODEL_SUMS, *OWN_SUMS)


def bout_sums(
    index: pl.DataFrame,
    scores: Mapping[str, TokenScores],
    own_ngram: str,
    *,
    group: str,
    condition: str,
    model: str = "model",
) -> pl.DataFrame:
    """One row per (group, condition, entity) of `index` (row i describes sequence i of
    the scores) with the columns of `COLUMNS`. `own_ngram` names the scorer that is each
    group's own n-gram (fitted on that group's pre-lesion train split)."""
    names, entity_of_sequence = np.unique(
        index["entity"].cast(pl.String).to_numpy().astype(str), return_inverse=True
    )
    sequence = scores[model].sequence
    target_entity = entity_of_sequence.reshape(-1)[sequence]
    target_condition = index[condition].cast(pl.String).to_numpy()[sequence]
    group_of = dict(zip(index["entity"].cast(pl.String), index[group].cast(pl.String), strict=True))
    frames = []
    for name in sorted(set(target_condition.tolist())):
        keep = target_condition == name
        mine = unit_sums(target_entity, scores[model], keep)
        own = unit_sums(target_entity, scores[own_ngram], keep)
        present = mine[:, 0] > 0
        entities = names[: mine.shape[0]][present]
        columns = {
            "group": [group_of[e] for e in entities],
            "condition": [name] * len(entities),
            "entity": entities.tolist(),
        }
        columns |= dict(zip(MODEL_SUMS, mine[present].T, strict=True))
        columns |= dict(zip(OWN_SUMS, own[present].T, strict=True))
        frames.append(pl.DataFrame(columns, schema_overrides={"condition": pl.String}))
    return pl.concat(frames, how="vertical").sort(list(KEYS))
