"""The sequence-history scorer against a direct reference, its row sources, its fit, and
`seqlm eval --sequence-history` as a user runs it on a MEDS dataset with planted value
persistence (each subject keeps its own level of each lab)."""

from __future__ import annotations

import json
import os
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
from seqlm.evaluation.sequence_history import (
    HistoryCodes,
    HistorySettings,
    SequenceHistoryScorer,
    fit_history,
    history_codes,
)

# Ids 0-3 are specials; 4-6 are code 1's three values, 7-8 code 2's, 9 plain code 3,
# 10 a time-gap token.
VALUE_GROUP = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 0, 0])
CODE = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 3, 0])
TIME = 10
CODES = HistoryCodes(VALUE_GROUP, CODE, np.array([TIME]))
V = CODE.size
# A wide console, so that rich does not fold the lines the tests look for.
WIDE = {**os.environ, "COLUMNS": "240", "OMP_NUM_THREADS": "1"}


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


def reference_rows(row, sequences, s: HistorySettings) -> list[np.ndarray]:
    """The formulas of the module docstring, target by target, from scratch."""
    out = []
    for sequence in sequences:
        for position in range(1, len(sequence)):
            before = [int(x) for x in sequence[:position]]
            mixed = row.copy()
            for group_id in (1, 2):
                group = np.flatnonzero(np.equal(VALUE_GROUP, group_id))
                seen = [x for x in before if VALUE_GROUP[x] == group_id]
                if not seen:
                    continue
                history = np.zeros(V)
                for age, token in enumerate(reversed(seen)):
                    history[token] += np.exp(-age / s.memory)
                mass = row[group].sum()
                history = history[group] / history[group].sum()
                mixed[group] = (1 - s.weight) * row[group] + s.weight * mass * history
            last_time = max([i for i, x in enumerate(before) if x == TIME], default=-1)
            listed = {CODE[x] for x in before[last_time + 1 :]} - {0}
            for token in range(V):
                if CODE[token] in listed:
                    mixed[token] *= s.repeat_factor
            out.append(mixed / mixed.sum())
    return out


sequences_strategy = st.lists(
    st.lists(st.integers(4, V - 1), min_size=1, max_size=14).map(lambda s: np.array([1, *s, 2])),
    min_size=1,
    max_size=4,
)


@settings(max_examples=60, deadline=None)
@given(
    sequences=sequences_strategy,
    memory=st.sampled_from([0.5, 2.0, 7.0]),
    weight=st.sampled_from([0.0, 0.3, 0.9]),
    factor=st.sampled_from([1.0, 0.4, 0.05]),
    chunk=st.integers(1, 5),
)
def test_scores_match_the_formulas_target_by_target(sequences, memory, weight, factor, chunk):
    row = np.linspace(1.0, 2.0, V)
    row[:2] = 0.0  # [PAD] and [BOS] are never predicted
    source = FixedRows(row, chunk)
    chosen = HistorySettings(memory, weight, factor)
    scores = SequenceHistoryScorer(source, CODES, chosen).score(sequences)
    expected = reference_rows(source.row, sequences, chosen)
    true = np.concatenate([s[1:] for s in sequences])
    want = [e[i] for e, i in zip(expected, true, strict=True)]
    np.testing.assert_allclose(scores.log_prob, np.log(want), rtol=1e-10)
    above = [int((e > e[i] * (1 + 1e-12)).sum()) for e, i in zip(expected, true, strict=True)]
    np.testing.assert_array_equal(scores.n_greater, above)


def test_settings_and_vocabularies_without_history_are_refused(tmp_path) -> None:
    from helpers.eval_fixtures import small_finch_corpus

    with pytest.raises(ConfigError, match="weight must be in"):
        HistorySettings(weight=1.0)
    with pytest.raises(ConfigError, match="repeat factor must be in"):
        HistorySettings(repeat_factor=0.0)
    corpus = small_finch_corpus(tmp_path / "finch")  # song: no values, no time tokens
    with pytest.raises(ConfigError, match="no code with several value tokens"):
        history_codes(corpus.vocabulary)


def test_the_plain_setting_gives_the_base_model_and_ngram_exactly() -> None:
    rng = np.random.default_rng(0)
    sequences = [np.array([1, *rng.integers(4, V, size=n), 2]) for n in (3, 40, 17)]
    model = ModelScorer(tiny_gpt(vocab_size=V, block_size=16))
    ngram = KneserNeyModel.fit(sequences, V, order=3)
    plain_setting = HistorySettings(weight=0.0, repeat_factor=1.0)
    for base in (model, ngram):
        plain = base.score(sequences)
        mixed = SequenceHistoryScorer(base, CODES, plain_setting).score(sequences)
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


def test_the_fit_finds_planted_persistence_and_no_repeats() -> None:
    """Each sequence repeats one value of each code at every time and never lists a
    code twice at one time: a context-free base knows neither; the fit on tuning
    sequences turns both parts on, its analytic cross-entropy is the scorer's, and
    the gain carries to other sequences."""
    rng = np.random.default_rng(2)

    def planted(n: int) -> list[np.ndarray]:
        out = []
        for _ in range(n):
            a, b = rng.integers(4, 7), rng.integers(7, 9)
            out.append(np.array([1, *np.tile([a, b, 9, TIME], 8), 2]))
        return out

    row = np.ones(V)
    row[:2] = 0.0
    source, tuning = FixedRows(row), planted(20)
    fit = fit_history(source, tuning, CODES)
    assert fit.settings.weight > 0 and fit.settings.repeat_factor < 1
    rescored = SequenceHistoryScorer(source, CODES, fit.settings).score(tuning)
    key = (fit.settings.memory, fit.settings.weight, fit.settings.repeat_factor)
    assert -rescored.log_prob.mean() == pytest.approx(fit.tuning_cross_entropy[key])
    assert fit.tuning_cross_entropy[key] < fit.tuning_cross_entropy[(2.0, 0.0, 1.0)] - 0.3
    held_out = planted(10)
    mixed = SequenceHistoryScorer(source, CODES, fit.settings).score(held_out)
    base_log = np.log(source.row[np.concatenate([s[1:] for s in held_out])])
    assert mixed.log_prob.mean() > base_log.mean() + 0.3


class VaryingRows:
    """A row source whose distribution changes from target to target (seeded)."""

    name = "varying"

    def __init__(self, seed: int, chunk: int) -> None:
        self.seed, self.chunk = seed, chunk

    def probability_rows(self, sequences, progress=None):
        n = len(prediction_targets(sequences, V))
        rows = np.random.default_rng(self.seed).dirichlet(np.full(V, 0.7), size=n)
        for low in range(0, n, self.chunk):
            yield np.arange(low, min(low + self.chunk, n)), rows[low : low + self.chunk]


@settings(max_examples=25, deadline=None)
@given(sequences=sequences_strategy, seed=st.integers(0, 10_000), chunk=st.integers(1, 6))
def test_every_candidates_fitted_cross_entropy_is_the_scorers(sequences, seed, chunk) -> None:
    """The fit reads only the true token's column of each row; each candidate's
    cross-entropy must still equal scoring the whole rows with that setting."""
    source = VaryingRows(seed, chunk)
    memories, weights, factors = (0.5, 3.0), (0.0, 0.4, 0.8), (1.0, 0.3)
    fit = fit_history(source, sequences, CODES, memories, weights, factors)
    assert len(fit.tuning_cross_entropy) == 12
    for (memory, weight, factor), fitted in fit.tuning_cross_entropy.items():
        setting = HistorySettings(memory, weight, factor)
        scored = SequenceHistoryScorer(source, CODES, setting).score(sequences)
        assert -scored.log_prob.mean() == pytest.approx(fitted, rel=1e-9, abs=1e-12)


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
    root = tmp_path_factory.mktemp("sequence-history")
    meds = persistent_meds(root / "meds")
    assert run(["ingest", "meds", str(meds), "--out", str(root / "corpus")]) == 0
    corpus = load_corpus(root / "corpus")
    torch.manual_seed(0)
    model = tiny_gpt(vocab_size=corpus.vocab_size, block_size=16, init_std=0.02)
    write_run(root / "run", model, corpus)
    return root / "corpus", root / "run"


def test_eval_sequence_history_as_a_user_runs_it(clinical_run) -> None:
    corpus, run_folder = clinical_run
    argv = [sys.executable, "-m", "seqlm", "eval", str(run_folder), "--corpus", str(corpus)]
    folder = run_folder / "eval" / "with-history"
    argv += ["--baselines", "ngram", "--sequence-history", "--out", str(folder)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=WIDE)
    assert done.returncode == 0, done.stderr
    assert "model without sequence history" in done.stdout
    assert "(chosen on the tuning split" in done.stdout
    payload = json.loads((folder / "eval.json").read_text())
    models = payload["models"]
    assert models[:2] == ["model", "model without sequence history"]
    assert any(m.endswith("-gram KN) + sequence history") for m in models)
    # An untrained model knows neither a subject's levels nor that a day lists each
    # lab once; the fit turns both parts on.
    chosen = payload["sequence_history"]["model"]
    assert chosen["weight"] > 0 and chosen["repeat_factor"] < 1
    summary = {row["model"]: row for row in payload["summary"]}
    with_history = summary["model"]["cross_entropy_nats"]
    assert with_history < summary["model without sequence history"]["cross_entropy_nats"] - 0.05
    # The attention gate judges the model as trained, so it passes this eval.json by...
    opened = load_corpus(corpus)
    assert saved_comparison(run_folder, opened, TrustOptions()) is None
    # ...and would read the same file without the history.
    payload.pop("sequence_history")
    (run_folder / "eval" / "plain").mkdir()
    (run_folder / "eval" / "plain" / "eval.json").write_text(json.dumps(payload))
    assert saved_comparison(run_folder, opened, TrustOptions()) is not None


def test_eval_suggests_the_history_where_there_are_values(clinical_run, tmp_path) -> None:
    corpus, run_folder = clinical_run
    argv = [sys.executable, "-m", "seqlm", "eval", str(run_folder), "--corpus", str(corpus)]
    argv += ["--baselines", "none", "--out", str(tmp_path / "plain")]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=WIDE)
    assert done.returncode == 0, done.stderr
    assert "`--sequence-history` also scores every model" in done.stdout
    payload = json.loads((tmp_path / "plain" / "eval.json").read_text())
    assert payload["models"] == ["model"] and payload["sequence_history_available"] is True


def test_eval_warns_when_the_fitted_split_is_scored(clinical_run, tmp_path) -> None:
    corpus, run_folder = clinical_run
    argv = [sys.executable, "-m", "seqlm", "eval", str(run_folder), "--corpus", str(corpus)]
    argv += ["--split", "tuning", "--baselines", "none", "--sequence-history"]
    argv += ["--out", str(tmp_path / "tuning")]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=WIDE)
    assert done.returncode == 0, done.stderr
    assert "warning: --sequence-history fits its settings on the 'tuning' split" in done.stderr


def test_eval_sequence_history_refuses_a_corpus_without_history(tmp_path) -> None:
    from helpers.eval_fixtures import small_finch_corpus

    corpus = small_finch_corpus(tmp_path / "finch")
    write_run(tmp_path / "run", tiny_gpt(vocab_size=corpus.vocab_size), corpus)
    argv = [sys.executable, "-m", "seqlm", "eval", str(tmp_path / "run")]
    argv += ["--corpus", str(corpus.path), "--baselines", "none", "--sequence-history"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=WIDE)
    assert done.returncode == 2
    assert "no code with several value tokens" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_history_codes_of_the_mimic_demo_vocabulary(tmp_path) -> None:
    """On the real demo's default tokens: every fused lab bin and text joins its code's
    value group, plain codes and specials do not, and the time-gap tokens are found."""
    from helpers.clinical_run import mimic_demo_corpus

    vocabulary = mimic_demo_corpus(tmp_path / "demo").vocabulary
    codes = history_codes(vocabulary)
    tokens = vocabulary.tokens
    times = {tokens[i] for i in codes.time_ids}
    assert times and all(t.startswith("[TIME//") for t in times)
    assert len(times) == sum(t.startswith("[TIME//") for t in tokens)
    for i, token in enumerate(tokens):
        entry = vocabulary.data_tokens.get(token)
        if entry is None:
            assert codes.code[i] == 0 and codes.value_group[i] == 0
        elif codes.value_group[i]:
            assert entry.bin is not None or entry.text is not None
            assert codes.value_group[i] == codes.code[i]
    group_sizes = np.bincount(codes.value_group)[1:]
    assert (group_sizes[group_sizes > 0] >= 2).all()
    # Most of the demo's vocabulary is fused code + value (session 16: 74%).
    assert (codes.value_group > 0).mean() > 0.5


def test_scoring_the_split_the_history_is_fitted_on_warns() -> None:
    from seqlm.evaluation.sequence_history import warn_if_in_sample

    with pytest.warns(UserWarning, match="in-sample"):
        warn_if_in_sample(["held_out", "tuning"], "tuning")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_in_sample("held_out", "tuning")
