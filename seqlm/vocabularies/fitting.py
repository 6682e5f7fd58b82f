"""Counting train tokens and choosing the vocabulary, with bounded memory.

Fitting runs in two passes over the train events, chunk by chunk (each chunk holds
whole entities): `ValueSampler` first (value bins need every train value of a code
before any fused token can be named), then `TokenCounter` over the event tokens made
with those bins. Both keep one row per code or token, never per event, so a corpus of
any length fits with the memory of its largest chunk.

The privacy rule lives here, and it applies to every token finally written: a data
token whose train count is below `min_count`, or whose number of distinct train entities
is below `min_entities`, is left out and so falls back to its kind's unknown; a kind's
unknown is kept only if the train events that actually become it (merged tokens and
labels that spelled a scheme token) meet the same thresholds, else they fall back to
`[UNK]`, or if no train event becomes it at all (it then names nobody: every train code
of its kind is a kept token) (issue 20: `ICU_ADMISSION//[UNK]` had been kept on the support of every
ICU_ADMISSION event, while 4 subjects held the unknown itself). The support of each
kept token is recorded (`FittedTokens.support`, written to scheme.json). Only the number
of merged tokens is kept, never their names.

Text tokens (`CODE//text`, `scheme.use_text`) have one more level: a code keeps at most
`text_max_values` of them (its most frequent supported texts), and the events of its
merged texts go to the code's text unknown `CODE//[TEXT_UNK]` when those events meet
the thresholds themselves (counted like a kind's unknown), else on to the kind's
unknown. (Falling back to the bare code token instead would be as private, but its
recorded support could not stay exact: a kept token past HOLDERS_KEPT entities has no
names left to join with.)

To count the distinct entities behind a kind's unknown exactly, the counter keeps the
names of a token's entities while it has at most `HOLDERS_KEPT` of them (only such
tokens can be merged); a threshold above that counts a lower bound, which can only
merge more, never keep a token with less support than asked.
"""

from __future__ import annotations

import uuid
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


# Entity names kept per token while it has at most this many distinct train entities.
HOLDERS_KEPT = 64
# Bytes of merged token tables `TokenCounter.merge` lets wait before absorbing them
# (tables of rare tokens carry up to HOLDERS_KEPT + 1 entity names a token), or half
# the counted table's bytes, whichever is more: absorbing regroups the whole table, so
# a fixed wait made the merges quadratic in a vocabulary of 100k+ codes.
PENDING_BYTES = 32_000_000


@dataclass(frozen=True)
class FittedTokens:
    tokens: tuple[str, ...]
    data_tokens: dict[str, DataToken]
    value_bins: dict[str, CodeValueBins]
    merged_tokens: int
    # Distinct train entities behind each kept data token and kind unknown.
    support: dict[str, int] | None = None
    # What fitting did with train texts (counts only; `use_text` corpora).
    text_summary: dict[str, int] | None = None


def holders_of(entity: pl.Expr) -> pl.Expr:
    """A token's entities while they are few enough to matter (an aggregation)."""
    return entity.unique().sort().head(HOLDERS_KEPT + 1).alias("holders")


def _tagged_holders(tokens: pl.DataFrame) -> pl.DataFrame:
    """Holders as strings unique to this chunk: entities may be names or per-chunk run
    ids (the corpus build counts on integers), and chunks hold different entities."""
    tag = uuid.uuid4().hex + "/"
    return tokens.with_columns(
        pl.col("holders").list.eval(pl.lit(tag) + pl.element().cast(pl.String))
    )


class TokenCounter:
    """Train counts, distinct-entity counts and (for rarely held tokens) the entities
    themselves, per data token."""

    def __init__(self) -> None:
        self._tokens = pl.DataFrame(
            schema={
                "data_token": pl.String,
                "code": pl.String,
                "text": pl.String,
                "bin": pl.Int64,
                "text_unknown": pl.String,
                "unknown": pl.String,
                "count": pl.Int64,
                "entities": pl.Int64,
                "holders": pl.List(pl.String),
            }
        )
        # Merged counters' tables wait here and are absorbed together (`merge`).
        self._pending: list[pl.DataFrame] = []
        self._pending_bytes = 0
        self._table_bytes = 0  # of self._tokens, as of the last absorb

    def add(self, event_tokens: pl.DataFrame) -> None:
        """Count one chunk of `event_token_frame` rows (train events, whole entities)."""
        support = [
            pl.len().cast(pl.Int64).alias("count"),
            pl.col("entity").n_unique().cast(pl.Int64).alias("entities"),
        ]
        sources = pl.struct("code", "text").n_unique().alias("sources")
        holders = holders_of(pl.col("entity"))
        tokens = event_tokens.group_by("data_token").agg(
            pl.col("code").first(),
            pl.col("text").first(),
            pl.col("bin").first(),
            pl.col("text_unknown").first(),
            pl.col("unknown").first(),
            *support,
            holders,
            sources,
        )
        _check_one_source(tokens, event_tokens)
        self._absorb(_tagged_holders(tokens.drop("sources")))

    def add_counted(self, tokens: pl.DataFrame, sources: pl.DataFrame) -> None:
        """`add` from counts already made (seqlm.corpus.token_rows.train_counts): per
        data token code, text, bin, text_unknown, unknown, count, entities, holders (at most
        HOLDERS_KEPT + 1 entities) and sources; `sources` the chunk's (data_token, code,
        text) pairs."""
        _check_one_source(tokens, sources)
        table = _tagged_holders(tokens.drop("sources").select(self._tokens.columns))
        if self._tokens.height or self._pending or not table["data_token"].is_unique().all():
            self._absorb(table)
            return
        # A fresh counter given one row per token (a worker's partition): the table is
        # what `_absorb` would make of it but for the order of the holders, which every
        # reader treats as a set and the merge sorts (x20: 28 ms less per partition).
        self._tokens = table.with_columns(
            pl.when(pl.col("entities") <= HOLDERS_KEPT)
            .then(pl.col("holders"))
            .otherwise(pl.lit([], dtype=pl.List(pl.String)))
            .alias("holders")
        )

    def merge(self, other: TokenCounter) -> None:
        """Add another counter's counts (its chunks held other entities).

        Merged tables wait and are absorbed together once they hold `PENDING_BYTES`
        (or when the counts are read): absorbing regroups the whole table, so doing
        it once per partition cost the building process time that grew with partitions
        times vocabulary. The result is the same: sums, the first row's strings (the
        tables keep their order), holders sorted and cut per token."""
        other._flush()
        self._pending.append(other._tokens)
        # By size: a chunk's rare tokens carry their holders' names (a tabular
        # partition's table: 2 MB for 3,300 tokens), so counting rows let 300 MB wait.
        self._pending_bytes += other._tokens.estimated_size()
        if self._pending_bytes >= max(PENDING_BYTES, self._table_bytes // 2):
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            tokens = pl.concat(self._pending)
            self._pending, self._pending_bytes = [], 0
            self._absorb(tokens)

    def _absorb(self, tokens: pl.DataFrame) -> None:
        self._flush()
        # Two source codes that give one token in different chunks collide too.
        sources = pl.struct("code", "text").n_unique().alias("sources")
        both = pl.concat([self._tokens, tokens])
        merged = both.group_by("data_token").agg(
            pl.col("code").first(),
            pl.col("text").first(),
            pl.col("bin").first(),
            pl.col("text_unknown").first(),
            pl.col("unknown").first(),
            pl.col("count").sum(),
            pl.col("entities").sum(),
            pl.col("holders").list.explode(keep_nulls=False, empty_as_null=False),
            sources,
        )
        _check_one_source(merged, both)
        # Chunks hold whole entities, so holders of one token never repeat across chunks;
        # a token past HOLDERS_KEPT entities can never be merged and drops its names.
        self._tokens = merged.drop("sources").with_columns(
            pl.when(pl.col("entities") <= HOLDERS_KEPT)
            .then(pl.col("holders").list.sort().list.head(HOLDERS_KEPT + 1))
            .otherwise(pl.lit([], dtype=pl.List(pl.String)))
            .alias("holders")
        )
        self._table_bytes = self._tokens.estimated_size()

    def choose(
        self,
        scheme: TokenScheme,
        bins: Mapping[str, CodeValueBins],
        gaps: TimeGapTokens | None,
    ) -> FittedTokens:
        """Apply the thresholds and the per-code text cap, and order the vocabulary.

        A data token is kept when it meets the thresholds (and, a `CODE//text` token,
        when it is among its code's `text_max_values` most frequent); the train events
        of a merged text token go to the code's text unknown, kept when they meet the
        thresholds; everything else merged goes to the kind's unknown (same rule), and
        past that to `[UNK]`. Ids: the five specials, the kinds' and codes' unknowns
        (sorted), time tokens (shortest gap first), value tokens (separate mode), then
        data tokens by train count (descending, ties by token) so that ids do not
        depend on chunking.
        """
        self._flush()
        supported = _supported(scheme)
        tokens = _with_keep(self._tokens, scheme)
        candidates = tokens.filter(~reserved(pl.col("data_token")))
        kept = candidates.filter("keep").sort(["count", "data_token"], descending=[True, False])
        merged = candidates.height - kept.height
        merged_rows = tokens.filter(reserved(pl.col("data_token")) | ~pl.col("keep"))
        # Level 2: a text's token merged -> its code's text unknown.
        texts = merged_rows.filter(pl.col("text_unknown").is_not_null())
        text_unknowns = _pooled(texts, "text_unknown").filter(supported)
        kept_text = text_unknowns["text_unknown"].implode()
        # Level 3: everything merged that no text unknown took -> the kind's unknown.
        to_unknown = merged_rows.filter(
            pl.col("text_unknown").is_null() | ~pl.col("text_unknown").is_in(kept_text)
        )
        kinds = _pooled(to_unknown, "unknown").filter(supported & (pl.col("unknown") != UNK))
        # A kind whose train events all kept their own tokens has an unknown that no train
        # entity holds: kept for held-out codes of that kind, it names nobody (every code
        # of the kind is a kept token already, so even the kind's name is public).
        unused = set(self._tokens["unknown"].drop_nulls().unique().to_list()) - set(
            to_unknown["unknown"].drop_nulls().to_list()
        )
        unused.discard(UNK)
        unknowns = sorted({*kinds["unknown"], *text_unknowns["text_unknown"], *unused})
        support = dict(kept.select("data_token", "entities").iter_rows())
        support.update(kinds.select("unknown", "entities").iter_rows())
        support.update(text_unknowns.select("text_unknown", "entities").iter_rows())
        support.update(dict.fromkeys(unused, 0))

        scheme_tokens = list(gaps.tokens) if gaps is not None else []
        if scheme.value_mode == "separate":
            scheme_tokens += [value_token(k) for k in range(1, scheme.value_bins + 1)]
        vocabulary = [*SPECIAL_TOKENS, *unknowns, *scheme_tokens, *kept["data_token"]]

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
            tokens=tuple(vocabulary),
            data_tokens=data_tokens,
            value_bins=value_bins,
            merged_tokens=merged,
            # In vocabulary order: scheme.json must not depend on polars' group order.
            support={token: support[token] for token in vocabulary if token in support},
            text_summary=_text_summary(tokens, scheme, value_bins) if scheme.use_text else None,
        )


def _supported(scheme: TokenScheme) -> pl.Expr:
    """The privacy rule on a row of `count` and `entities`."""
    return (pl.col("count") >= scheme.min_count) & (pl.col("entities") >= scheme.min_entities)


def _with_keep(tokens: pl.DataFrame, scheme: TokenScheme) -> pl.DataFrame:
    """`keep`: supported, and for a text token among its code's `text_max_values` most
    frequent supported texts (by train count, ties by token)."""
    supported = _supported(scheme)
    is_text = pl.col("text").is_not_null()
    ordered = tokens.with_row_index("_row").sort(["count", "data_token"], descending=[True, False])
    position = pl.int_range(pl.len()).over(pl.col("code"), is_text, supported)
    keep = supported & (~is_text | (position < scheme.text_max_values))
    return ordered.with_columns(keep.alias("keep")).sort("_row").drop("_row")


def _pooled(rows: pl.DataFrame, column: str) -> pl.DataFrame:
    """Merged token rows pooled by the unknown they fall back to (`column`): train count
    and distinct train entities of each unknown."""
    # The union of the holders is exact while every token kept its names; a token
    # past HOLDERS_KEPT entities alone shows the unknown has more than that.
    holders = (
        pl.col("holders")
        .list.explode(keep_nulls=False, empty_as_null=False)
        .drop_nulls()
        .n_unique()
    )
    return rows.group_by(column).agg(
        pl.col("count").sum(),
        pl.max_horizontal(holders, pl.col("entities").max()).alias("entities"),
    )


def _text_summary(
    tokens: pl.DataFrame, scheme: TokenScheme, value_bins: Mapping[str, CodeValueBins]
) -> dict[str, int]:
    """Counts (never names) of what fitting did with train texts."""
    texts = tokens.filter(pl.col("text").is_not_null())
    rare = texts.filter(~_supported(scheme))
    capped = texts.filter(_supported(scheme) & ~pl.col("keep"))
    return {
        "text_tokens": int(texts["keep"].sum()),
        "rare_text_tokens": rare.height,
        "rare_text_rows": int(rare["count"].sum()),
        "capped_text_tokens": capped.height,
        "capped_text_rows": int(capped["count"].sum()),
        "codes_reading_text_numbers": sum(b.text_numbers for b in value_bins.values()),
    }


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


def known_sources(data_tokens: Mapping[str, DataToken]) -> pl.DataFrame:
    """The (code, text) of every data token, as `check_known_sources` compares them."""
    return pl.DataFrame(
        {
            "data_token": list(data_tokens),
            "known_code": [t.code for t in data_tokens.values()],
            "known_text": [t.text for t in data_tokens.values()],
        },
        schema={"data_token": pl.String, "known_code": pl.String, "known_text": pl.String},
    )


def check_known_sources(
    event_tokens: pl.DataFrame,
    data_tokens: Mapping[str, DataToken],
    known: pl.DataFrame | None = None,
) -> None:
    """Raise if an event's data token is in the vocabulary for another (code, text).

    Only `use_text` can make such a token (see `_check_one_source`); this catches a
    tuning or held-out event that clashes with a train token. `known`: the
    `known_sources` of `data_tokens`, made already.
    """
    if known is None:
        known = known_sources(data_tokens)
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
