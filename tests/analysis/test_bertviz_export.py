"""The bertviz export: head_view's shapes, the same weights, JSON only, checked on load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers.analysis_helpers import random_gpt  # noqa: F401 (autouse fixture)

from seqlm.analysis.attention_capture import capture_attention_inputs
from seqlm.analysis.bertviz_export import export_bertviz, load_bertviz_attention
from seqlm.errors import ConfigError, InputError


def test_export_has_head_view_shapes_and_the_weights(tmp_path: Path) -> None:
    model = random_gpt(seed=2, positions="rotary")
    ids = torch.randint(5, 40, (11,), generator=torch.Generator().manual_seed(0))
    inputs = capture_attention_inputs(model, ids)
    labels = [f"s{i}" for i in range(11)]
    path = export_bertviz(inputs, labels, tmp_path / "bv.json", layers=[1], heads=[0, 2])
    raw = json.loads(path.read_text())
    assert raw["layers"] == [1] and raw["heads"] == [0, 2] and raw["tokens"] == labels
    attention, tokens = load_bertviz_attention(path)
    assert tokens == labels
    assert len(attention) == 1 and attention[0].shape == (1, 2, 11, 11)
    expected = inputs.weights(1, [0, 2])
    torch.testing.assert_close(attention[0][0], expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(attention[0].sum(-1), torch.ones(1, 2, 11), atol=1e-5, rtol=0)
    every = load_bertviz_attention(export_bertviz(inputs, labels, tmp_path / "all.json"))[0]
    assert [a.shape for a in every] == [(1, 3, 11, 11)] * 2


def test_bad_files_are_input_errors(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text("{not json")
    with pytest.raises(InputError):
        load_bertviz_attention(path)
    path.write_text(json.dumps({"format": "other"}))
    with pytest.raises(InputError, match="not a seqlm bertviz"):
        load_bertviz_attention(path)
    bad_shape = {"format": "seqlm-bertviz-1", "tokens": ["a", "b"], "attention": [[[[1.0]]]]}
    path.write_text(json.dumps(bad_shape))
    with pytest.raises(InputError, match="shape"):
        load_bertviz_attention(path)
    with pytest.raises(InputError):
        load_bertviz_attention(tmp_path / "missing.json")


def test_labels_must_match_the_tokens(tmp_path: Path) -> None:
    model = random_gpt(seed=3)
    inputs = capture_attention_inputs(model, torch.randint(5, 40, (5,)))
    with pytest.raises(ConfigError):
        export_bertviz(inputs, ["a"], tmp_path / "bv.json")
