"""Synthetic MEDS datasets with a planted task signal, their corpus and a small trained run.

Two kinds (`kind`):
- "history": the label is whether `DX//MARK` occurs in the history. Marked subjects'
  other events come from `LAB//P*` codes, the others' from `LAB//N*` (before and after
  the prediction time), so a next-event model has reason to carry the class at every
  position. Bag-of-codes sees `DX//MARK` directly.
- "future": every history ends with `SEQ//A` and `SEQ//B`, in either order, the second
  exactly at the prediction time; after `A B` comes `OUTCOME` one hour later, after
  `B A` never. The label is whether `OUTCOME` follows within a day. Both orders hold the
  same codes, and filler counts and record lengths are drawn alike, so bag-of-codes
  counts (and days) carry no signal; the order does, which the sequence model learns.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from helpers.meds_data import meds_frame, write_meds

START = datetime(2100, 1, 1)
FILLERS = {"P": ["LAB//P1", "LAB//P2", "LAB//P3"], "N": ["LAB//N1", "LAB//N2", "LAB//N3"]}
NEUTRAL = ["LAB//A", "LAB//B", "LAB//C", "MED//D"]


def _split(subject: int, n: int) -> str:
    share = subject / n
    return "train" if share < 0.7 else ("tuning" if share < 0.85 else "held_out")


def _history_subject(subject: int, rng: np.random.Generator) -> tuple[list, datetime, bool]:
    positive = bool(subject % 2)
    codes = FILLERS["P" if positive else "N"]
    rows = [(subject, None, "GENDER//F" if rng.random() < 0.5 else "GENDER//M", None, None)]
    n_before = int(rng.integers(6, 12))
    times = [START + timedelta(hours=6 * k + int(rng.integers(0, 5))) for k in range(n_before)]
    mark_at = int(rng.integers(0, n_before - 1)) if positive else -1
    for k, when in enumerate(times):
        code = "DX//MARK" if k == mark_at else str(rng.choice(codes))
        rows.append((subject, when, code, None, None))
    prediction = times[-1]
    for k in range(int(rng.integers(3, 6))):
        rows.append(
            (subject, prediction + timedelta(hours=5 * (k + 1)), str(rng.choice(codes)), None, None)
        )
    return rows, prediction, positive


def _future_subject(subject: int, rng: np.random.Generator) -> tuple[list, datetime, bool]:
    positive = bool(subject % 2)
    rows = [(subject, None, "GENDER//F" if rng.random() < 0.5 else "GENDER//M", None, None)]
    n_before = int(rng.integers(5, 10))
    when = START
    for k in range(n_before):
        when = START + timedelta(hours=6 * k + int(rng.integers(0, 5)))
        rows.append((subject, when, str(rng.choice(NEUTRAL)), None, None))
    first, second = ("SEQ//A", "SEQ//B") if positive else ("SEQ//B", "SEQ//A")
    rows.append((subject, when + timedelta(hours=3), first, None, None))
    prediction = when + timedelta(hours=5)
    rows.append((subject, prediction, second, None, None))
    after = prediction + timedelta(hours=1)
    if positive:
        rows.append((subject, after, "OUTCOME", None, None))
    for k in range(int(rng.integers(2, 5))):
        rows.append(
            (subject, after + timedelta(hours=6 * (k + 1)), str(rng.choice(NEUTRAL)), None, None)
        )
    return rows, prediction, positive


def write_task_dataset(root: Path, kind: str, n_subjects: int = 160, seed: int = 0) -> Path:
    """A MEDS dataset under `root/meds` and its labels in `root/labels/0.parquet`."""
    rng = np.random.default_rng(seed)
    make = _history_subject if kind == "history" else _future_subject
    rows, labels = [], []
    for subject in range(n_subjects):
        subject_rows, prediction, positive = make(subject, rng)
        rows.extend(subject_rows)
        labels.append((subject, prediction, positive))
    splits = {s: _split(s, n_subjects) for s in range(n_subjects)}
    frame = meds_frame(rows)
    shards = {
        f"{name}/0.parquet": frame.filter(
            pl.col("subject_id").is_in([s for s, v in splits.items() if v == name])
        )
        for name in ("train", "tuning", "held_out")
    }
    write_meds(root / "meds", shards, splits=splits)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    pl.DataFrame(
        labels,
        schema={
            "subject_id": pl.Int64,
            "prediction_time": pl.Datetime("us"),
            "boolean_value": pl.Boolean,
        },
        orient="row",
    ).write_parquet(root / "labels" / "0.parquet")
    return root


def build_task_corpus(root: Path) -> Path:
    """Ingest `root/meds` into `root/corpus` with the MEDS defaults (time tokens on)."""
    from seqlm.ingest import ingest

    ingest("meds", [root / "meds"], root / "corpus", {"scheme": {"min_entities": 1}}, workers=1)
    return root / "corpus"


def train_task_run(root: Path, steps: int = 400) -> Path:
    """A tiny GPT (2 x 32) trained on `root/corpus` into `root/run`, one thread."""
    from seqlm.training.config import resolve_settings
    from seqlm.training.session import train_on_corpus

    settings = resolve_settings(
        preset="tiny",
        sets=[
            f"train.max_steps={steps}",
            "train.cpu_threads=1",
            "train.lr=0.01",
            "train.warmup_steps=20",
            "train.batch_size=16",
            "train.eval_every=100",
            "train.seed=0",
            "model.block_size=64",
        ],
    )
    train_on_corpus(root / "corpus", root / "run", settings)
    return root / "run"
