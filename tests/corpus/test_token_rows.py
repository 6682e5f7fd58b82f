"""Tokens made per distinct (kind, code, text, bin) equal `event_token_frame`'s, row by
row, and their train counts equal `TokenCounter.add`'s on the same rows."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import polars as pl
import pytest
from helpers.corpus_helpers import clinic_frame, ingested
from hypothesis import given
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from seqlm.corpus import token_rows
from seqlm.corpus.token_rows import (
    distinct_sorted,
    keyed_rows,
    layout_table,
    pair_tokens,
    token_layout,
    train_counts,
)
from seqlm.vocabularies import UNK_ID, fitting
from seqlm.vocabularies.event_tokens import event_token_frame, sorted_events, with_token_strings
from seqlm.vocabularies.fitting import TokenCounter
from seqlm.vocabularies.scheme import TokenScheme
from seqlm.vocabularies.value_bins import ValueSampler
from seqlm.vocabularies.vocabulary import Vocabulary


def awkward_rows() -> pl.DataFrame:
    """The clinic events plus codes that escape, spell scheme tokens, are empty or null,
    null kinds, texts, and one code under two kinds."""
    frame = clinic_frame(12).with_columns(text=pl.lit(None, dtype=pl.String))
    extra = pl.DataFrame(
        {
            "entity": ["subject000", "subject001", "subject002", "subject003", "subject004"] * 2,
            "group": ["site0"] * 10,
            "time": [1e5 + i for i in range(10)],
            "kind": ["LAB", None, "DX", "", "OTHER", "LAB", "DX", "LAB", None, "DX"],
            "code": [
                "[PAD]",
                "VALUE//Q3",
                "",
                None,
                "a b//[x",
                "DX//I10",
                "DX//I10",
                "T",
                "T",
                "x",
            ],
            "value": [1.0, None, 2.0, float("nan"), None, 3.0, None, None, None, 1.0],
            "text": [None, "hi", "", "a//b", None, "t", None, "T", "u v", None],
        }
    )
    # Number-like texts of a numeric code (read as its values), a word, a text beside a
    # value, and a value that is not a finite float32.
    numbers = pl.DataFrame(
        {
            "entity": ["subject000", "subject001", "subject002", "subject003", "subject004"] * 2,
            "group": ["site0"] * 10,
            "time": [2e5 + i for i in range(10)],
            "kind": ["LAB"] * 10,
            "code": ["LAB//0//mg"] * 10,
            "value": [None, None, None, None, 3.0, None, 1e300, float("inf"), None, None],
            "text": ["12", " 9.5 ", "abc", "1e1", "7", "12", None, "x", "", "-0.5"],
        }
    )
    return pl.concat(
        [frame, extra.select(frame.columns), numbers.select(frame.columns)],
        how="vertical_relaxed",
    )


SCHEMES = {
    "fused": TokenScheme(
        value_bins=4, min_values_per_bin=2, time_tokens=True, time_gap_edges=("15m", "1h")
    ),
    "separate": TokenScheme(value_bins=3, min_values_per_bin=2, value_mode="separate"),
    "text": TokenScheme(value_bins=4, min_values_per_bin=2, use_text=True),
    "ignore": TokenScheme(value_mode="ignore"),
}


@pytest.mark.parametrize("name", list(SCHEMES))
def test_pair_tokens_equal_event_token_frame_row_by_row(name):
    scheme = SCHEMES[name]
    rows = sorted_events(ingested(awkward_rows()).events.frame).collect()
    sampler = ValueSampler(scheme.value_sample_size)
    sampler.add(rows)
    bins = sampler.fit(scheme)
    expected = event_token_frame(rows.lazy(), scheme, bins).collect()

    keyed, pairs = keyed_rows(rows, scheme, bins)
    tokens = pair_tokens(pairs, scheme).sort("pair")
    per_row = tokens[keyed["pair"].to_numpy()]
    columns = ("data_token", "unknown", "reserved_label", "bin", "text", "text_fate", "value_fate")
    for column in columns:
        assert per_row[column].to_list() == expected[column].to_list(), column
    for column in ("time_s", "gap"):
        assert keyed[column].to_list() == expected[column].to_list(), column
    # Entities become their run ids, in sorted order.
    runs = expected["entity"].rle_id().cast(pl.Int64)
    assert keyed["entity"].to_list() == runs.to_list()

    train = (rows["entity"].str.slice(-1).cast(pl.Int64) % 3 != 0).to_numpy()
    reference = TokenCounter()
    reference.add(expected.filter(pl.Series(train)))
    counted = TokenCounter()
    counted.add_counted(*train_counts(keyed, tokens, train))

    # Holders are tagged per chunk and are run ids here, names there: compare how many.
    def comparable(counter: TokenCounter) -> list[dict]:
        frame = counter._tokens.with_columns(pl.col("holders").list.len())
        return frame.sort("data_token").to_dicts()

    assert comparable(counted) == comparable(reference)
    assert counted.choose(scheme, bins, scheme.time_gap_tokens()) == reference.choose(
        scheme, bins, scheme.time_gap_tokens()
    )
    assert np.array_equal(
        per_row["reserved_label"].to_numpy(), expected["reserved_label"].to_numpy()
    )


def _fitted(scheme: TokenScheme) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, Vocabulary]:
    """The awkward rows, their keyed rows and pair tokens, and the vocabulary fitted on
    all of them through the count stage's path."""
    rows = sorted_events(ingested(awkward_rows()).events.frame).collect()
    sampler = ValueSampler(scheme.value_sample_size)
    sampler.add(rows)
    bins = sampler.fit(scheme)
    keyed, pairs = keyed_rows(rows, scheme, bins)
    tokens = pair_tokens(pairs, scheme).sort("pair")
    counter = TokenCounter()
    counter.add_counted(*train_counts(keyed, tokens, np.ones(rows.height, dtype=bool)))
    vocab = Vocabulary.from_fitted(scheme, counter.choose(scheme, bins, scheme.time_gap_tokens()))
    return rows, keyed, tokens, vocab


@pytest.mark.parametrize("name", list(SCHEMES))
@pytest.mark.parametrize("min_count", [1, 3])
def test_token_layout_through_its_table_equals_encode_events(name, min_count):
    """The count stage lays the sequences out before the vocabulary exists, with
    provisional ids; mapped through `layout_table` they are the ids, lengths and times
    `Vocabulary.encode_events` gives (time-gap and value tokens, unknowns included)."""
    scheme = replace(SCHEMES[name], min_count=min_count)
    rows, keyed, tokens, vocab = _fitted(scheme)
    expected = vocab.encode_events(rows)

    layout = token_layout(keyed, scheme)
    ids = layout_table(vocab, tokens)[layout.ids]
    assert ids.dtype == vocab.token_dtype
    assert ids.tolist() == expected.ids.tolist()
    assert layout.lengths.tolist() == expected.lengths.tolist()
    assert layout.times.tolist() == expected.times.tolist()


@pytest.mark.parametrize("name", list(SCHEMES))
def test_lookups_by_hash_equal_the_map_lookups(monkeypatch, name):
    """The encode stage's ids and value fates through `TokenIndex` equal those of the
    map lookups it replaced (kept for vocabularies whose tokens share a hash), with
    tokens the vocabulary cut (min_count 3) so that some pairs are not found."""
    scheme = replace(SCHEMES[name], min_count=3)
    rows, keyed, tokens, vocab = _fitted(scheme)
    counted = tokens.with_columns(
        pl.Series("rows", np.bincount(keyed["pair"].to_numpy(), minlength=tokens.height))
    )
    assert token_rows.vocabulary_frames(vocab).index is not None
    by_hash = layout_table(vocab, tokens), token_rows.pair_fate_counts(vocab, counted)
    token_rows._FRAMES.clear()
    monkeypatch.setattr(token_rows.TokenIndex, "build", lambda tokens, ids: None)
    assert token_rows.vocabulary_frames(vocab).index is None
    by_map = layout_table(vocab, tokens), token_rows.pair_fate_counts(vocab, counted)
    token_rows._FRAMES.clear()
    assert by_hash[0].tolist() == by_map[0].tolist()
    assert by_hash[1] == by_map[1]
    assert (by_hash[0] == UNK_ID).any() or name == "separate"


@pytest.mark.parametrize("cache_size", [token_rows.CACHED_TOKENS, 3])
def test_pair_tokens_kept_for_later_partitions_equal_fresh_ones(monkeypatch, cache_size):
    """The strings `pair_tokens` keeps in the process for the next partitions (a join
    instead of the escapes) are those `with_token_strings` makes, across schemes and
    for pair tables that are partly new; also when the cache overflows and starts again
    (cache_size 3: every partly new table passes it, as a full hospital's codes do)."""
    monkeypatch.setattr(token_rows, "CACHED_TOKENS", cache_size)
    token_rows._TOKEN_CACHE.clear()
    rows = sorted_events(ingested(awkward_rows()).events.frame).collect()
    for name in ("text", "fused", "text", "separate"):
        scheme = SCHEMES[name]
        sampler = ValueSampler(scheme.value_sample_size)
        sampler.add(rows)
        _, pairs = keyed_rows(rows, scheme, sampler.fit(scheme))
        for part in (pairs.head(pairs.height // 2), pairs, pairs.reverse()):
            assert_frame_equal(pair_tokens(part, scheme), with_token_strings(part, scheme))


def test_a_fresh_counter_keeps_its_table_as_the_merge_would():
    """`add_counted` on a fresh counter keeps one partition's table without regrouping
    it: merged, it gives what regrouping gives (holders cut past HOLDERS_KEPT, their
    order aside), and a table with a repeated token is still regrouped."""
    scheme = SCHEMES["text"]
    rows = sorted_events(ingested(awkward_rows()).events.frame).collect()
    # Six copies under other names: the common tokens have more than HOLDERS_KEPT.
    many = pl.concat([rows.with_columns(pl.col("entity") + str(copy)) for copy in range(6)])
    keyed, pairs = keyed_rows(sorted_events(many.lazy()).collect(), scheme, {})
    tokens = pair_tokens(pairs, scheme).sort("pair")
    counted = train_counts(keyed, tokens, np.ones(keyed.height, dtype=bool))
    fresh, regrouped = TokenCounter(), TokenCounter()
    fresh.add_counted(*counted)
    regrouped._absorb(fitting._tagged_holders(counted[0].drop("sources")))

    def merged(counter: TokenCounter) -> list[dict]:
        total = TokenCounter()
        total.merge(counter)
        total._flush()
        frame = total._tokens.with_columns(pl.col("holders").list.len())
        return frame.sort("data_token").to_dicts()

    assert merged(fresh) == merged(regrouped)
    assert fresh._tokens["entities"].max() > fitting.HOLDERS_KEPT
    assert fresh._tokens["holders"].list.len().max() <= fitting.HOLDERS_KEPT
    twice = TokenCounter()
    twice.add_counted(pl.concat([counted[0], counted[0]]), counted[1])
    assert twice._tokens["data_token"].is_unique().all()


def test_merging_counters_of_tokens_of_their_own_regroups_a_logarithmic_number_of_times(
    monkeypatch,
):
    """Partitions whose tokens are all their own (a 100k-code vocabulary): the merged
    table grows with every merge, so the wait before regrouping grows with it (half its
    bytes) instead of staying at PENDING_BYTES; the counts equal one regrouping of all."""
    scheme = SCHEMES["text"]
    rows = sorted_events(ingested(awkward_rows()).events.frame).collect()
    parts = []
    for copy in range(32):
        own = rows.with_columns(
            pl.col("entity") + f"c{copy}",
            pl.col("code").cast(pl.String) + f"//c{copy}",
        )
        keyed, pairs = keyed_rows(sorted_events(own.lazy()).collect(), scheme, {})
        tokens = pair_tokens(pairs, scheme).sort("pair")
        counter = TokenCounter()
        counter.add_counted(*train_counts(keyed, tokens, np.ones(keyed.height, dtype=bool)))
        parts.append(counter)

    def merged_all(pending_bytes: int) -> tuple[list[dict], int]:
        monkeypatch.setattr(fitting, "PENDING_BYTES", pending_bytes)
        absorbed = []
        absorb = TokenCounter._absorb
        monkeypatch.setattr(
            TokenCounter, "_absorb", lambda self, t: (absorbed.append(t.height), absorb(self, t))
        )
        total = TokenCounter()
        for part in parts:
            total.merge(part)
        total._flush()
        monkeypatch.setattr(TokenCounter, "_absorb", absorb)
        frame = total._tokens.with_columns(pl.col("holders").list.sort())
        return frame.sort("data_token").to_dicts(), len(absorbed)

    at_once, once = merged_all(10**12)
    stepwise, times = merged_all(1)
    assert once == 1 and stepwise == at_once
    assert 2 < times <= 12  # 32 merges, each table new: the waits double


@given(
    keys=st.lists(st.integers(0, 999), max_size=200),
    dense_below=st.sampled_from([0, 1 << 24]),
)
def test_distinct_sorted_equals_numpy_unique(keys, dense_below):
    """Both ways (marked in an array, or hashed and sorted) give np.unique's keys."""
    array = np.array(keys, dtype=np.int64)
    found = distinct_sorted(array, 1000 if dense_below else 10**9, dense_below)
    assert found.tolist() == np.unique(array).tolist()
