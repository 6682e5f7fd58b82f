"""metrics.jsonl: append, read back, truncate after a resume point."""

from __future__ import annotations

import math

import pytest

from seqlm.errors import ConfigError, CorpusError
from seqlm.training.metrics_log import MetricsLog, read_metrics


def test_records_round_trip_and_truncate(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    for step in (10, 20, 30):
        log.write({"kind": "train", "step": step, "loss": 1.0 / step})
    log.write({"kind": "eval", "step": 30, "loss": math.nan})
    log.write({"kind": "final", "step": 30})
    records = read_metrics(log.path)
    assert [r["step"] for r in records] == [10, 20, 30, 30, 30]
    assert records[0]["loss"] == 0.1 and records[3]["loss"] is None
    log.truncate_after(30)  # resuming a finished run: its final record goes
    assert [r["kind"] for r in read_metrics(log.path)] == ["train"] * 3 + ["eval"]
    log.truncate_after(20)
    assert [r["step"] for r in read_metrics(log.path)] == [10, 20]


def test_a_torn_last_line_is_skipped_but_a_torn_middle_is_an_error(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"kind": "train", "step": 1, "loss": 2.0}\n{"kind": "tr')
    assert len(read_metrics(path)) == 1
    path.write_text('{"kind": "tr\n{"kind": "train", "step": 1}\n')
    with pytest.raises(CorpusError, match="row 1"):
        read_metrics(path)
    assert read_metrics(tmp_path / "absent.jsonl") == []


def test_disabled_log_writes_nothing(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl", enabled=False)
    log.write({"kind": "train", "step": 1})
    assert not log.path.exists()


def test_tensorboard_without_the_package_is_a_config_error(tmp_path):
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="tensorboard"):
            MetricsLog(tmp_path / "m.jsonl", tensorboard_dir=tmp_path / "tb")
    else:
        log = MetricsLog(tmp_path / "m.jsonl", tensorboard_dir=tmp_path / "tb")
        log.write({"kind": "train", "step": 1, "loss": 1.0})
        log.close()
        assert any((tmp_path / "tb").iterdir())
