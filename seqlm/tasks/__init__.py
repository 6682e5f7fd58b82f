"""Clinical prediction tasks: MEDS labels, histories at prediction time, four methods
(zero-shot, probe, fine-tune, bag-of-codes baseline), metrics with subject-bootstrap
intervals, MEDS-DEV predictions (`run_task`, `seqlm task`)."""

from __future__ import annotations

from seqlm.tasks.labels import match_labels, read_labels
from seqlm.tasks.options import METHODS, TaskOptions
from seqlm.tasks.run import TaskResult, run_task

__all__ = ["METHODS", "TaskOptions", "TaskResult", "match_labels", "read_labels", "run_task"]
