"""Histories at prediction time: the boundary rule, [EOS] never, left truncation."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import polars as pl
import pytest
from helpers.meds_data import meds_frame, t, write_meds

from seqlm.corpus import load_corpus
from seqlm.ingest import ingest
from seqlm.tasks.history import label_histories, time_resolution_s
from seqlm.vocabularies.scheme import BOS_ID, EOS_ID


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("history")
    rows = []
    for subject in (1, 2, 3):
        rows += [
            (subject, None, "GENDER//F", None, None),
            (subject, t(1, 8), "CODE//A", None, None),
            (subject, t(1, 12), "CODE//B", None, None),
            (subject, t(1, 12), "CODE//B2", None, None),
            (subject, t(2, 9), "CODE//C", None, None),
        ]
    write_meds(
        root / "meds",
        {"train/0.parquet": meds_frame(rows)},
        splits={1: "train", 2: "train", 3: "train"},
    )
    ingest("meds", [root / "meds"], root / "corpus", {"scheme": {"min_entities": 1}}, workers=1)
    return load_corpus(root / "corpus")


def _codes(corpus, ids):
    return [
        corpus.vocabulary.tokens[i]
        for i in ids
        if corpus.vocabulary.token_info(int(i)).role == "event"
    ]


def _histories(corpus, times):
    seq_id = corpus.index.filter(pl.col("entity") == "1")["seq_id"][0]
    labels = pl.DataFrame({"seq_id": [seq_id] * len(times), "prediction_time": times})
    return label_histories(
        corpus, labels.with_columns(pl.col("prediction_time").dt.cast_time_unit("us"))
    )


def test_events_at_the_prediction_time_are_in_the_history_and_later_ones_are_not(corpus) -> None:
    at, before, after = _histories(
        corpus, [t(1, 12), t(1, 12) - timedelta(seconds=1), t(1, 12) + timedelta(seconds=1)]
    )
    assert _codes(corpus, at.ids) == ["GENDER//F", "CODE//A", "CODE//B", "CODE//B2"]
    assert _codes(corpus, before.ids) == ["GENDER//F", "CODE//A"]
    assert _codes(corpus, after.ids) == _codes(corpus, at.ids)
    assert at.ids[0] == BOS_ID
    # the time-gap token leading into B belongs to B: not in the history before it
    assert len(before.ids) < len(at.ids) - 2
    assert at.prediction_s == pytest.approx(4 * 3600) and at.last_time_s == pytest.approx(4 * 3600)


def test_eos_is_never_part_of_a_history(corpus) -> None:
    (last,) = _histories(corpus, [t(2, 9)])
    assert _codes(corpus, last.ids)[-1] == "CODE//C"
    assert EOS_ID not in last.ids
    seq_id = corpus.index.filter(pl.col("entity") == "1")["seq_id"][0]
    assert np.array_equal(last.ids, np.asarray(corpus.sequence(seq_id))[:-1])


def test_windows_keep_the_last_context_tokens(corpus) -> None:
    (history,) = _histories(corpus, [t(2, 9)])
    assert np.array_equal(history.window(3), history.ids[-3:])
    assert np.array_equal(history.window(10_000), history.ids)
    assert time_resolution_s([history]) <= 0.02  # a day's offset is exact to 1/64 s in float32
