"""Events to tokens, vectorised (no Python loop per event or token).

1. `event_token_frame` (polars, lazy): one row per event with its data token (`code`,
   `//text` when the scheme uses text, `//Q{k}` for a fused value bin), the kind's
   unknown token it falls back to, its time in seconds, the gap from the previous timed
   event and its value bin.
2. The vocabulary looks the data tokens up (falling back to the unknowns), and
   `assemble_sequences` (numpy) lays out each sequence: `[BOS]`, then per event its
   time-gap tokens, its data token and (separate mode) its `VALUE//Q{k}` token, then
   `[EOS]`. Static rows (null time) sort first, so they form the prefix.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import polars as pl

from seqlm.events import SORT_KEY, time_in_seconds
from seqlm.vocabularies.escaping import escaped, escaped_chars, escaped_structure, escaped_text
from seqlm.vocabularies.scheme import (
    BOS_ID,
    EOS_ID,
    PART_SEPARATOR,
    SPECIAL_TOKENS,
    TEXT_UNK,
    TIME_TOKEN_PREFIX,
    UNK,
    VALUE_TOKEN_PREFIX,
    TokenScheme,
)
from seqlm.vocabularies.text_values import with_values_and_fates
from seqlm.vocabularies.time_gaps import TimeGapTokens
from seqlm.vocabularies.value_bins import CodeValueBins, stored_value

# A polars frame, eager or lazy: the token strings are the same expressions on either.
FrameT = TypeVar("FrameT", pl.DataFrame, pl.LazyFrame)


def sorted_events(frame: pl.LazyFrame) -> pl.LazyFrame:
    """Events in sequence order: by entity, then time with static (null) rows first."""
    return frame.sort(list(SORT_KEY), nulls_last=False, maintain_order=True)


def reserved(token: pl.Expr) -> pl.Expr:
    """`scheme.is_reserved` as an expression: strings a data token may not take."""
    return (
        token.is_in(list(SPECIAL_TOKENS))
        | token.str.starts_with(TIME_TOKEN_PREFIX)
        | token.str.starts_with(VALUE_TOKEN_PREFIX)
        | token.str.ends_with(PART_SEPARATOR + UNK)
        | token.str.ends_with(PART_SEPARATOR + TEXT_UNK)
    )


def event_token_frame(
    events: pl.LazyFrame,
    scheme: TokenScheme,
    bins: Mapping[str, CodeValueBins],
    edge_table: pl.DataFrame | None = None,
) -> pl.LazyFrame:
    """One row per event (input sorted, whole entities): entity, time_s, gap, code, text
    (where it joins the token), bin, text_fate, value_fate, data_token, text_unknown,
    unknown."""
    del edge_table  # bins are found without it (value_bins.with_bin_numbers)
    time_type = events.collect_schema()["time"]
    frame = events.select(
        "entity",
        time_in_seconds(pl.col("time"), time_type).alias("time_s"),
        pl.col("kind"),
        pl.col("code").fill_null(""),
        pl.col("text"),
        stored_value(pl.col("value")).fill_nan(None),
    )
    # Bins, numbers read from texts, and what becomes of each text and value.
    frame = with_values_and_fates(frame, scheme, bins)

    return (
        with_token_strings(frame, scheme)
        .with_columns(
            pl.col("time_s").diff().over("entity").alias("gap"),
        )
        .drop("kind")
    )


def with_token_strings(frame: FrameT, scheme: TokenScheme) -> FrameT:
    """Add `data_token`, `text_unknown` (null for rows without a text in their token),
    `unknown` and `reserved_label` to rows of kind, code, text and bin: the token strings, made the same way for every event (`event_token_frame`) or
    once per distinct pair (the corpus build's `token_rows.pair_tokens`)."""
    code = escaped_chars(pl.col("code"))
    base = code
    has_text = pl.lit(False)
    if scheme.use_text:
        has_text = pl.col("text").is_not_null() & (pl.col("text").str.len_chars() > 0)
        base = pl.when(has_text).then(code + PART_SEPARATOR + escaped_text(pl.col("text")))
        base = base.otherwise(code)
    # After joining: a `[` opening a segment or a final `//Q3` is escaped in the whole
    # base, so neither a code nor a text can pass for a scheme token or a value bin.
    base = escaped_structure(base, scheme.value_bins)
    # Where a text's own token is not kept: the code's text unknown (then coarser).
    text_unknown = pl.when(has_text).then(
        escaped_structure(code, scheme.value_bins) + PART_SEPARATOR + TEXT_UNK
    )
    if scheme.value_mode == "fused":
        data_token = (
            pl.when(pl.col("bin").is_not_null())
            .then(pl.format("{}//Q{}", base, pl.col("bin")))
            .otherwise(base)
        )
    else:
        data_token = base
    kind = escaped(pl.col("kind"))
    unknown = (
        pl.when(pl.col("kind").is_null() | (kind.str.len_chars() == 0))
        .then(pl.lit(UNK))
        .otherwise(kind + PART_SEPARATOR + UNK)
    )
    frame = frame.with_columns(
        data_token.alias("data_token"),
        text_unknown.otherwise(None).alias("text_unknown"),
        unknown.alias("unknown"),
    )
    # A code that is empty or spells a scheme token (`[PAD]`, `VALUE//Q3`) is an unknown.
    invalid = (pl.col("data_token").str.len_chars() == 0) | reserved(pl.col("data_token"))
    return frame.with_columns(
        pl.when(invalid)
        .then(pl.col("unknown"))
        .otherwise(pl.col("data_token"))
        .alias("data_token"),
        invalid.alias("reserved_label"),  # counted in the manifest: not silently merged
    )


@dataclass
class EncodedSequences:
    """Token ids of whole sequences, concatenated: `lengths[i]` tokens of `entities[i]`
    (BOS and EOS included), each with its event's time in seconds."""

    entities: pl.Series
    lengths: np.ndarray
    ids: np.ndarray
    times: np.ndarray
    # Events whose label was empty or spelled a scheme token and became an unknown.
    reserved_labels: int = 0

    def entity_per_token(self) -> pl.Series:
        return self.entities.gather(np.repeat(np.arange(len(self.lengths)), self.lengths))


def assemble_sequences(
    events: pl.DataFrame,
    data_ids: np.ndarray,
    gaps: TimeGapTokens | None,
    time_ids: np.ndarray,
    value_ids: np.ndarray | None,
) -> EncodedSequences:
    """Lay out every event's tokens in order, vectorised in numpy.

    Per event: `[BOS]` if it is its entity's first, its time-gap tokens, its data token
    (`data_ids`, already looked up), its value token when `value_ids` (indexed by bin
    number) is given and the event has a bin, and `[EOS]` if it is its entity's last.
    Every token takes its event's time (0 for static rows), so BOS and EOS take the
    first and last event's times.
    """
    n = events.height
    entity = events["entity"]
    is_first = entity.ne_missing(entity.shift(1)).to_numpy()
    is_last = entity.ne_missing(entity.shift(-1)).to_numpy()
    if gaps is not None:
        repeats, remainder = gaps.split_gaps(events["gap"].fill_null(np.nan).to_numpy())
    else:
        repeats, remainder = np.zeros(n, np.int64), np.full(n, -1, np.int64)
    bins = events["bin"].fill_null(0).to_numpy() if value_ids is not None else np.zeros(n, int)
    has_value = bins > 0
    per_event = is_first + repeats + (remainder >= 0) + 1 + has_value + is_last
    ends = np.cumsum(per_event)
    starts = ends - per_event
    ids = np.empty(int(ends[-1]) if n else 0, dtype=np.int64)

    ids[starts[is_first]] = BOS_ID
    position = starts + is_first
    # Repeated longest-gap tokens: a run of `repeats[i]` slots from `position[i]`.
    run_start = np.repeat(position, repeats)
    run_offset = np.arange(int(repeats.sum())) - np.repeat(np.cumsum(repeats) - repeats, repeats)
    if gaps is not None:
        ids[run_start + run_offset] = time_ids[len(gaps.edges) - 1]
    position = position + repeats
    has_remainder = remainder >= 0
    ids[position[has_remainder]] = time_ids[remainder[has_remainder]]
    position = position + has_remainder
    ids[position] = data_ids
    if value_ids is not None:
        ids[position[has_value] + 1] = value_ids[bins[has_value]]
    ids[ends[is_last] - 1] = EOS_ID

    times = np.repeat(events["time_s"].fill_null(0.0).to_numpy(), per_event)
    entity_starts = np.flatnonzero(is_first)
    lengths = np.add.reduceat(per_event, entity_starts) if n else np.zeros(0, np.int64)
    return EncodedSequences(
        entities=entity.gather(entity_starts),
        lengths=lengths.astype(np.int64),
        ids=ids,
        times=times,
        reserved_labels=int(events["reserved_label"].sum()) if "reserved_label" in events else 0,
    )
