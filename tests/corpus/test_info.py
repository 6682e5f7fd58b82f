"""corpus_info: every figure checked against a direct count."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from helpers.corpus_helpers import clinic_frame, ingested

from seqlm.corpora_adapters.base import RejectLog
from seqlm.corpus import SplitConfig, build_corpus, corpus_info
from seqlm.vocabularies import TokenScheme


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    rejects = RejectLog()
    for row in (3, 4, 8):
        rejects.add("labs.csv", row, "no time", column="time")
    rejects.add("labs.csv", 11, "unparsable value", column="value")
    scheme = TokenScheme(
        value_bins=4,
        min_values_per_bin=2,
        min_entities=3,
        time_tokens=True,
        time_gap_edges=("15m", "1h", "1d"),
    )
    out = tmp_path_factory.mktemp("info") / "corpus"
    return build_corpus(ingested(clinic_frame(40), rejects=rejects), out, scheme, SplitConfig())


def test_counts_splits_and_groups(built):
    info = corpus_info(built.path)
    index = built.index
    assert info.sequences == 40 and info.vocab_size == built.vocab_size
    assert info.tokens == int(index["length"].sum())
    assert {s.split: s.sequences for s in info.splits} == dict(
        index.group_by("split").len().iter_rows()
    )
    assert sum(g.tokens for g in info.groups) == info.tokens
    site0_train = index.filter((pl.col("group") == "site0") & (pl.col("split") == "train"))
    (match,) = [g for g in info.groups if (g.split, g.group) == ("train", "site0")]
    assert (match.sequences, match.tokens) == (site0_train.height, site0_train["length"].sum())
    assert info.rejects_by_reason == {"no time": 3, "unparsable value": 1}
    assert (info.rows_read, info.events, info.rejects) == (
        built.manifest["counts"]["rows_read"],
        built.manifest["counts"]["events"],
        4,
    )


def test_token_figures(built):
    info = corpus_info(built.path, top=5)
    vocab = built.vocabulary
    counts = np.bincount(np.asarray(built.tokens), minlength=built.vocab_size)
    assert [t.count for t in info.top_tokens] == sorted(counts.tolist(), reverse=True)[:5]
    assert info.top_tokens[0].share == pytest.approx(info.top_tokens[0].count / counts.sum())
    unknown = sum(counts[i] for i, t in enumerate(vocab.tokens) if t.endswith("[UNK]"))
    timed = sum(counts[i] for i, t in enumerate(vocab.tokens) if t.startswith("[TIME//"))
    assert info.unknown_share == pytest.approx(unknown / counts.sum())
    assert info.time_token_share == pytest.approx(timed / counts.sum())
    assert 0 < info.time_token_share < 1
    lengths = built.index["length"].to_numpy()
    assert info.length_percentiles[0] == lengths.min()
    assert info.length_percentiles[50] == pytest.approx(np.median(lengths))
    assert info.length_percentiles[100] == lengths.max()
    assert info.mean_tokens_per_sequence == pytest.approx(lengths.mean())


def test_binned_codes_are_the_most_frequent_with_their_edges(built):
    info = corpus_info(built.path, binned_codes=2)
    vocab = built.vocabulary
    assert len(info.binned_codes) == 2
    counts = np.bincount(np.asarray(built.tokens), minlength=built.vocab_size)
    per_code: dict[str, int] = {}
    for token, entry in vocab.data_tokens.items():
        if entry.code in vocab.value_bins:
            per_code[entry.code] = per_code.get(entry.code, 0) + counts[vocab.token_to_id[token]]
    ranked = sorted(per_code.items(), key=lambda kv: (-kv[1], kv[0]))[:2]
    assert [(b.code, b.tokens) for b in info.binned_codes] == ranked
    for b in info.binned_codes:
        assert b.edges == vocab.value_bins[b.code].edges
