"""The HTML viewer: encoding round trip, nothing external, and it draws in headless
Chromium without network access."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.analysis_helpers import random_gpt  # noqa: F401 (autouse fixture)
from PIL import Image

from seqlm.analysis.attention_capture import capture_attention_inputs
from seqlm.analysis.viewer import decode_map, encode_map, viewer_html, write_viewer
from seqlm.errors import ConfigError

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    # any host name resolves to nothing: the page must not need the network
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--virtual-time-budget=10000",
]


def test_maps_round_trip_through_the_page_encoding() -> None:
    rng = np.random.default_rng(0)
    weights = np.tril(rng.random((9, 9)))
    weights /= weights.sum(-1, keepdims=True)
    visible = np.tril(np.ones((9, 9), dtype=bool))
    visible[8, :3] = False  # outside a span
    weights[8, :3] = 0.0
    decoded = decode_map(encode_map(weights, visible), 9)
    assert np.array_equal(np.isnan(decoded), ~visible)
    assert np.nanmax(np.abs(decoded - weights)) <= 0.5 / 65534 + 1e-12


def test_page_is_self_contained_and_escapes_token_text() -> None:
    labels = ["[BOS]", "</script><img src=x>", "a&b"]
    maps = {(0, 0): np.tril(np.full((3, 3), 1 / 3))}
    page = viewer_html(labels, maps, {0: np.tril(np.ones((3, 3), dtype=bool))}, title="t<1>")
    assert page.count("</script>") == 1  # only the page's own closing tag
    assert "<img" not in page and "t&lt;1&gt;" in page
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", page)
    assert "http://" not in page and "https://" not in page
    assert "default-src 'none'" in page  # the page may not fetch anything


def test_page_size_is_bounded() -> None:
    maps = {(layer, 0): np.zeros((1, 1)) for layer in range(3)}
    with pytest.raises(ConfigError):
        viewer_html(["a", "b"], maps, {})
    big = {(0, h): np.zeros((3000, 3000), dtype=np.float32) for h in range(8)}
    with pytest.raises(ConfigError, match="fewer"):
        viewer_html(["a"] * 3000, big, {0: np.ones((3000, 3000), dtype=bool)})


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("chromium is not on PATH (Debian: apt-get install chromium)")
    return path


def test_viewer_renders_offline_in_headless_chromium(tmp_path: Path) -> None:
    chromium = _chromium()
    model = random_gpt(seed=1, attention_span=6)
    ids = torch.randint(5, 40, (20,), generator=torch.Generator().manual_seed(0))
    inputs = capture_attention_inputs(model, ids)
    page = write_viewer(
        inputs, [f"t{i}" for i in range(20)], tmp_path / "viewer.html", heads=[1, 2]
    )
    common = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(
        [*common, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120
    ).stdout
    status = re.search(r'<div id="status" data-rendered="(\w+)">([^<]*)</div>', dom)
    assert status is not None, dom[-2000:]
    assert status.group(1) == "true"
    assert status.group(2) == "rendered layer 0 head 1: 20 tokens"
    # the layer and head menus offer what was exported
    assert dom.count('<option value="') == 2 + 2
    shot = tmp_path / "shot.png"
    subprocess.run(
        [*common, "--window-size=1000,800", f"--screenshot={shot}", page.as_uri()],
        capture_output=True,
        timeout=120,
    )
    with Image.open(shot) as image:
        # the map canvas (600 x 600 from about (16, 160)) holds many colours, not blank
        region = np.asarray(image.convert("RGB"))[180:700, 20:560]
    colours = np.unique(region.reshape(-1, 3), axis=0)
    assert len(colours) > 20
