"""Per-token tables and their aggregations: cross-entropy, perplexity, top-k accuracy.

`token_table` turns `TokenScores` into a polars frame, one row per predicted token, with
the columns every breakdown needs: the index row of the token's sequence (split, group,
entity, condition ...), the token's kind, a position bucket, and whether it repeats the
token before it. `summarize(table, by=[...])` is then one group_by; `breakdowns` gives
the standard set. Averages are over tokens (not sequences), as perplexity is defined.

Repeats are reported apart because a token that copies the previous one (a syllable
held in a trill, a lab re-measured) is easy to predict and inflates next-token scores.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import polars as pl

from seqlm.errors import ConfigError
from seqlm.evaluation.scores import TokenScores
from seqlm.vocabularies.scheme import (
    PART_SEPARATOR,
    SPECIAL_TOKENS,
    TIME_TOKEN_PREFIX,
    UNK,
    VALUE_TOKEN_PREFIX,
)

TOP_K: tuple[int, ...] = (1, 5, 10)
_KIND_UNK = PART_SEPARATOR + UNK
# Lower edges of the position buckets (position 1 is the first predicted token);
# doubling widths, since early positions behave differently and late ones are few.
POSITION_EDGES: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


def token_kinds(tokens: Sequence[str], plain_kind: str | None = None) -> list[str]:
    """The kind of each token string (in id order), for the by-kind breakdown.

    Special tokens are `special`, `[TIME//...]` tokens `TIME`, `VALUE//Q7` tokens
    `VALUE`, `[UNK]` is `UNK`; any other token's kind is its first `//` part (`LAB` for
    `LAB//51003//ng/mL//Q3`, `syllable` for `syllable//[UNK]`). A token without a `//`
    (a bare syllable label) gets `plain_kind`; by default the kind of the vocabulary's
    only per-kind unknown when it has exactly one (birdsong: `syllable`), else `event`.
    """
    if plain_kind is None:
        unknown_kinds = {t.split(PART_SEPARATOR, 1)[0] for t in tokens if t.endswith(_KIND_UNK)}
        plain_kind = unknown_kinds.pop() if len(unknown_kinds) == 1 else "event"
    kinds = []
    for token in tokens:
        if token == UNK:
            kinds.append("UNK")
        elif token in SPECIAL_TOKENS:
            kinds.append("special")
        elif token.startswith(TIME_TOKEN_PREFIX):
            kinds.append("TIME")
        elif token.startswith(VALUE_TOKEN_PREFIX):
            kinds.append("VALUE")
        elif PART_SEPARATOR in token:
            kinds.append(token.split(PART_SEPARATOR, 1)[0])
        else:
            kinds.append(plain_kind)
    return kinds


def position_bucket_labels(edges: Sequence[int] = POSITION_EDGES) -> list[str]:
    """`1`, `2-3`, `4-7`, ..., `4096+` for the default edges."""
    labels = []
    for low, high in zip(edges, [*edges[1:], None], strict=True):
        if high is None:
            labels.append(f"{low}+")
        elif high - low == 1:
            labels.append(str(low))
        else:
            labels.append(f"{low}-{high - 1}")
    return labels


def token_table(
    scores: TokenScores,
    index: pl.DataFrame | None = None,
    kinds: Sequence[str] | None = None,
    model: str | None = None,
    top_k: Sequence[int] = TOP_K,
    position_edges: Sequence[int] = POSITION_EDGES,
) -> pl.DataFrame:
    """One row per predicted token.

    Columns: `model` (when given), the `TokenScores` fields, `top{k}` (expected hit with
    random tie-breaking, a float in [0, 1]) for each k, `is_repeat`, `position_bucket`
    (label) and `position_bucket_start`, `kind` (when `kinds`, indexed by token id, is
    given), then every column of `index`, whose row i describes sequence i.
    """
    edges = np.asarray(position_edges, dtype=np.int64)
    if edges.size == 0 or edges[0] != 1 or np.any(np.diff(edges) <= 0):
        raise ConfigError(f"position edges must start at 1 and increase, got {position_edges}")
    bucket = np.searchsorted(edges, scores.position, side="right") - 1
    labels = position_bucket_labels([int(e) for e in edges])
    table = scores.to_frame()
    if model is not None:
        table = table.select(pl.lit(model, dtype=pl.String).alias("model"), pl.all())
    extra = [pl.Series(f"top{k}", scores.top_k_hit(k)) for k in top_k]
    extra.append(pl.Series("is_repeat", scores.token == scores.previous))
    extra.append(pl.Series("position_bucket", np.asarray(labels)[bucket]))
    extra.append(pl.Series("position_bucket_start", edges[bucket]))
    if kinds is not None:
        kind_array = np.asarray(list(kinds), dtype=object)
        if scores.token.size and int(scores.token.max()) >= kind_array.shape[0]:
            raise ConfigError(f"token kinds cover {kind_array.shape[0]} ids, fewer than scored")
        extra.append(pl.Series("kind", kind_array[scores.token].tolist(), dtype=pl.String))
    table = table.hstack(extra)
    if index is None:
        return table
    if scores.sequence.size and int(scores.sequence.max()) >= index.height:
        raise ConfigError(f"index has {index.height} rows, fewer than the scored sequences")
    clashes = sorted(set(index.columns) & set(table.columns))
    if clashes:
        raise ConfigError(f"index columns clash with token-table columns: {clashes}")
    return table.hstack(index.select(pl.all().gather(scores.sequence)))


def summary_expressions(top_k: Sequence[int] = TOP_K) -> list[pl.Expr]:
    """Aggregations of a token table: tokens, cross-entropy (nats, bits), perplexity,
    top-k accuracy, and mean top-1 confidence."""
    nats = -pl.col("log_prob").mean()
    return [
        pl.len().alias("tokens"),
        nats.alias("cross_entropy_nats"),
        (nats / math.log(2)).alias("cross_entropy_bits"),
        nats.exp().alias("perplexity"),
        *[pl.col(f"top{k}").mean().alias(f"top{k}") for k in top_k],
        pl.col("max_prob").mean().alias("mean_confidence"),
    ]


def summarize(
    table: pl.DataFrame, by: Sequence[str] = (), top_k: Sequence[int] = TOP_K
) -> pl.DataFrame:
    """Token-weighted metrics, overall or per group of the `by` columns (sorted)."""
    missing = [c for c in by if c not in table.columns]
    if missing:
        raise ConfigError(f"cannot group by {missing}: the token table has no such column")
    aggregations = summary_expressions(top_k)
    if not by:
        return table.select(aggregations)
    return table.group_by(list(by)).agg(aggregations).sort(list(by), nulls_last=True)


# The standard report: name -> grouping columns (those absent from a table are skipped).
STANDARD_BREAKDOWNS: dict[str, tuple[str, ...]] = {
    "overall": (),
    "split": ("split",),
    "group": ("group",),
    "condition": ("condition",),
    "kind": ("kind",),
    "position": ("position_bucket_start", "position_bucket"),
    "repeat": ("is_repeat",),
}


def breakdowns(
    table: pl.DataFrame,
    groupings: Mapping[str, Sequence[str]] = STANDARD_BREAKDOWNS,
    top_k: Sequence[int] = TOP_K,
) -> dict[str, pl.DataFrame]:
    """Every grouping whose columns the table has, each with a `model` column first when
    the table holds several models (so baselines and the model sit side by side)."""
    lead = ["model"] if "model" in table.columns else []
    return {
        name: summarize(table, [*lead, *columns], top_k)
        for name, columns in groupings.items()
        if all(c in table.columns for c in columns)
    }
