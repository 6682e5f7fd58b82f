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

from seqlm.errors import InputError
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
        sources = pl.struct("code", "text").n_unique().alias("sources")
        tokens = event_tokens.group_by("data_token").agg(
            pl.col("code").first(), pl.col("text").first(), pl.col("bin").first(), *support, sources
        )
        _check_one_source(tokens, event_tokens)
        kinds = event_tokens.group_by("unknown").agg(*support)
        self._absorb(tokens.drop("sources"), kinds)

    def add_counted(self, tokens: pl.DataFrame, kinds: pl.DataFrame, sources: pl.DataFrame) -> None:
        """`add` from counts already made (seqlm.corpus.token_rows.train_counts): per
        data token code, text, bin, count, entities and sources; per unknown count and
        entities; `sources` the chunk's (data_token, code, text) pairs."""
        _check_one_source(tokens, sources)
        self._absorb(tokens.drop("sources"), kinds)

    def merge(self, other: TokenCounter) -> None:
        """Add another counter's counts (its chunks held other entities)."""
        self._absorb(other._tokens, other._kinds)

    def _absorb(self, tokens: pl.DataFrame, kinds: pl.DataFrame) -> None:
        # Two source codes that give one token in different chunks collide too.
        sources = pl.struct("code", "text").n_unique().alias("sources")
        both = pl.concat([self._tokens, tokens])
        merged = both.group_by("data_token").agg(
            pl.col("code").first(),
            pl.col("text").first(),
            pl.col("bin").first(),
            pl.col("count").sum(),
            pl.col("entities").sum(),
            sources,
        )
        _check_one_source(merged, both)
        self._tokens = merged.drop("sources")
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


def _check_one_source(tokens: pl.DataFrame, rows: pl.DataFrame) -> None:
    """Raise if two source (code, text) pairs gave one data token (`rows` holds them).

    Escaping is reversible, so this cannot happen through it; a code with `//` beside a
    text joined with `//` (`use_text`) still can, and must not be silently merged.
    """
    clashing = tokens.filter((pl.col("sources") > 1) & ~reserved(pl.col("data_token")))
    if not clashing.height:
        return
    token = clashing["data_token"][0]
    pairs = rows.filter(pl.col("data_token") == token).select("code", "text").unique()
    first, second = pairs.sort("code", "text", nulls_last=False).head(2).iter_rows()

    def name(code: str, text: str | None) -> str:
        return repr(code) if text is None else f"{code!r} with text {text!r}"

    raise InputError(
        f"source codes {name(*first)} and {name(*second)} would both become token "
        f"{token!r}; rename one (e.g. an [[adapter.rewrite]] rule) or turn scheme.use_text off",
        column="code",
    )


def check_known_sources(event_tokens: pl.DataFrame, data_tokens: Mapping[str, DataToken]) -> None:
    """Raise if an event's data token is in the vocabulary for another (code, text).

    Only `use_text` can make such a token (see `_check_one_source`); this catches a
    tuning or held-out event that clashes with a train token.
    """
    known = pl.DataFrame(
        {
            "data_token": list(data_tokens),
            "known_code": [t.code for t in data_tokens.values()],
            "known_text": [t.text for t in data_tokens.values()],
        },
        schema={"data_token": pl.String, "known_code": pl.String, "known_text": pl.String},
    )
    joined = event_tokens.select("data_token", "code", "text").join(known, on="data_token")
    same = (pl.col("code") == pl.col("known_code")) & pl.col("text").eq_missing(
        pl.col("known_text")
    )
    clash = joined.filter(~same)
    if clash.height:
        row = clash.row(0, named=True)
        tokens = pl.DataFrame(
            {"data_token": [row["data_token"]] * 2, "sources": [2, 2]},
        )
        rows = pl.DataFrame(
            {
                "data_token": [row["data_token"]] * 2,
                "code": [row["code"], row["known_code"]],
                "text": [row["text"], row["known_text"]],
            },
            schema={"data_token": pl.String, "code": pl.String, "text": pl.String},
        )
        _check_one_source(tokens, rows)


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
