"""Per-entity sums of one lesion comparison: each scored bout's targets, and the log-loss
and expected top-1 hits of the model and of its group's own n-gram.

`seqlm lesion-splits` pools these over several entity-level splits
(`seqlm.studies.lesion_splits`). They stay in memory: entity names can be identifiers
(clinical subjects), so no seqlm output writes them.
"""

from __future__ import annotations

import polars as pl

from seqlm.errors import ConfigError

KEYS = ("group", "condition", "entity")
COLUMNS = (*KEYS, "targets", "model_nats", "own_ngram_nats", "model_top1", "own_ngram_top1")


def bout_sums(tokens: pl.DataFrame, own_ngram: str, model: str = "model") -> pl.DataFrame:
    """From a lesion token table (`model`, `log_prob`, `top1`, `group_name`,
    `condition_name`, `entity`; one row per target), one row per (group, condition,
    entity) with the columns of `COLUMNS`. `own_ngram` names the scorer that is each
    group's own n-gram (fitted on that group's pre-lesion train split)."""
    sums = (
        tokens.filter(pl.col("model").is_in([model, own_ngram]))
        .rename({"group_name": "group", "condition_name": "condition"})
        .group_by("model", *KEYS)
        .agg(
            pl.len().alias("targets"),
            (-pl.col("log_prob").sum()).alias("nats"),
            pl.col("top1").sum().alias("top1"),
        )
    )
    mine = sums.filter(pl.col("model") == model).drop("model")
    own = sums.filter(pl.col("model") == own_ngram).drop("model")
    joined = mine.join(own, on=list(KEYS), how="full", suffix="_own", coalesce=True)
    paired = joined["targets"] == joined["targets_own"]  # null where one of them is missing
    if joined.height != mine.height or not paired.fill_null(False).all():
        raise ConfigError(f"{model!r} and {own_ngram!r} did not score the same targets")
    return joined.select(
        *KEYS,
        "targets",
        pl.col("nats").alias("model_nats"),
        pl.col("nats_own").alias("own_ngram_nats"),
        pl.col("top1").alias("model_top1"),
        pl.col("top1_own").alias("own_ngram_top1"),
    ).sort(list(KEYS))
