"""The value-history scorer against a direct reference, its row sources, its fit, and
`seqlm eval --value-history` as a user runs it on a MEDS dataset with planted value
persistence (each subject keeps its own level of each lab)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta

import numpy as np
import pytest
import torch
from helpers.cli_helpers import run
from helpers.eval_fixtures import tiny_gpt, write_run
from helpers.meds_data import meds_frame, t, write_meds
from hypothesis import given, settings
from hypothesis import strategies as st

from seqlm.analysis.trust import TrustOptions, saved_comparison
from seqlm.corpus import load_corpus
from seqlm.errors import ConfigError
from seqlm.evaluation.model_scorer import ModelScorer
from seqlm.evaluation.ngram import KneserNeyModel
from seqlm.evaluation.scores import prediction_targets
from seqlm.evaluation.value_history import (
    ValueHistoryScorer,
    ValueHistorySettings,
    fit_value_history,
    value_codes,
)
from seqlm.model.token_parts import token_part_map

# Ids 0-3 are specials; tokens 4-6 are code 1's three values, 7-8 code 2's, 9 a plain code.
CODES = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 0])
V = CODES.size


class FixedRows:
    """A row source that predicts the same distribution everywhere."""

    name = "fixed"

    def __init__(self, row: np.ndarray, chunk: int = 3) -> None:
        self.row, self.chunk = row / row.sum(), chunk

    def probability_rows(self, sequences, progress=None):
        n = len(prediction_targets(sequences, V))
        for low in range(0, n, self.chunk):
            rows = np.arange(low, min(low + self.chunk, n))
            yield rows, np.tile(self.row, (rows.size, 1))


def reference_scores(row, sequences, memory, weight) -> list[np.ndarray]:
    """The formula of the module docstring, target by target, from scratch."""
    out = []
    for sequence in sequences:
        for position in range(1, len(sequence)):
            before = sequence[:position]
            mixed = row.copy()
            for code in set(CODES[CODES > 0]):
                group = np.flatnonzero(np.equal(CODES, code))
                seen = [int(x) for x in before if CODES[x] == code]
                if not seen:
                    continue
                history = np.zeros(V)
                for age, token in enumerate(reversed(seen)):
                    history[token] += np.exp(-age / memory)
                mass = row[group].sum()
                mixed[group] = (1 - weight) * row[group] + weight * mass * history[group] / (
                    history[group].sum()
                )
            out.append(mixed)
    return out


sequences_strategy = st.lists(
    st.lists(st.integers(4, V - 1), min_size=1, max_size=12).map(lambda s: np.array([1, *s, 2])),
    min_size=1,
    max_size=4,
)


@settings(max_examples=40, deadline=None)
@given(
    sequences=sequences_strategy,
    memory=st.sampled_from([0.5, 2.0, 7.0]),
    weight=st.sampled_from([0.0, 0.3, 0.9]),
    chunk=st.integers(1, 5),
)
def test_scores_match_the_formula_target_by_target(sequences, memory, weight, chunk) -> None:
    row = np.linspace(1.0, 2.0, V)
    row[:2] = 0.0  # [PAD] and [BOS] are never predicted
    source = FixedRows(row, chunk)
    scores = ValueHistoryScorer(source, CODES, ValueHistorySettings(memory, weight)).score(
        sequences
    )
    expected = reference_scores(source.row, sequences, memory, weight)
    true = np.concatenate([s[1:] for s in sequences])
    want_log = np.log([e[i] for e, i in zip(expected, true, strict=True)])
    np.testing.assert_allclose(scores.log_prob, want_log, rtol=1e-12)
    want_greater = [
        int((e > e[i] * (1 + 1e-12)).sum()) for e, i in zip(expected, true, strict=True)
    ]
    np.testing.assert_array_equal(scores.n_greater, want_greater)
    for e in expected:  # each code keeps its mass, so each row still sums to one
        assert e.sum() == pytest.approx(1.0)


def test_codes_with_one_value_token_and_vocabularies_without_values() -> None:
    assert value_codes(np.array([0, 3, 1, 1, 2])).tolist() == [0, 0, 1, 1, 0]
    with pytest.raises(ConfigError, match="no code of this vocabulary has several value"):
        ValueHistoryScorer(FixedRows(np.ones(5)), np.array([0, 3, 1, 0, 2]), ValueHistorySettings())
    with pytest.raises(ConfigError, match="weight must be in"):
        ValueHistorySettings(weight=1.0)


def test_weight_zero_gives_the_base_model_and_ngram_exactly() -> None:
    rng = np.random.default_rng(0)
    sequences = [np.array([1, *rng.integers(4, V, size=n), 2]) for n in (3, 40, 17)]
    model = ModelScorer(tiny_gpt(vocab_size=V, block_size=16))
    ngram = KneserNeyModel.fit(sequences, V, order=3)
    for base in (model, ngram):
        plain = base.score(sequences)
        mixed = ValueHistoryScorer(base, CODES, ValueHistorySettings(weight=0.0)).score(sequences)
        np.testing.assert_allclose(mixed.log_prob, plain.log_prob, rtol=1e-9)
        np.testing.assert_array_equal(mixed.n_greater, plain.n_greater)


def test_row_sources_give_every_target_once_in_order() -> None:
    rng = np.random.default_rng(1)
    sequences = [np.array([1, *rng.integers(4, V, size=n), 2]) for n in (50, 5, 33)]
    targets = prediction_targets(sequences, V)
    model = ModelScorer(tiny_gpt(vocab_size=V, block_size=16), batch_tokens=32)
    ngram = KneserNeyModel.fit(sequences, V, order=2)
    for base in (model, ngram):
        chunks = list(base.probability_rows(sequences))
        indices = np.concatenate([i for i, _ in chunks])
        np.testing.assert_array_equal(indices, np.arange(len(targets)))
        rows = np.concatenate([r for _, r in chunks])
        np.testing.assert_allclose(rows.sum(axis=1), 1.0)
        true = np.log(rows[np.arange(len(targets)), targets.token])
        np.testing.assert_allclose(true, base.score(sequences).log_prob, rtol=1e-6)


def test_the_fit_chooses_a_history_where_values_persist() -> None:
    """Each sequence repeats one value of each code: a context-free base cannot know
    which, the history does; the fit on tuning sequences finds it and it carries."""
    rng = np.random.default_rng(2)

    def persistent(n: int) -> list[np.ndarray]:
        out = []
        for _ in range(n):
            a, b = rng.integers(4, 7), rng.integers(7, 9)
            out.append(np.array([1, *np.tile([a, b, 9], 8), 2]))
        return out

    row = np.ones(V)
    row[:2] = 0.0
    source = FixedRows(row)
    fit = fit_value_history(source, persistent(20), CODES)
    assert fit.settings.weight > 0
    assert min(fit.tuning_cross_entropy.values()) < fit.tuning_cross_entropy[(2.0, 0.0)] - 0.1
    held_out = persistent(10)
    mixed = ValueHistoryScorer(source, CODES, fit.settings).score(held_out)
    base_log = np.log(source.row[np.concatenate([s[1:] for s in held_out])])
    assert mixed.log_prob.mean() > base_log.mean() + 0.1


def persistent_meds(root):
    """40 subjects, 25 days each, three labs a day; each subject keeps its own level of
    each lab (plus noise), so a lab's value bin at its last draw predicts the next."""
    rng = np.random.default_rng(3)
    rows, splits = [], {}
    for subject in range(40):
        levels = rng.normal(0, 3, size=3)
        for day in range(25):
            when = t(1) + timedelta(days=day)
            for lab, level in enumerate(levels):
                rows.append(
                    (subject, when, f"LAB//L{lab}", float(level + rng.normal(0, 0.3)), None)
                )
        splits[subject] = "train" if subject < 30 else ("tuning" if subject < 35 else "held_out")
    return write_meds(root, {"0.parquet": meds_frame(rows)}, splits=splits)


@pytest.fixture(scope="module")
def clinical_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("value-history")
    meds = persistent_meds(root / "meds")
    assert run(["ingest", "meds", str(meds), "--out", str(root / "corpus")]) == 0
    corpus = load_corpus(root / "corpus")
    torch.manual_seed(0)
    model = tiny_gpt(vocab_size=corpus.vocab_size, block_size=16, init_std=0.02)
    write_run(root / "run", model, corpus)
    return root / "corpus", root / "run"


def test_eval_value_history_as_a_user_runs_it(clinical_run, tmp_path) -> None:
    corpus, run_folder = clinical_run
    codes = token_part_map(load_corpus(corpus).vocabulary).code_ids
    assert value_codes(codes).any()
    argv = [sys.executable, "-m", "seqlm", "eval", str(run_folder), "--corpus", str(corpus)]
    folder = run_folder / "eval" / "with-history"
    argv += ["--baselines", "ngram", "--value-history", "--out", str(folder)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "model without value history" in done.stdout
    assert "(chosen on the tuning split" in done.stdout
    payload = json.loads((folder / "eval.json").read_text())
    models = payload["models"]
    assert models[:2] == ["model", "model without value history"]
    assert any(m.endswith("-gram KN) + value history") for m in models)
    assert payload["value_history"]["model"]["weight"] > 0  # an untrained model gains
    summary = {row["model"]: row for row in payload["summary"]}
    with_history = summary["model"]["cross_entropy_nats"]
    assert with_history < summary["model without value history"]["cross_entropy_nats"] - 0.05
    # The attention gate judges the model as trained, so it passes this eval.json by...
    opened = load_corpus(corpus)
    assert saved_comparison(run_folder, opened, TrustOptions()) is None
    # ...and would read the same file without the history.
    payload.pop("value_history")
    (run_folder / "eval" / "plain").mkdir()
    (run_folder / "eval" / "plain" / "eval.json").write_text(json.dumps(payload))
    assert saved_comparison(run_folder, opened, TrustOptions()) is not None


def test_eval_value_history_refuses_a_corpus_without_values(tmp_path) -> None:
    from helpers.eval_fixtures import small_finch_corpus

    corpus = small_finch_corpus(tmp_path / "finch")
    write_run(tmp_path / "run", tiny_gpt(vocab_size=corpus.vocab_size), corpus)
    argv = [sys.executable, "-m", "seqlm", "eval", str(tmp_path / "run")]
    argv += ["--corpus", str(corpus.path), "--baselines", "none", "--value-history"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2
    assert "no code of this vocabulary has several value tokens" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
