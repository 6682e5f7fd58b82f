"""subset_corpus: the chosen sequences, the same vocabulary, a loadable folder."""

from __future__ import annotations

import filecmp

import numpy as np
import pytest
from helpers.corpus_helpers import clinic_frame, ingested
from hypothesis import given, settings
from hypothesis import strategies as st

from seqlm.corpus import SplitConfig, build_corpus, load_corpus
from seqlm.corpus.subset import parse_where, select_rows, subset_corpus
from seqlm.errors import ConfigError, CorpusError
from seqlm.vocabularies import TokenScheme


@pytest.fixture(scope="module")
def clinic(tmp_path_factory):
    out = tmp_path_factory.mktemp("subset") / "clinic"
    return build_corpus(ingested(clinic_frame(30)), out, TokenScheme(), SplitConfig())


def test_subset_keeps_the_matching_sequences_and_vocabulary(clinic, tmp_path) -> None:
    subset = subset_corpus(clinic, tmp_path / "site1", {"group": "site1"})
    chosen = clinic.index.filter(clinic.index["group"] == "site1")
    assert subset.index.height == chosen.height == 10
    assert subset.index["seq_id"].to_list() == list(range(10))
    assert subset.index["entity"].to_list() == chosen["entity"].to_list()
    assert subset.index["split"].to_list() == chosen["split"].to_list()
    for new_id, old_id in enumerate(chosen["seq_id"].to_list()):
        np.testing.assert_array_equal(subset.sequence(new_id), clinic.sequence(old_id))
        np.testing.assert_array_equal(subset.sequence_times(new_id), clinic.sequence_times(old_id))
    for name in ("tokenizer.json", "scheme.json"):
        assert filecmp.cmp(clinic.path / name, subset.path / name, shallow=False)
    assert subset.vocabulary.hash == clinic.vocabulary.hash
    counts = subset.manifest["counts"]
    assert counts["sequences"] == 10 and counts["tokens"] == int(chosen["length"].sum())
    assert sum(counts["sequences_per_split"].values()) == 10
    assert subset.manifest["subset"]["where"] == {"group": "site1"}
    assert subset.manifest["subset"]["source_sequences"] == 30


def test_conditions_combine_and_lists_mean_any_of(clinic) -> None:
    index = clinic.index
    both = select_rows(index, {"group": ["site0", "site2"], "split": "train"})
    expected = index.filter(index["group"].is_in(["site0", "site2"]) & (index["split"] == "train"))
    assert both["seq_id"].to_list() == expected["seq_id"].to_list()
    # values compare as strings, so an integer column matches "3"
    assert select_rows(index, {"seq_id": "3"})["entity"].to_list() == [index["entity"][3]]
    assert parse_where(["condition=pre", "group=bird1,bird2", "group=bird3"]) == {
        "condition": ["pre"],
        "group": ["bird1", "bird2", "bird3"],
    }
    with pytest.raises(ConfigError, match="column=value"):
        parse_where(["condition"])


def test_bad_requests_raise_project_errors(clinic, tmp_path) -> None:
    with pytest.raises(CorpusError, match="no sequence"):
        subset_corpus(clinic, tmp_path / "none", {"group": "site9"})
    with pytest.raises(ConfigError, match="cannot filter"):
        subset_corpus(clinic, tmp_path / "x", {"colour": "red"})
    with pytest.raises(ConfigError, match="at least one"):
        subset_corpus(clinic, tmp_path / "x", {})
    with pytest.raises(ConfigError, match="cannot replace"):
        subset_corpus(clinic, clinic.path, {"group": "site1"})
    first = subset_corpus(clinic.path, tmp_path / "again", {"group": "site1"})
    with pytest.raises(ConfigError, match="overwrite"):
        subset_corpus(clinic, first.path, {"group": "site2"})
    replaced = subset_corpus(clinic, first.path, {"group": "site2"}, overwrite=True)
    assert set(replaced.index["group"]) == {"site2"}
    assert not list(tmp_path.glob(".again.*"))  # no staging folder left behind
    assert load_corpus(replaced.path).index.height == replaced.index.height


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=12), max_size=4))
def test_where_strings_parse_or_raise_config_errors(items) -> None:
    try:
        where = parse_where(items)
    except ConfigError:
        return
    assert all(column.strip() == column and column for column in where)
    assert sum(len(values) for values in where.values()) >= len(items)
