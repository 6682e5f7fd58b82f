"""The history a model may see for a label: the subject's tokens up to prediction time.

Where token times come from: the corpus stores one float32 per token in `times.bin`,
seconds since the subject's first timed event (`index.first_time`); every token takes
its event's time (a time-gap token the time of the event it leads into, static rows and
`[BOS]` 0). The prediction time is turned into the same offset,
`prediction_time - first_time` in seconds, and rounded to float32 exactly as the
writer rounded event times.

The rule at the boundary: a token belongs to the history when its time is **at or
before** the prediction time (`time <= prediction_time`, the MEDS convention: an event
recorded at the prediction time is known then). `[EOS]` is never part of a history (it
would tell the model that the record ends). Because every token of an event shares the
event's time, an event is kept or dropped whole; the time-gap tokens that lead into the
first event after the prediction time are dropped with it.

Resolution: float32 offsets are exact to the second for records up to 2^24 s (194 days)
long; beyond that two times less than one float32 step apart (64 s at 10 years) compare
equal, so an event within that step after the prediction time would count as at it.
`time_resolution_s` reports the largest step over the labels used.

Histories longer than the model's context keep their last `context` tokens (left
truncation), as the model saw windows of long sequences in training.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from seqlm.corpus.store import Corpus
from seqlm.errors import CorpusError
from seqlm.vocabularies.scheme import EOS_ID


@dataclass
class History:
    """One label's history: `ids` (every token known at prediction time), `last_time_s`
    (offset of its last token), `prediction_s` (the prediction time's offset), both in
    seconds since the subject's first timed event."""

    ids: np.ndarray
    last_time_s: float
    prediction_s: float

    def window(self, context: int) -> np.ndarray:
        """The last `context` tokens: what a model with that context sees."""
        return self.ids[-context:]


def prediction_offsets(labels: pl.DataFrame, corpus: Corpus) -> np.ndarray:
    """Seconds from each label's subject's first timed event to its prediction time."""
    first = corpus.index["first_time"].dt.cast_time_unit("us").gather(labels["seq_id"])
    delta = labels["prediction_time"].dt.epoch("us") - first.dt.epoch("us")
    return delta.cast(pl.Float64).to_numpy() / 1e6


def history_length(times: np.ndarray, ids: np.ndarray, prediction_s: float) -> int:
    """How many leading tokens of a sequence lie at or before `prediction_s`, [EOS] out."""
    cut = int(np.searchsorted(times, np.float32(prediction_s), side="right"))
    cut = max(cut, 1)  # [BOS] (time 0) always: the prediction time is inside the record
    if cut == len(ids) and int(ids[-1]) == EOS_ID:
        cut -= 1
    return cut


def label_history(corpus: Corpus, seq_id: int, prediction_s: float) -> History:
    """The tokens of sequence `seq_id` known at `prediction_s`."""
    if corpus.times is None:
        raise CorpusError(f"{corpus.path}: has no times.bin; histories need token times")
    ids = np.asarray(corpus.sequence(seq_id))
    times = np.asarray(corpus.sequence_times(seq_id))
    cut = history_length(times, ids, prediction_s)
    return History(
        ids=ids[:cut].astype(np.int64),
        last_time_s=float(times[cut - 1]),
        prediction_s=float(prediction_s),
    )


def label_histories(corpus: Corpus, labels: pl.DataFrame) -> list[History]:
    """One `History` per row of `labels` (columns `seq_id`, `prediction_time`)."""
    offsets = prediction_offsets(labels, corpus)
    seq_ids = labels["seq_id"].to_numpy()
    return [label_history(corpus, int(s), float(p)) for s, p in zip(seq_ids, offsets, strict=True)]


def time_resolution_s(histories: list[History]) -> float:
    """The largest float32 step at any prediction time used (see the module docstring)."""
    if not histories:
        return 0.0
    largest = max(abs(h.prediction_s) for h in histories)
    return float(np.spacing(np.float32(largest)))
