"""Training: the loop, its budget and schedule, checkpoints and run folders, and
distributed setup. `train_on_corpus` is the library behind `seqlm train`."""

from __future__ import annotations

from seqlm.training.budget import Budget, Counters
from seqlm.training.callbacks import TrainCallback
from seqlm.training.checkpoint import Checkpoint, RunFolder
from seqlm.training.config import RunSettings, TrainConfig, resolve_settings
from seqlm.training.runs import load_trained_model, summarize_run
from seqlm.training.session import train_on_corpus
from seqlm.training.trainer import Trainer, TrainResult

__all__ = [
    "Budget",
    "Checkpoint",
    "Counters",
    "RunFolder",
    "RunSettings",
    "TrainCallback",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "load_trained_model",
    "resolve_settings",
    "summarize_run",
    "train_on_corpus",
]
