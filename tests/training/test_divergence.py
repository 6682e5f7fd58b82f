"""The train-side warning when tuning loss rises while train loss falls."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from seqlm.training.divergence import DivergenceWatch


class _Metrics:
    def __init__(self):
        self.records = []

    def write(self, record):
        self.records.append(record)


def _trainer():
    return SimpleNamespace(
        counters=SimpleNamespace(step=0),
        early_stopping=SimpleNamespace(best_step=None, best_loss=None),
        ctx=SimpleNamespace(is_main=True),
        metrics=_Metrics(),
        run=None,
        _last_train_loss=None,
    )


def _feed(watch, trainer, pairs):
    for step, (train, tuning) in enumerate(pairs, start=1):
        trainer.counters.step = 100 * step
        trainer._last_train_loss = train
        if trainer.early_stopping.best_loss is None or tuning < trainer.early_stopping.best_loss:
            trainer.early_stopping.best_loss, trainer.early_stopping.best_step = tuning, 100 * step
        watch.on_evaluate(trainer, tuning)


def test_overfitting_warns_once_on_stderr_and_in_the_metrics(capsys):
    watch, trainer = DivergenceWatch(), _trainer()
    _feed(watch, trainer, [(1.0, 0.9), (0.8, 0.95), (0.6, 1.0), (0.4, 1.1), (0.2, 1.3)])
    assert len(watch.warnings) == 1
    assert watch.warnings[0]["step"] == 400 and watch.warnings[0]["best_step"] == 100
    err = capsys.readouterr().err
    assert err.count("warning: tuning loss has risen for 3 evaluations") == 1
    assert [r["kind"] for r in trainer.metrics.records] == ["warning"]


def test_no_warning_while_tuning_loss_falls_or_train_loss_rises_too(capsys):
    watch, trainer = DivergenceWatch(), _trainer()
    _feed(watch, trainer, [(1.0, 0.9), (0.8, 0.8), (0.7, 0.75), (0.6, 0.7)])
    # rising together (a diverging optimiser, not overfitting) is not this warning
    _feed(watch, trainer, [(0.9, 0.9), (1.0, 1.0), (1.2, 1.2)])
    assert watch.warnings == [] and capsys.readouterr().err == ""


def test_state_round_trips_so_a_resumed_run_does_not_warn_twice(capsys):
    watch, trainer = DivergenceWatch(), _trainer()
    _feed(watch, trainer, [(1.0, 0.9), (0.8, 0.95), (0.6, 1.0), (0.4, 1.1)])
    restored = DivergenceWatch()
    restored.load_state_dict(json.loads(json.dumps(watch.state_dict())))
    _feed(restored, trainer, [(0.1, 1.5)])
    assert len(restored.warnings) == 1


@pytest.mark.slow
def test_a_real_run_records_its_warnings(song_corpus, tmp_path):
    from seqlm.training.config import resolve_settings
    from seqlm.training.session import train_on_corpus

    # A model far too big for 300 bouts, no dropout, a high learning rate: it overfits.
    sets = [
        "train.cpu_threads=1",
        "train.steps=240",
        "train.eval_every=20",
        "train.lr=0.01",
        "train.warmup_steps=5",
        "model.context=64",
        "model.width=128",
        "model.layers=2",
        "model.heads=4",
    ]
    train_on_corpus(song_corpus.path, tmp_path / "run", resolve_settings(None, sets, "micro"))
    record = json.loads((tmp_path / "run" / "warnings.json").read_text())
    assert record["evaluations"] == 12
    assert record["best_step"] is not None
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    warnings = [json.loads(x) for x in lines if '"warning"' in x]
    assert [w["warning"] for w in warnings] == [w["warning"] for w in record["warnings"]]
