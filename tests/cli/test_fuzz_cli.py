"""Hostile bytes through `seqlm ingest`: random mutations of a real file for each adapter
never give a traceback; the command either fails with one line (exit 2) or writes a
corpus whose rows read equal its events plus rejects.

The mutations run through the CLI's own `main` in this process (fast enough for
Hypothesis); one mutated file per adapter also runs as a subprocess, as a user runs it.
An unclassified exception would surface as exit 1 ("internal error") and fail the test.
"""

from __future__ import annotations

import random
import shutil
import tempfile
from pathlib import Path

import pytest
from helpers.reliability_helpers import (
    FIXTURES,
    MEDS_SHARD,
    assert_one_line_error,
    in_process,
    manifest_counts,
    message_lines,
    seqlm,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

BIRDSONG = FIXTURES / "birdsong"


def _finch_excerpt() -> Path:
    from seqlm.datasets import finch_lesions_path

    return finch_lesions_path() / "bird1_prelesion"


# adapter, real file, name the mutated copy gets, bytes kept (the start of the file)
CASES = [
    ("audacity", BIRDSONG / "405_marron1_June_14_2016_69640887.audacity.txt", None),
    ("audacity", BIRDSONG / "spinetail.txt", None),
    ("crowsetta-generic-seq", BIRDSONG / "bird1.csv", None),
    ("simple-seq", BIRDSONG / "bl26lb16_190412_0721.20144_annotations.csv", None),
    ("textgrid", BIRDSONG / "AVO-maea-basic.TextGrid", None),
    ("notmat", BIRDSONG / "gy6or6_baseline_230312_0808.138.cbin.not.mat", None),
    ("birdsong-strings", None, 1500),
    ("meds", MEDS_SHARD, None),
]
IDS = [f"{adapter}-{i}" for i, (adapter, _, _) in enumerate(CASES)]


def _source(case) -> tuple[str, bytes, str]:
    adapter, path, keep = case
    if path is None:
        path = _finch_excerpt()
    data = path.read_bytes()
    return adapter, data[:keep] if keep else data, path.name


mutations = st.lists(
    st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=8
)


def _mutate(data: bytes, edits: list[tuple[float, int]], cut: float | None) -> bytes:
    buffer = bytearray(data)
    for where, byte in edits:
        buffer[int(where * len(buffer))] = byte
    if cut is not None:
        buffer = buffer[: int(cut * len(buffer))]
    return bytes(buffer)


def _check(adapter: str, name: str, data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / name
        source.write_bytes(data)
        out = Path(folder) / "corpus"
        result = in_process(["ingest", adapter, source, "--out", out])
        code, stderr = result.returncode, result.stderr
        assert "Traceback" not in stderr, stderr
        assert code in (0, 2), (code, stderr)
        if code == 2:
            lines = message_lines(stderr)
            assert len(lines) == 1 and lines[0].startswith("error: "), stderr
            assert not out.exists()
        else:
            counts = manifest_counts(out)
            assert counts["rows_read"] == counts["events"] + counts["rejects"]
        leftovers = [p.name for p in Path(folder).iterdir() if p.name.startswith(".")]
        assert leftovers == [], leftovers


@pytest.mark.parametrize("case", CASES, ids=IDS)
@settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(edits=mutations, cut=st.none() | st.floats(0, 1))
def test_mutated_input_never_gives_a_traceback(case, edits, cut):
    adapter, data, name = _source(case)
    _check(adapter, name, _mutate(data, edits, cut))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_mutated_input_as_a_subprocess(case, tmp_path):
    """One heavily mutated copy per adapter, run as a user runs it."""
    adapter, data, name = _source(case)
    rng = random.Random(14)
    edits = [(rng.random(), rng.randrange(256)) for _ in range(max(4, len(data) // 50))]
    source = tmp_path / name
    source.write_bytes(_mutate(data, edits, None))
    result = seqlm(["ingest", adapter, source, "--out", tmp_path / "corpus"])
    assert "Traceback" not in result.stderr
    if result.returncode == 0:
        counts = manifest_counts(tmp_path / "corpus")
        assert counts["rows_read"] == counts["events"] + counts["rejects"]
    else:
        assert_one_line_error(result)
    shutil.rmtree(tmp_path / "corpus", ignore_errors=True)
