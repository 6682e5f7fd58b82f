"""Per-code quantile bins: edges, bin assignment, the bounded sampler."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqlm.vocabularies import CodeValueBins, TokenScheme, value_bins, value_sample
from seqlm.vocabularies.value_bins import (
    ValueSampler,
    fit_code_bins,
    quantile_edges,
    with_bin_numbers,
)


def test_deciles_of_one_to_hundred_hold_ten_values_each():
    values = np.arange(1, 101, dtype=float)
    bins = fit_code_bins(values, 10)
    assert bins.n_bins == 10
    counts = np.bincount([bins.bin_of(v) for v in values])[1:]
    assert counts.tolist() == [10] * 10
    assert bins.centres[0] == pytest.approx(5.5)  # median of 1..10
    assert bins.centres[-1] == pytest.approx(95.5)


def test_tied_quantiles_merge_and_no_edge_sits_at_the_minimum():
    values = np.array([0.0] * 60 + [1.0] * 30 + [5.0] * 10)
    edges = quantile_edges(values, 10)
    assert edges.tolist() == sorted(set(edges.tolist()))
    assert edges.min() > 0.0
    bins = fit_code_bins(values, 10)
    # every bin holds train values
    which = [bins.bin_of(v) for v in values]
    assert set(which) == set(range(1, bins.n_bins + 1))


def test_constant_values_give_no_bins():
    assert fit_code_bins(np.full(50, 3.0), 10) is None


def test_bin_boundaries_are_closed_below():
    bins = CodeValueBins(edges=(1.0, 2.0), centres=(0.5, 1.5, 2.5))
    assert [bins.bin_of(v) for v in (0.99, 1.0, 1.99, 2.0, 7.0)] == [1, 2, 2, 3, 3]
    assert bins.bin_of(-math.inf) == 1 and bins.bin_of(math.inf) == 3
    assert bins.bin_of(math.nan) is None
    assert bins.interval(1) == (-math.inf, 1.0)
    assert bins.interval(2) == (1.0, 2.0)
    assert bins.interval(3) == (2.0, math.inf)
    with pytest.raises(ValueError):
        bins.interval(4)
    assert CodeValueBins.from_json(bins.to_json()) == bins


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c"]),
            st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True, width=32)),
        ),
        max_size=60,
    )
)
def test_vectorised_bins_match_bin_of(rows):
    bins = {
        "a": CodeValueBins(edges=(-1.0, 0.0, 2.5), centres=(-2.0, -0.5, 1.0, 3.0)),
        "b": CodeValueBins(edges=(10.0,), centres=(5.0, 15.0)),
    }
    frame = pl.DataFrame(rows, schema={"code": pl.String, "value": pl.Float64}, orient="row")
    result = with_bin_numbers(frame.lazy(), bins).collect()
    assert result["code"].to_list() == frame["code"].to_list()  # order kept
    for code, value, got in result.select("code", "value", "bin").iter_rows():
        expected = None
        if code in bins and value is not None and not math.isnan(value):
            expected = bins[code].bin_of(value)
        assert got == expected


def _events(values: dict[str, list[tuple[str, float]]]) -> pl.DataFrame:
    rows = [
        (entity, float(i), i, code, value)
        for code, pairs in values.items()
        for i, (entity, value) in enumerate(pairs)
    ]
    return pl.DataFrame(
        rows,
        schema={
            "entity": pl.String,
            "time": pl.Float64,
            "order": pl.Int64,
            "code": pl.String,
            "value": pl.Float64,
        },
        orient="row",
    )


def test_sampler_is_bounded_and_independent_of_chunking():
    rng = np.random.default_rng(0)
    pairs = [(f"e{i % 40}", float(v)) for i, v in enumerate(rng.normal(size=2000))]
    events = _events({"LAB//x": pairs})
    whole = ValueSampler(sample_size=100)
    whole.add(events)
    chunked = ValueSampler(sample_size=100)
    for k in range(4):  # chunks of whole entities
        chunked.add(events.filter(pl.col("entity").str.slice(1).cast(pl.Int64) % 4 == k))
    assert whole._sample.height == 100
    assert whole._sample.sort("rank_key").equals(chunked._sample.sort("rank_key"))
    assert whole.value_counts().equals(chunked.value_counts())
    assert whole.value_counts().row(0) == ("LAB//x", 2000, 40)
    scheme = TokenScheme()
    assert whole.fit(scheme) == chunked.fit(scheme)


def test_merged_samples_drop_rows_that_cannot_enter_and_keep_the_same_sample(monkeypatch):
    """Once a code's merged sample is full, rows at or above its largest key are dropped
    on arrival (few rows wait); the sample equals ranking everything at once."""
    rng = np.random.default_rng(1)
    parts = []
    for k in range(12):  # partitions of whole, distinct entities
        pairs = [(f"p{k}e{i % 30}", float(v)) for i, v in enumerate(rng.normal(size=300))]
        pairs += [(f"p{k}e{i}", float(i % 3)) for i in range(20)]  # tied values
        sampler = ValueSampler(sample_size=50)
        sampler.add(_events({"LAB//x": pairs[:300], "LAB//y": pairs[300:]}))
        parts.append(sampler)
    monkeypatch.setattr(value_bins, "PENDING_ROWS", 10**9)
    at_once = ValueSampler(sample_size=50)
    for part in parts:
        at_once._pending.append((part._stats, part._sample))
    monkeypatch.setattr(value_bins, "PENDING_ROWS", 60)
    merged = ValueSampler(sample_size=50)
    waited = 0
    for part in parts:
        merged.merge(part)
        waited += merged._pending_rows
    at_once._flush()
    merged._flush()
    assert merged._sample.equals(at_once._sample)
    assert merged.value_counts().equals(at_once.value_counts())
    assert merged.fit(TokenScheme()) == at_once.fit(TokenScheme())
    assert merged._cuts.height == 2  # both codes have more than 50 values
    assert waited < sum(p._sample.height for p in parts) // 2


def test_sampler_fit_rules():
    many = [(f"e{i % 10}", float(i)) for i in range(100)]
    few = [(f"e{i}", float(i)) for i in range(9)]  # fewer than 2 bins' worth at 5 per bin
    narrow = [("e0", float(i)) for i in range(100)]  # one entity only
    middle = [(f"e{i % 7}", float(i)) for i in range(30)]  # 30 values: 6 bins of 5
    sampler = ValueSampler(sample_size=1000)
    sampler.add(_events({"many": many, "few": few, "narrow": narrow, "middle": middle}))
    fitted = sampler.fit(TokenScheme(min_entities=5))
    assert set(fitted) == {"many", "middle"}
    assert fitted["many"].n_bins == 10
    assert fitted["middle"].n_bins == 6
    assert sampler.fit(TokenScheme(value_mode="ignore")) == {}


def test_sampler_ignores_nan_and_infinite_values():
    sampler = ValueSampler(sample_size=10)
    sampler.add(_events({"x": [("e", math.nan), ("e", math.inf), ("e", 1.0)]}))
    assert sampler.value_counts().row(0) == ("x", 1, 1)


def test_values_one_ulp_apart_share_a_bin_and_edges_are_float32():
    """Issue 20 (es-aces sample): one SpO2 value stored as two float64 numbers one unit in
    the last place apart landed in two bins. Binning sees the value as the corpus stores
    it (float32), so they are one value, and every edge is a float32 value."""
    spo2 = 98.0
    twin = float(np.nextafter(spo2, np.inf))  # the same reading, one float64 ulp higher
    values = [90.0, 92.0, 94.0, 95.0, 96.0, 97.0, spo2, twin, 99.0, 100.0] * 10
    sampler = ValueSampler(sample_size=1000)
    sampler.add(_events({"SpO2": [(f"e{i % 20}", v) for i, v in enumerate(values)]}))
    bins = sampler.fit(TokenScheme(value_bins=10, min_values_per_bin=1))["SpO2"]
    assert all(float(np.float32(edge)) == edge for edge in bins.edges)
    assert bins.bin_of(spo2) == bins.bin_of(twin)
    frame = pl.LazyFrame({"code": ["SpO2", "SpO2"], "value": [spo2, twin]})
    from seqlm.vocabularies.value_bins import stored_value

    binned = with_bin_numbers(frame.with_columns(stored_value(pl.col("value"))), {"SpO2": bins})
    assert binned.collect()["bin"].n_unique() == 1


def test_event_tokens_bin_the_stored_value(tmp_path):
    """The same through the whole vocabulary: equal float32 values give one token."""
    from seqlm.corpora_adapters.base import EventTable
    from seqlm.vocabularies import Vocabulary

    twin = float(np.nextafter(98.0, np.inf))
    base = [90.0, 92.0, 94.0, 95.0, 96.0, 97.0, 98.0, twin, 99.0, 100.0] * 10
    rows = [(f"s{i % 20}", float(i), i, "LAB", "LAB//SpO2", v, None, "train")
            for i, v in enumerate(base)]  # fmt: skip
    rows += [("s0", 1000.0, 1000, "LAB", "LAB//SpO2", 98.0, None, "train"),
             ("s0", 1001.0, 1001, "LAB", "LAB//SpO2", twin, None, "train")]  # fmt: skip
    frame = pl.DataFrame(
        rows,
        schema=["entity", "time", "order", "kind", "code", "value", "text", "split"],
        orient="row",
    )
    events = EventTable.from_frame(frame, ())
    vocab = Vocabulary.fit(events, TokenScheme(value_bins=10, min_values_per_bin=1))
    tokens = vocab.tokenize(events).collect()
    last_two = tokens.filter(pl.col("entity") == "s0")["token"].to_list()[-3:-1]
    assert last_two[0] == last_two[1]


def test_sampler_reads_categorical_codes_and_texts_as_strings():
    """The corpus build's sorted files keep codes and texts categorical (their texts
    parsed once per distinct text): the sample and counts are those of the strings."""
    rng = np.random.default_rng(3)
    n = 600
    texts = [" 7.5", "12", "abc", "", None, "1e2", "x y", "-3"]
    frame = pl.DataFrame(
        {
            "entity": [f"e{i // 20:03d}" for i in range(n)],
            "time": np.arange(n, dtype=float),
            "order": np.arange(n),
            "code": rng.choice(["A", "B", "C"], n),
            "value": np.where(rng.random(n) < 0.5, rng.normal(5, 2, n), np.nan),
            "text": [texts[k] for k in rng.integers(0, len(texts), n)],
        }
    )
    plain, categorical = ValueSampler(50), ValueSampler(50)
    plain.add(frame, entity_runs=True)
    cast = [pl.col(c).cast(pl.Categorical) for c in ("code", "text")]
    categorical.add(frame.with_columns(cast), entity_runs=True)
    scheme = TokenScheme(value_bins=4, min_values_per_bin=2, use_text=True)
    assert categorical.fit(scheme) == plain.fit(scheme)
    for sampler in (plain, categorical):
        sampler._flush()
    assert categorical._stats.sort("code").equals(plain._stats.sort("code"))
    assert categorical._sample.sort("rank_key").equals(plain._sample.sort("rank_key"))


def _numpy_bins(values: np.ndarray, n_bins: int) -> CodeValueBins | None:
    """The bins as `fit_code_bins` made them before it read the medians off the sorted
    values: a mask and `np.median` per bin."""
    values = np.sort(np.asarray(values, dtype=np.float64))
    edges = quantile_edges(values, n_bins)
    if edges.size == 0:
        return None
    which = np.searchsorted(edges, values, side="right")
    centres = tuple(float(np.median(values[which == k])) for k in range(edges.size + 1))
    return CodeValueBins(edges=tuple(float(e) for e in edges), centres=centres)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.floats(-1e6, 1e6, allow_nan=False, width=32) | st.sampled_from([0.0, 1.0, 7.5]),
        min_size=1,
        max_size=300,
    ),
    st.integers(2, 12),
)
def test_bin_centres_read_off_sorted_values_equal_numpys_medians(values, n_bins):
    """Bit for bit: the corpus's scheme.json holds these floats."""
    assert fit_code_bins(np.array(values), n_bins) == _numpy_bins(np.array(values), n_bins)


def test_fitted_bins_do_not_depend_on_the_order_codes_are_read():
    """`ValueSampler.fit` reads the codes in any order (a group-by): the bins come
    back sorted by code, with each code's text-number flag."""
    sampler = ValueSampler(50)
    rng = np.random.default_rng(3)
    codes = [f"C{k % 13}" for k in range(4000)]
    texts = [
        f"{v:.1f}" if c == "C3" else None for c, v in zip(codes, rng.normal(size=4000), strict=True)
    ]
    frame = pl.DataFrame(
        {
            "entity": [f"e{k % 40}" for k in range(4000)],
            "time": np.arange(4000, dtype=float),
            "order": np.arange(4000),
            "code": codes,
            "value": [
                None if c == "C3" else v for c, v in zip(codes, rng.normal(size=4000), strict=True)
            ],
            "text": texts,
        }
    )
    sampler.add(frame)
    scheme = TokenScheme(min_entities=1, value_bins=5, use_text=True)
    bins = sampler.fit(scheme)
    assert list(bins) == sorted(bins) and len(bins) == 13
    assert bins["C3"].text_numbers and not bins["C4"].text_numbers
    assert all(len(b.centres) == b.n_bins for b in bins.values())


def test_samples_pruned_at_earlier_cuts_merge_into_the_same_sample(monkeypatch):
    """A worker cuts its sample at the cuts the merged sampler had when the task was
    sent (`prune`): fewer rows travel, and the merged sample, counts and bins are the
    ones the whole samples give."""
    monkeypatch.setattr(value_bins, "PENDING_ROWS", 60)
    rng = np.random.default_rng(2)

    def part(k: int) -> ValueSampler:
        pairs = [(f"p{k}e{i % 30}", float(v)) for i, v in enumerate(rng.normal(size=300))]
        sampler = ValueSampler(sample_size=50)
        sampler.add(_events({"LAB//x": pairs[:250], "LAB//y": pairs[250:]}))
        return sampler

    parts = [part(k) for k in range(12)]
    whole, pruned = ValueSampler(sample_size=50), ValueSampler(sample_size=50)
    sent = 0
    for k, sample in enumerate(parts):
        whole.merge(sample)
        copy = ValueSampler(sample_size=50)
        copy._stats, copy._sample = sample._stats, sample._sample
        copy.prune(pruned.cuts if k % 3 else ValueSampler(50).cuts)  # some with none yet
        sent += copy._sample.height
        pruned.merge(copy)
    whole._flush()
    pruned._flush()
    assert sent < sum(p._sample.height for p in parts)
    assert pruned._sample.sort("rank_key").equals(whole._sample.sort("rank_key"))
    assert pruned.value_counts().equals(whole.value_counts())
    assert pruned.fit(TokenScheme()) == whole.fit(TokenScheme())


def _ranked_definition(rows: pl.DataFrame, size: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The sample and cuts by ranking every row within its (code, source)."""
    rank = pl.col("rank_key").rank("ordinal").over("code", "source")
    sample = rows.filter(rank <= size)
    cuts = (
        sample.group_by("code", "source")
        .agg(pl.len(), pl.col("rank_key").max().alias("cut"))
        .filter(pl.col("len") >= size)
        .drop("len")
    )
    return sample, cuts


def _sample_rows(rows: list[tuple[str, int, int]]) -> pl.DataFrame:
    """Sample rows (code, source, rank key), valued by their place."""
    return pl.DataFrame(
        {
            "code": [r[0] for r in rows],
            "source": [r[1] for r in rows],
            "value": [float(i) for i in range(len(rows))],
            "rank_key": [r[2] for r in rows],
        },
        schema={"code": pl.String, "source": pl.Int8, "value": pl.Float64, "rank_key": pl.UInt64},
    ).with_columns(pl.col("code").cast(pl.Categorical))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["A", "B", "C"]), st.integers(0, 1), st.integers(0, 30)),
        max_size=60,
    ),
    st.integers(1, 8),
)
def test_smallest_keys_equal_ranking_every_row(rows, size):
    """`smallest_keys` ranks only the groups that fill the sample: the same rows, in
    the same order (ties, repeated keys here, to the earlier row), and the same cuts."""
    frame = _sample_rows(rows)
    no_cuts = ValueSampler(size).cuts
    sample, cuts = value_sample.smallest_keys(frame, size, no_cuts)
    plain_sample, plain_cuts = _ranked_definition(frame, size)
    assert sample.equals(plain_sample)
    order = ["code", "source"]
    found = cuts.with_columns(pl.col("code").cast(pl.String)).sort(order)
    assert found.equals(plain_cuts.with_columns(pl.col("code").cast(pl.String)).sort(order))
    assert cuts.schema == no_cuts.schema


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from([0.0, -0.0, 1.0, -1.0, 2.5]) | st.floats(-1e3, 1e3, width=32),
        min_size=1,
        max_size=200,
    ),
    st.integers(2, 25),
)
def test_edges_read_off_sorted_values_equal_numpys_quantiles(values, n_bins):
    """Bit for bit, signed zeros included (equal, not the same bits): the edges read at
    numpy's "higher" positions of the sorted values are `np.quantile`'s."""
    ordered = np.sort(np.array(values, dtype=np.float64))
    found = value_bins._sorted_quantile_edges(ordered, n_bins)
    expected = quantile_edges(ordered, n_bins)
    assert found.tobytes() == expected.tobytes()
    assert fit_code_bins(np.array(values), n_bins) == _numpy_bins(np.array(values), n_bins)


def _code_values_definition(
    sample: pl.DataFrame, wanted: dict[str, int], text_codes: set[str], size: int
) -> dict[str, list[float]]:
    """Each wanted code's values by string casts, filters and a ranking of the sample."""
    code = pl.col("code")
    sample = sample.with_columns(code.cast(pl.String)).filter(code.is_in(list(wanted)))
    has_text = code.is_in(list(text_codes))
    plain = sample.filter(~has_text & (pl.col("source") == 0))
    texts = sample.filter(has_text)
    texts = texts.filter(pl.col("rank_key").rank("ordinal").over("code") <= size)
    grouped = pl.concat([plain, texts]).group_by("code", maintain_order=True).agg("value")
    return dict(zip(grouped["code"], grouped["value"].to_list(), strict=True))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from("ABCDE"), st.integers(0, 1), st.integers(0, 12)),
        max_size=80,
    ),
    st.sets(st.sampled_from("ABCDEF")),
    st.sets(st.sampled_from("ABCDEF")),
    st.integers(1, 6),
)
def test_code_values_equal_ranking_the_sample(rows, wanted, text_codes, size):
    """The values each wanted code is fitted on, in sample order (numpy's sort of them
    is then the old one): a text code's `size` of smallest key, ties to the earlier."""
    sample = _sample_rows(rows)
    wanted_bins = dict.fromkeys(wanted, 3)
    found = value_sample.code_values(sample, wanted_bins, text_codes, size)
    got = {name: values.tolist() for name, values in found}
    assert got == _code_values_definition(sample, wanted_bins, text_codes, size)


def test_a_sample_of_codes_that_never_fill_is_not_reranked_for_every_merge(monkeypatch):
    """Codes of their own in every partition (a 100k-code vocabulary): no code's sample
    fills, so it keeps every value; the merges rank it a logarithmic number of times
    (the wait grows with the sample), not once per PENDING_ROWS, and keep the sample
    that ranking everything at once keeps."""
    monkeypatch.setattr(value_bins, "PENDING_ROWS", 60)
    rng = np.random.default_rng(3)
    parts = []
    for k in range(64):
        pairs = [(f"p{k}e{i % 7}", float(v)) for i, v in enumerate(rng.normal(size=40))]
        sampler = ValueSampler(sample_size=50)
        sampler.add(_events({f"LAB//{k}a": pairs[:20], f"LAB//{k}b": pairs[20:]}))
        parts.append(sampler)
    at_once, merged = ValueSampler(sample_size=50), ValueSampler(sample_size=50)
    for part in parts:
        at_once._pending.append((part._stats, part._sample))
    ranked = []
    absorb = ValueSampler._absorb
    monkeypatch.setattr(
        ValueSampler, "_absorb", lambda self, s, k: (ranked.append(k.height), absorb(self, s, k))
    )
    for part in parts:
        merged.merge(part)
    merged._flush()
    assert len(ranked) <= 8  # 2,560 rows in batches that double: 60, 60, 120, 240, ...
    at_once._flush()
    assert merged._sample.height == 64 * 40
    assert merged._sample.equals(at_once._sample)
    assert merged.fit(TokenScheme()) == at_once.fit(TokenScheme())


@pytest.mark.parametrize("by_hash", [True, False])
@given(
    table=st.dictionaries(
        st.text(alphabet="LAB/0129", min_size=1, max_size=5),
        st.lists(st.floats(-50, 50, width=32), max_size=6, unique=True),
        max_size=12,
    ),
    data=st.data(),
)
def test_bin_lookup_gives_each_codes_bin_of(by_hash, table, data):
    """The matrix lookup (codes found by hash, or by the map when hashes collide) bins
    every value as its code's `CodeValueBins.bin_of` does; codes without bins get 0."""
    bins = {
        code: CodeValueBins(edges=tuple(sorted(e)), centres=(0.0,) * (len(e) + 1))
        for code, e in table.items()
    }
    code = st.sampled_from([*table, "other"])
    values = data.draw(st.lists(st.tuples(code, st.floats(-60, 60, width=32)), max_size=30))
    lookup = value_bins.BinLookup(bins)
    codes = pl.Series([c for c, _ in values], dtype=pl.String)
    with pytest.MonkeyPatch.context() as patch:
        if not by_hash:
            patch.setattr(value_bins.TokenIndex, "build", lambda tokens, ids: None)
        which = lookup.which(codes)
    found = lookup.numbers(which, np.array([v for _, v in values], dtype=np.float64))
    expected = [bins[c].bin_of(v) if c in bins else 0 for c, v in values]
    assert found.tolist() == expected
