"""Expected calibration error by hand and on simulated data; the reliability diagram."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.finch_strings import bird_corpus
from matplotlib.image import imread

from seqlm.errors import ConfigError
from seqlm.evaluation.calibration import (
    calibration,
    calibration_of,
    fit_temperature,
    mean_nll,
    reliability_diagram,
)
from seqlm.evaluation.ngram import KneserNeyModel


def test_ece_by_hand() -> None:
    # Two bins of width 0.5: [0.2, 0.4] -> conf 0.3, acc 0.5; [0.9, 1.0] -> conf 0.95, acc 0.5.
    confidence = np.array([0.2, 0.4, 0.9, 1.0])
    correct = np.array([1.0, 0.0, 1.0, 0.0])
    result = calibration(confidence, correct, n_bins=2)
    assert result.ece == pytest.approx(0.5 * 0.2 + 0.5 * 0.45)
    assert result.max_gap == pytest.approx(0.45)
    assert result.tokens == 4
    assert result.bins["tokens"].to_list() == [2, 2]  # 1.0 falls in the last bin
    assert result.bins["confidence"].to_list() == pytest.approx([0.3, 0.95])


def test_empty_bins_are_null_and_ignored() -> None:
    result = calibration(np.array([0.05, 0.05]), np.array([0.0, 0.0]), n_bins=10)
    assert result.bins["accuracy"].null_count() == 9
    assert result.ece == pytest.approx(0.05)


def test_calibrated_predictions_have_small_ece_and_overconfident_ones_do_not() -> None:
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0, 1, size=200_000)
    correct = (rng.uniform(size=confidence.size) < confidence).astype(float)
    assert calibration(confidence, correct).ece < 0.01
    overconfident = np.minimum(confidence + 0.2, 1.0)
    assert calibration(overconfident, correct).ece > 0.15


@pytest.mark.parametrize(
    ("confidence", "correct", "bins"),
    [
        (np.array([0.5]), np.array([1.0]), 0),
        (np.array([1.5]), np.array([1.0]), 10),
        (np.array([np.nan]), np.array([1.0]), 10),
        (np.array([0.5, 0.5]), np.array([1.0]), 10),
    ],
)
def test_bad_inputs_are_config_errors(confidence, correct, bins) -> None:
    with pytest.raises(ConfigError):
        calibration(confidence, correct, n_bins=bins)


def test_reliability_diagram_on_finch_models(finch_lesions, tmp_path) -> None:
    train, held_out, _, vocab_size = bird_corpus(finch_lesions, 2)
    results = {
        f"{n}-gram": calibration_of(KneserNeyModel.fit(train, vocab_size, n).score(held_out))
        for n in (1, 2, 4)
    }
    assert results["4-gram"].tokens == results["1-gram"].tokens == sum(len(s) - 1 for s in held_out)
    # A unigram predicts the same syllable everywhere: all its tokens share one bin.
    assert (results["1-gram"].bins["tokens"] > 0).sum() == 1
    assert all(0 <= r.ece < 0.2 for r in results.values())
    path = reliability_diagram(results, tmp_path / "plots" / "reliability.png", dpi=150)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = imread(path)
    assert image.shape[0] >= 7.2 * 150 - 2 and image.shape[1] >= 6.4 * 150 - 2
    assert image[..., :3].std() > 0.05  # something was drawn
    with pytest.raises(ConfigError):
        reliability_diagram({}, tmp_path / "none.png")


def test_fit_temperature_recovers_the_temperature_that_made_the_data() -> None:
    """Targets drawn from softmax(z / 2.5): the fitted T is near 2.5 and minimises the
    NLL (a grid around it is no better); NLL at T = 1 is recorded beside it."""
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4000, 12)) * 3
    probs = np.exp(logits / 2.5)
    probs /= probs.sum(axis=1, keepdims=True)
    true_ids = np.array([rng.choice(12, p=row) for row in probs])
    fit = fit_temperature(logits, true_ids)
    assert fit.temperature == pytest.approx(2.5, rel=0.08) and fit.tokens == 4000
    assert fit.nll_before == pytest.approx(mean_nll(logits, true_ids, 1.0))
    assert fit.nll_after == pytest.approx(mean_nll(logits, true_ids, 1 / fit.temperature))
    grid = [mean_nll(logits, true_ids, 1 / t) for t in fit.temperature * np.linspace(0.9, 1.1, 21)]
    assert fit.nll_after <= min(grid) + 1e-9 and fit.nll_after < fit.nll_before
    # sharper than the data: T < 1; a model already calibrated: T near 1
    assert fit_temperature(logits / 5, true_ids).temperature == pytest.approx(0.5, rel=0.08)
    assert fit_temperature(logits / 2.5, true_ids).temperature == pytest.approx(1.0, rel=0.08)


def test_fit_temperature_bad_inputs() -> None:
    with pytest.raises(ConfigError, match="one row of logits"):
        fit_temperature(np.zeros((3, 4)), np.zeros(2, dtype=int))
    with pytest.raises(ConfigError, match="at least one target"):
        fit_temperature(np.zeros((0, 4)), np.zeros(0, dtype=int))
    with pytest.raises(ConfigError, match="finite"):
        fit_temperature(np.full((1, 2), np.inf), np.zeros(1, dtype=int))
    flat = fit_temperature(np.zeros((5, 4)), np.arange(5) % 4)  # every T gives log 4
    assert flat.temperature == 1.0 and flat.nll_after == pytest.approx(np.log(4))
