"""Counting train tokens and choosing the vocabulary, with bounded memory.

Fitting runs in two passes over the train events, chunk by chunk (each chunk holds
whole entities): `ValueSampler` first (value bins need every train value of a code
before any fused token can be named), then `TokenCounter` over the event tokens made
with those bins. Both keep one row per code or token, never per event, so a corpus of
any length fits with the memory of its largest chunk.

The privacy rule lives here: a data token whose train count is below `min_count`, or
whose number of distinct train entities is below `min_entities`, is left out and so
falls back to its kind's unknown; a kind's unknown token itself needs the same support,
else that kind's tokens fall back to `[UNK]`. Only the number of merged tokens is kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import polars as pl

from seqlm.vocabularies.event_tokens import event_token_frame, reserved
from seqlm.vocabularies.scheme import SPECIAL_TOKENS, UNK, TokenScheme, value_token
from seqlm.vocabularies.time_gaps import TimeGapTokens
from seqlm.vocabularies.value_bins import CodeValueBins, ValueSampler, edge_table


@dataclass(frozen=True)
class DataToken:
    """What an in-vocabulary data token stands for (for turning tokens back into events)."""

    code: str
    text: str | None
    bin: int | None


@dataclass(frozen=True)
class FittedTokens:
    tokens: tuple[str, ...]
    data_tokens: dict[str, DataToken]
    value_bins: dict[str, CodeValueBins]
    merged_tokens: int


class TokenCounter:
    """Train counts and distinct-entity counts per data token and per kind."""

    def __init__(self) -> None:
        self._tokens = pl.DataFrame(
            schema={
                "data_token": pl.String,
                "code": pl.String,
                "text": pl.String,
                "bin": pl.Int64,
                "count": pl.Int64,
                "entities": pl.Int64,
            }
        )
        self._kinds = pl.DataFrame(
            schema={"unknown": pl.String, "count": pl.Int64, "entities": pl.Int64}
        )

    def add(self, event_tokens: pl.DataFrame) -> None:
        """Count one chunk of `event_token_frame` rows (train events, whole entities)."""
        support = [
            pl.len().cast(pl.Int64).alias("count"),
            pl.col("entity").n_unique().cast(pl.Int64).alias("entities"),
        ]
        tokens = event_tokens.group_by("data_token").agg(
            pl.col("code").first(), pl.col("text").first(), pl.col("bin").first(), *support
        )
        kinds = event_tokens.group_by("unknown").agg(*support)
        self._absorb(tokens, kinds)

    def merge(self, other: TokenCounter) -> None:
        """Add another counter's counts (its chunks held other entities)."""
        self._absorb(other._tokens, other._kinds)

    def _absorb(self, tokens: pl.DataFrame, kinds: pl.DataFrame) -> None:
        self._tokens = (
            pl.concat([self._tokens, tokens])
            .group_by("data_token")
            .agg(
                pl.col("code").first(),
                pl.col("text").first(),
                pl.col("bin").first(),
                pl.col("count").sum(),
                pl.col("entities").sum(),
            )
        )
        self._kinds = (
            pl.concat([self._kinds, kinds])
            .group_by("unknown")
            .agg(pl.col("count").sum(), pl.col("entities").sum())
        )

    def choose(
        self,
        scheme: TokenScheme,
        bins: Mapping[str, CodeValueBins],
        gaps: TimeGapTokens | None,
    ) -> FittedTokens:
        """Apply the thresholds and order the vocabulary.

        Ids: the five specials, the kinds' unknowns (sorted), time tokens (shortest gap
        first), value tokens (separate mode), then data tokens by train count
        (descending, ties by token) so that ids do not depend on chunking.
        """
        supported = (pl.col("count") >= scheme.min_count) & (
            pl.col("entities") >= scheme.min_entities
        )
        kinds = self._kinds.filter(supported & (pl.col("unknown") != UNK))
        unknowns = sorted(kinds["unknown"].to_list())
        candidates = self._tokens.filter(~reserved(pl.col("data_token")))
        kept = candidates.filter(supported).sort(["count", "data_token"], descending=[True, False])
        merged = candidates.height - kept.height

        scheme_tokens = list(gaps.tokens) if gaps is not None else []
        if scheme.value_mode == "separate":
            scheme_tokens += [value_token(k) for k in range(1, scheme.value_bins + 1)]
        tokens = [*SPECIAL_TOKENS, *unknowns, *scheme_tokens, *kept["data_token"].to_list()]

        data_tokens = {
            token: DataToken(code=code, text=text, bin=bin_number)
            for token, code, text, bin_number in kept.select(
                "data_token", "code", "text", "bin"
            ).iter_rows()
        }
        # Bins are kept only for codes with an in-vocabulary token, so a code that was
        # merged for privacy leaves no trace (not even its name) in the vocabulary.
        kept_codes = {entry.code for entry in data_tokens.values()}
        value_bins = {code: b for code, b in bins.items() if code in kept_codes}
        return FittedTokens(
            tokens=tuple(tokens),
            data_tokens=data_tokens,
            value_bins=value_bins,
            merged_tokens=merged,
        )


class VocabularyFitter:
    """The two fitting passes in order: `add_values` for every chunk, `finish_values`,
    `add_tokens` for every chunk, then `result`. Chunks are train events (EventTable
    columns), sorted, each holding whole entities."""

    def __init__(self, scheme: TokenScheme) -> None:
        self.scheme = scheme
        self.gaps = scheme.time_gap_tokens()
        self._sampler = ValueSampler(scheme.value_sample_size)
        self._counter = TokenCounter()
        self._bins: dict[str, CodeValueBins] | None = None
        self._edges: pl.DataFrame | None = None

    def add_values(self, events: pl.DataFrame) -> None:
        if self._bins is not None:
            raise RuntimeError("add_values after finish_values")
        if self.scheme.uses_values:
            self._sampler.add(events)

    def finish_values(self) -> dict[str, CodeValueBins]:
        self._bins = self._sampler.fit(self.scheme)
        self._edges = edge_table(self._bins)
        return self._bins

    def add_tokens(self, events: pl.DataFrame) -> None:
        if self._bins is None:
            raise RuntimeError("add_tokens before finish_values")
        frame = event_token_frame(events.lazy(), self.scheme, self._bins, self._edges)
        self._counter.add(frame.collect())

    def result(self) -> FittedTokens:
        if self._bins is None:
            raise RuntimeError("result before finish_values")
        return self._counter.choose(self.scheme, self._bins, self.gaps)
