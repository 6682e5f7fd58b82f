"""No leakage: events after the prediction time change no prediction, and held-out
labels never reach fitting. Both hold for any model, so an untrained one is used."""

from __future__ import annotations

import json
import shutil

import numpy as np
import polars as pl
import pytest
from helpers.eval_fixtures import tiny_gpt, write_run
from helpers.task_data import build_task_corpus, write_task_dataset

from seqlm.artefacts import record_files
from seqlm.corpus import load_corpus
from seqlm.corpus.store import CHECKSUMMED_FILES, TIMES_FILE, TOKENS_FILE
from seqlm.tasks import TaskOptions, run_task
from seqlm.tasks.history import prediction_offsets
from seqlm.tasks.labels import match_labels, read_labels

OPTIONS = TaskOptions(
    outcome_codes=("OUTCOME",),
    horizon_s=86_400.0,
    samples=4,
    max_new_tokens=8,
    finetune_epochs=2,
    resamples=20,
    c_grid=(0.1, 1.0),
)


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    root = write_task_dataset(tmp_path_factory.mktemp("leak"), "future", n_subjects=60)
    corpus = load_corpus(build_task_corpus(root))
    model = tiny_gpt(seed=1, vocab_size=corpus.vocab_size, block_size=32, init_std=0.3)
    write_run(root / "run", model, corpus)
    return root


def _rewrite_after_prediction(root, source, target) -> int:
    """Copy the corpus and replace every token (and its time) after each labelled
    prediction time by another event token (a day later); returns tokens changed."""
    shutil.copytree(source, target)
    corpus = load_corpus(source)
    matched = match_labels(read_labels(root / "labels"), corpus).frame
    tokens = np.array(corpus.tokens)
    times = np.array(corpus.times)
    events = [
        i for i in range(len(corpus.vocabulary)) if corpus.vocabulary.token_info(i).role == "event"
    ]
    rng = np.random.default_rng(5)
    changed = 0
    for seq_id, offset in zip(matched["seq_id"], prediction_offsets(matched, corpus), strict=True):
        span = slice(
            int(corpus.index["offset"][seq_id]),
            int(corpus.index["offset"][seq_id] + corpus.index["length"][seq_id]),
        )
        ids, when = tokens[span], times[span]
        # stated here, not taken from seqlm.tasks.history: after = later than prediction
        after = np.flatnonzero(when > np.float32(offset))[:-1]  # all but [EOS]
        ids[after] = rng.choice(events, size=len(after))
        when[after[0] :] += 86_400.0
        changed += len(after)
    tokens.astype(corpus.tokens.dtype).tofile(target / TOKENS_FILE)
    times.astype(np.float32).tofile(target / TIMES_FILE)
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["files"] = record_files(target, CHECKSUMMED_FILES)
    (target / "manifest.json").write_text(json.dumps(manifest))
    return changed


def _probabilities(result):
    return {m: f["predicted_boolean_probability"].to_numpy() for m, f in result.predictions.items()}


def test_changing_every_event_after_prediction_time_changes_no_prediction(task) -> None:
    changed = _rewrite_after_prediction(task, task / "corpus", task / "corpus-changed")
    assert changed > 100
    first = run_task(task / "run", task / "corpus", task / "labels", task / "out-a", OPTIONS)
    second = run_task(
        task / "run", task / "corpus-changed", task / "labels", task / "out-b", OPTIONS
    )
    a, b = _probabilities(first), _probabilities(second)
    assert set(a) == {"zero-shot", "probe", "finetune", "baseline"}
    for method in a:
        assert np.array_equal(a[method], b[method]), method


def test_held_out_labels_never_reach_fitting(task, tmp_path) -> None:
    labels = pl.read_parquet(task / "labels" / "0.parquet")
    corpus = load_corpus(task / "corpus")
    held_out = corpus.split("held_out")["entity"].cast(pl.Int64)
    flipped = labels.with_columns(
        pl.when(pl.col("subject_id").is_in(held_out.implode()))
        .then(~pl.col("boolean_value"))
        .otherwise(pl.col("boolean_value"))
        .alias("boolean_value")
    )
    (tmp_path / "flipped").mkdir()
    flipped.write_parquet(tmp_path / "flipped" / "0.parquet")
    original = run_task(task / "run", task / "corpus", task / "labels", tmp_path / "a", OPTIONS)
    changed = run_task(task / "run", task / "corpus", tmp_path / "flipped", tmp_path / "b", OPTIONS)
    for method, probs in _probabilities(original).items():
        assert np.array_equal(probs, _probabilities(changed)[method]), method
        # ... while the scored truth did change
        truth = original.predictions[method]["boolean_value"]
        assert (truth != changed.predictions[method]["boolean_value"]).all()
