"""Event tokens of one sorted partition with the string work done once per distinct
(kind, code, text, bin) instead of once per row.

`event_token_frame` builds each row's data token with a dozen string expressions
(escaping, the fused `//Q{k}`, the reserved-name checks). Its result depends only on
the row's (kind, code, text, bin), and a partition of 500k MEDS rows holds a few
thousand of those, so here each row gets an integer `pair` (the number of its
(kind, code, text, bin)) and the strings are made on the small pair table by
`pair_tokens`, the same expressions as `event_token_frame`
(tests/corpus/test_token_rows.py checks the two against each other; the corpus
byte-identity tests check the whole build).

Per row only numbers remain: entity run id, seconds, gap, bin, pair.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import polars as pl

from seqlm.corpora_adapters.base import time_in_seconds
from seqlm.vocabularies.event_tokens import with_token_strings
from seqlm.vocabularies.fitting import holders_of
from seqlm.vocabularies.scheme import UNK_ID, TokenScheme
from seqlm.vocabularies.text_values import fate_counts, with_values_and_fates
from seqlm.vocabularies.value_bins import CodeValueBins, stored_value
from seqlm.vocabularies.vocabulary import Vocabulary

# What the per-row tokens file holds (all numeric).
ROW_COLUMNS = ["entity", "time_s", "gap", "bin", "pair"]
PAIR_KEY = ["kind_id", "code_id", "text_id", "bin", "text_fate", "value_fate"]
# What the pair table keeps per pair (the fates let the encode stage count what became of
# every text and value: seqlm.vocabularies.text_values).
PAIR_STRINGS = ["pair", "kind", "code", "text", "bin", "text_fate", "value_fate"]


def _ids(column: pl.Expr) -> pl.Expr:
    # Categorical ids: one hash per row, and equal strings get equal ids in a process.
    return column.cast(pl.Categorical).to_physical().cast(pl.Int64)


def keyed_rows(
    rows: pl.DataFrame, scheme: TokenScheme, bins: Mapping[str, CodeValueBins]
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Rows sorted by (entity, time, order) -> (per-row frame of `ROW_COLUMNS`, the
    pair table: pair, kind, code, text, bin, one row per distinct pair).

    `entity` becomes the run id of the entity (0, 1, ... in sorted order), so the
    time and gap windows work on integers; the values are the same as
    `event_token_frame`'s (the same expressions per entity)."""
    time_type = rows.schema["time"]
    frame = rows.lazy().select(
        pl.col("entity").rle_id().cast(pl.Int64).alias("entity"),
        pl.col("time"),
        pl.col("kind"),
        pl.col("code").fill_null(""),
        pl.col("text"),
        stored_value(pl.col("value")).fill_nan(None),  # as event_token_frame: float32
    )
    frame = frame.with_columns(time_in_seconds(pl.col("time"), time_type).alias("time_s"))
    # As event_token_frame: bins, numbers read from texts, each text's and value's fate.
    frame = with_values_and_fates(frame, scheme, bins)
    # Without use_text every text is null: one id for all.
    text_id = _ids(pl.col("text")) if scheme.use_text else pl.lit(0, dtype=pl.Int64)
    frame = frame.with_columns(
        # The rows are in entity runs: a gap within the run, null at its start (as
        # `diff().over("entity")`, without hashing the entities).
        pl.when(pl.col("entity") == pl.col("entity").shift(1))
        .then(pl.col("time_s").diff())
        .alias("gap"),
        _ids(pl.col("kind")).alias("kind_id"),
        _ids(pl.col("code")).alias("code_id"),
        text_id.alias("text_id"),
    ).collect()
    # The pairs numbered in the order of their first rows, by one grouping on integers
    # that also lists each pair's rows: scattering the numbers back to the rows costs a
    # fraction of a join on the six key columns.
    groups = (
        frame.select(PAIR_KEY)
        .with_row_index("row")
        .group_by(PAIR_KEY)
        .agg(pl.col("row"))
        .select(pl.col("row").list.first().alias("first"), "row")
        .sort("first")
        .with_row_index("pair")
    )
    listed = groups.select("pair", "row").explode("row")
    pair_of_row = np.empty(frame.height, dtype=np.int64)
    pair_of_row[listed["row"].to_numpy()] = listed["pair"].to_numpy()
    pairs = frame.select(PAIR_STRINGS[1:])[groups["first"]].with_columns(
        groups["pair"].cast(pl.Int64)
    )
    keyed = frame.with_columns(pl.Series("pair", pair_of_row))
    return keyed.select(ROW_COLUMNS), pairs.select(PAIR_STRINGS)


def pair_tokens(pairs: pl.DataFrame, scheme: TokenScheme) -> pl.DataFrame:
    """The pair table with `data_token`, `unknown` and `reserved_label`: the same
    expressions as `event_token_frame`, applied to each distinct pair once."""
    return with_token_strings(pairs, scheme)


def train_counts(
    keyed: pl.DataFrame, tokens: pl.DataFrame, train: np.ndarray
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Train counts of one partition as `TokenCounter.add` would make them from its
    rows: (per data token: code, text, bin of its first row, its kind's unknown, count,
    distinct entities, the first HOLDERS_KEPT + 1 entities, distinct sources; the
    (data_token, code, text) pairs seen in train, for the one-source check)."""
    ids = tokens.select(
        "pair",
        pl.col("data_token").rank("dense").cast(pl.Int64).alias("token_id"),
        pl.col("unknown").rank("dense").cast(pl.Int64).alias("unknown_id"),
    )
    rows = keyed.filter(pl.Series(train)).select("entity", "pair")
    order = ids.sort("pair")
    token_of = order["token_id"].to_numpy()
    unknown_of = order["unknown_id"].to_numpy()
    pair = rows["pair"].to_numpy()
    rows = rows.with_columns(
        pl.Series("token_id", token_of[pair]), pl.Series("unknown_id", unknown_of[pair])
    )
    support = [
        pl.len().cast(pl.Int64).alias("count"),
        pl.col("entity").n_unique().cast(pl.Int64).alias("entities"),
    ]
    per_token = rows.group_by("token_id").agg(
        pl.col("pair").first(), *support, holders_of(pl.col("entity"))
    )
    named = tokens.select("pair", "data_token", "code", "text", "bin", "text_unknown", "unknown")
    per_token = per_token.join(named, on="pair", how="left")
    seen = tokens.filter(pl.col("pair").is_in(rows["pair"].unique().implode()))
    sources = seen.group_by("data_token").agg(pl.struct("code", "text").n_unique().alias("sources"))
    per_token = per_token.join(sources, on="data_token", how="left").select(
        "data_token",
        "code",
        "text",
        "bin",
        "text_unknown",
        "unknown",
        "count",
        "entities",
        "holders",
        "sources",
    )
    return per_token, seen.select("data_token", "code", "text")


def pair_ids(vocab: Vocabulary, pairs: pl.DataFrame) -> np.ndarray:
    """Each pair's id: its data token's, else its code's text unknown's, else its kind's
    unknown's, else [UNK]'s (the lookup of `Vocabulary.encode_token_frame`)."""
    tokens = pl.Series(list(vocab.token_to_id), dtype=pl.String)
    ids = pl.Series(list(vocab.token_to_id.values()), dtype=pl.Int64)

    def lookup(column: str) -> pl.Expr:
        return pl.col(column).replace_strict(tokens, ids, default=None, return_dtype=pl.Int64)

    found = pairs.select(
        pl.coalesce(
            lookup("data_token"),
            lookup("text_unknown"),
            lookup("unknown"),
            pl.lit(UNK_ID, pl.Int64),
        )
    )
    return found.to_series().to_numpy()


def pair_fate_counts(vocab: Vocabulary, pairs: pl.DataFrame, pair: np.ndarray) -> dict[str, int]:
    """What became of the texts and numeric values of one partition's rows (`pair`: each
    row's pair number; `pairs` sorted by pair): `text_values.fate_counts`."""
    rows = np.bincount(pair, minlength=pairs.height)[: pairs.height]
    known = pl.Series(list(vocab.data_tokens), dtype=pl.String).implode()
    in_token = pairs["data_token"].is_in(known)
    unknowns = pl.Series(list(vocab.token_to_id), dtype=pl.String).implode()
    in_text_unknown = pairs["text_unknown"].is_in(unknowns).fill_null(False)
    return fate_counts(
        pairs["text_fate"],
        pairs["value_fate"],
        in_token,
        in_text_unknown,
        pl.Series("rows", rows, pl.Int64),
    )


def summed_fates(parts: Iterable[Mapping[str, int]]) -> dict[str, int]:
    """The partitions' `pair_fate_counts` added up (the manifest's `values`)."""
    total: dict[str, int] = {}
    for part in parts:
        for name, count in part.items():
            total[name] = total.get(name, 0) + count
    return total
