"""Static maps: labels, colour scale, files at 300 dpi, rollout arithmetic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.analysis_helpers import random_gpt  # noqa: F401 (autouse fixture)
from PIL import Image

from seqlm.analysis.attention_capture import capture_attention_inputs
from seqlm.analysis.maps import (
    MapStyle,
    attention_rollout,
    colour_scale_top,
    plot_attention_map,
    thin_labels,
    write_sequence_maps,
)
from seqlm.errors import ConfigError


def _lower_stochastic(length: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    weights = np.tril(rng.random((length, length)))
    return weights / weights.sum(-1, keepdims=True)


def test_labels_are_all_shown_or_thinned_with_positions() -> None:
    labels = [f"LAB//{i}//mg/dL//Q7" for i in range(10)]
    positions, texts = thin_labels(labels, max_labels=20, label_chars=10)
    assert positions == list(range(10))
    assert texts[3] == "LAB//3//m…" and all(len(t) <= 10 for t in texts)
    positions, texts = thin_labels(labels * 10, max_labels=20, label_chars=30)
    assert positions == list(range(0, 100, 5))
    assert texts[1] == "5 LAB//5//mg/dL//Q7"


def test_colour_scale_ignores_queries_that_see_one_key() -> None:
    weights = np.array([[1.0, 0, 0], [0.3, 0.7, 0], [0.2, 0.2, 0.6]])
    masked = np.ma.masked_array(weights, mask=~np.tril(np.ones((3, 3), dtype=bool)))
    assert colour_scale_top(masked, percentile=100) == pytest.approx(0.7)


def test_colour_scale_top_is_a_percentile_of_the_informative_weights() -> None:
    rng = np.random.default_rng(0)
    weights = np.tril(rng.random((200, 200)))
    weights[1, 0] = 50.0  # one outlier must not set the scale
    masked = np.ma.masked_array(weights, mask=~np.tril(np.ones((200, 200), dtype=bool)))
    informative = np.ma.compressed(masked[1:])
    assert colour_scale_top(masked) == pytest.approx(np.percentile(informative, 99))
    assert colour_scale_top(masked) < 1.0


def test_a_map_is_written_as_png_at_300_dpi_and_svg(tmp_path: Path) -> None:
    weights = _lower_stochastic(12, 0)
    labels = [f"tok{i}" for i in range(12)]
    paths = plot_attention_map(weights, labels, tmp_path / "m", title="one head")
    assert [p.name for p in paths] == ["m.png", "m.svg"]
    with Image.open(paths[0]) as image:
        assert round(image.info["dpi"][0]) == 300
        assert image.width > 1200  # ~6 inches or more at 300 dpi
    svg = paths[1].read_text()
    assert "linear scale, 0 to" in svg and "tok11" in svg and "not visible" in svg
    log_svg = plot_attention_map(
        weights, labels, tmp_path / "log", style=MapStyle(color_scale="log", dpi=50)
    )[1].read_text()
    assert "log scale" in log_svg


def test_map_arguments_are_checked() -> None:
    with pytest.raises(ConfigError):
        plot_attention_map(np.zeros((3, 4)), ["a"] * 3, Path("unused"))
    with pytest.raises(ConfigError):
        plot_attention_map(np.zeros((3, 3)), ["a"] * 2, Path("unused"))
    with pytest.raises(ConfigError):
        MapStyle(color_scale="rainbow")


def test_rollout_mixes_the_identity_and_multiplies_upwards() -> None:
    first, second = _lower_stochastic(6, 1), _lower_stochastic(6, 2)
    eye = np.eye(6)
    expected = (0.5 * second + 0.5 * eye) @ (0.5 * first + 0.5 * eye)
    np.testing.assert_allclose(attention_rollout([first, second]), expected)
    np.testing.assert_allclose(attention_rollout([first, second], residual=0.0), second @ first)
    rolled = attention_rollout([first, second, first])
    np.testing.assert_allclose(rolled.sum(-1), 1.0)
    assert np.all(np.triu(rolled, 1) == 0)  # still causal
    with pytest.raises(ConfigError):
        attention_rollout([])
    with pytest.raises(ConfigError):
        attention_rollout([first], residual=1.0)


def test_sequence_maps_for_chosen_layers_and_heads(tmp_path: Path) -> None:
    model = random_gpt(seed=3, attention_span=5)
    ids = torch.randint(5, 40, (14,), generator=torch.Generator().manual_seed(0))
    inputs = capture_attention_inputs(model, ids)
    labels = [f"t{i}" for i in range(14)]
    written = write_sequence_maps(
        inputs, labels, tmp_path, layers=[1], heads=[0, 2], style=MapStyle(dpi=72)
    )
    assert sorted(written) == ["grid", "layer1_head0", "layer1_head2", "rollout"]
    for paths in written.values():
        assert all(path.is_file() and path.stat().st_size > 0 for path in paths)
    # the span mask is drawn: the (13, 0) cell is outside span 5 and masked
    visible = inputs.visible(1).numpy()
    assert not visible[13, 0] and visible[13, 9]
