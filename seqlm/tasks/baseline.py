"""The baseline every clinical paper shows: logistic regression on bag-of-codes counts.

Features of one label: how often each code occurs in the history (every token known at
the prediction time, not cut to the model's context: the baseline has no context limit),
as log(1 + count), plus the number of days from the subject's first event to the
prediction time. Value-binned tokens of one code (`LAB//X//Q3`, `LAB//X//Q7`) count for
that code; special, time-gap and value tokens carry no code and are left out. The code
columns are those seen in train histories only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from seqlm.tasks.history import History
from seqlm.vocabularies.vocabulary import Vocabulary

SECONDS_PER_DAY = 86_400.0


def token_code_index(vocab: Vocabulary) -> tuple[np.ndarray, list[str]]:
    """For every token id, the index of its code (-1 for tokens without one), and the codes."""
    codes: dict[str, int] = {}
    column = np.full(len(vocab), -1, dtype=np.int64)
    for token_id in range(len(vocab)):
        info = vocab.token_info(token_id)
        if info.role not in ("event", "unknown") or info.code is None:
            continue
        column[token_id] = codes.setdefault(info.code, len(codes))
    return column, list(codes)


class BagOfCodes:
    """`fit` picks the code columns from train histories; `transform` counts them."""

    def __init__(self, vocab: Vocabulary) -> None:
        self.code_of_token, self.codes = token_code_index(vocab)
        self.columns: np.ndarray | None = None

    def _counts(self, histories: Sequence[History]) -> np.ndarray:
        counts = np.zeros((len(histories), len(self.codes)), dtype=np.float64)
        for row, history in enumerate(histories):
            code = self.code_of_token[history.ids]
            np.add.at(counts[row], code[code >= 0], 1.0)
        return counts

    def fit(self, histories: Sequence[History]) -> BagOfCodes:
        self.columns = np.flatnonzero(self._counts(histories).sum(axis=0) > 0)
        return self

    def transform(self, histories: Sequence[History]) -> np.ndarray:
        if self.columns is None:
            raise RuntimeError("BagOfCodes.transform before fit")
        counts = np.log1p(self._counts(histories)[:, self.columns])
        days = np.array([[h.prediction_s / SECONDS_PER_DAY] for h in histories])
        return np.hstack([counts, days]) if len(histories) else np.zeros((0, len(self.columns) + 1))

    def feature_names(self) -> list[str]:
        assert self.columns is not None
        return [self.codes[i] for i in self.columns] + ["days_since_first_event"]
