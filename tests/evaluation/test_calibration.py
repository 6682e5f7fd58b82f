"""Expected calibration error by hand and on simulated data; the reliability diagram."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.finch_strings import bird_corpus
from matplotlib.image import imread

from seqlm.errors import ConfigError
from seqlm.evaluation.calibration import calibration, calibration_of, reliability_diagram
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
