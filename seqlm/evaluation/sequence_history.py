"""What a subject's own sequence says, mixed into a model's next-token distribution.

Two regularities of clinical event streams that a model reading a window of 64 tokens
learns poorly (measured on the MIMIC-IV demo, docs/training.md "A subject's own
sequence history"):

- **Values persist.** On fused tokens (`CODE//Q7`, `CODE//text`) a model that knows
  which lab comes next must still pick its value among ten, and the bin a lab had at a
  subject's last draws is likely again; those draws are usually out of the window.
  A share `weight` of the probability of a code seen before moves onto that code's
  decayed history h (its k-th last value weighs exp(-k / memory)); the code's total
  probability, and every token of a code not seen yet, stay as they were:
      p1(v) = p(v) (1 - weight [code(v) seen]) + weight P(code(v)) h(v | code(v))
  (the continuous-cache idea of Grave et al., 2017, restricted to values within a code).
- **A time rarely lists a code twice.** The events since the last time-gap token share
  a time (`[TIME//...]` is emitted only between times at least the smallest gap
  apart); every token of a code already listed there is scaled by `repeat_factor`:
      p2(v) = p1(v) repeat_factor^[code(v) listed at this time] / Z
  (the sampler's `no-repeat` grammar made soft, so the 10% of real repeats keep mass).

`fit_history` chooses memory, weight and repeat factor on a tuning split by
cross-entropy (weight 0 and factor 1, the base model itself, are among the choices), as
the n-gram order is chosen. A base is any scorer with `probability_rows(sequences)`:
the GPT and the LSTM (`ModelScorer`) and the Kneser-Ney n-gram, so `seqlm eval
--sequence-history` gives each of them the same history.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np
import torch

from seqlm.errors import ConfigError
from seqlm.evaluation.scores import (
    PredictionTargets,
    TokenScores,
    prediction_targets,
    rank_counts,
)
from seqlm.progress import Progress

DEFAULT_MEMORIES = (2.0, 5.0, 10.0)
DEFAULT_WEIGHTS = (0.0, 0.25, 0.5, 0.75)
DEFAULT_REPEAT_FACTORS = (1.0, 0.5, 0.3, 0.2, 0.1, 0.05)
# Rows x vocabulary of one chunk of snapshots (float64): bounds the copies to ~256 MB.
_CHUNK_CELLS = 1 << 25
_TINY = np.finfo(np.float64).tiny


class RowSource(Protocol):
    """A scorer that can give full next-token distributions in target order."""

    name: str

    def probability_rows(
        self, sequences: Sequence[np.ndarray], progress: Progress | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(target indices, ascending; probability rows (N, V), float64), every target of
        `prediction_targets(sequences)` once, chunk after chunk in target order."""
        ...


@dataclass(frozen=True)
class HistorySettings:
    """How long a code's values are remembered, how much of its mass they take, and how
    much a code already listed at the current time keeps."""

    memory: float = 5.0  # the k-th last value of a code weighs exp(-k / memory)
    weight: float = 0.5  # share of a seen code's probability moved onto its history
    repeat_factor: float = 1.0  # scales a code already listed at this time (1 = off)

    def __post_init__(self) -> None:
        if not (self.memory > 0 and np.isfinite(self.memory)):
            raise ConfigError(f"history memory must be positive, got {self.memory}")
        # At 1 a value the code has not taken yet would get no probability at all.
        if not 0.0 <= self.weight < 1.0:
            raise ConfigError(f"history weight must be in [0, 1), got {self.weight}")
        if not 0.0 < self.repeat_factor <= 1.0:
            raise ConfigError(f"repeat factor must be in (0, 1], got {self.repeat_factor}")


@dataclass(frozen=True)
class HistoryCodes:
    """Per token id: its value group (a code with several value tokens; 0 = none) and
    its code (every data token; 0 = none), and the ids of the time-gap tokens."""

    value_group: np.ndarray
    code: np.ndarray
    time_ids: np.ndarray

    @property
    def vocab_size(self) -> int:
        return int(self.code.shape[0])


def history_codes(vocabulary: Any) -> HistoryCodes:  # noqa: ANN401 (a Vocabulary)
    """The codes of a `seqlm.vocabularies.Vocabulary`, read from what it fitted
    (`data_tokens`: code, text, bin), never from the token strings; ConfigError when
    it has neither a code with several values nor time-gap tokens (nothing to use)."""
    tokens, data_tokens = vocabulary.tokens, vocabulary.data_tokens
    codes: dict[str, int] = {}
    code = np.zeros(len(tokens), dtype=np.int64)
    valued = np.zeros(len(tokens), dtype=bool)
    for i, token in enumerate(tokens):
        entry = data_tokens.get(token)
        if entry is not None:
            code[i] = codes.setdefault(entry.code, len(codes) + 1)
            valued[i] = entry.bin is not None or entry.text is not None
    value_group = np.where(valued, code, 0)
    sizes = np.bincount(value_group, minlength=len(codes) + 1)
    value_group = np.where(sizes[value_group] >= 2, value_group, 0)
    gaps = vocabulary.scheme.time_gap_tokens()
    lookup = vocabulary.token_to_id
    time_ids = [lookup[t] for t in (gaps.tokens if gaps is not None else []) if t in lookup]
    if not value_group.any() and not time_ids:
        raise ConfigError(
            "--sequence-history: this vocabulary has no code with several value tokens "
            "(fused code + value) and no time-gap tokens; its sequences hold no history "
            "of values or times to use"
        )
    return HistoryCodes(value_group, code, np.asarray(time_ids, dtype=np.int64))


def history_helps_values(vocabulary: Any) -> bool:  # noqa: ANN401 (a Vocabulary)
    """Whether `--sequence-history` has values to remember in this vocabulary (a code
    with several fused value tokens): what `seqlm eval` suggests it for."""
    try:
        return bool(history_codes(vocabulary).value_group.any())
    except ConfigError:
        return False


class _History:
    """One sequence so far: decayed value counts per code, and the codes listed since
    the last time-gap token."""

    def __init__(self, codes: HistoryCodes, members: list[np.ndarray], memory: float) -> None:
        self.codes, self.members = codes, members
        self.factor = float(np.exp(-1.0 / memory))
        size = codes.vocab_size
        self.counts, self.share, self.seen = np.zeros(size), np.zeros(size), np.zeros(size)
        self.listed = np.zeros(int(codes.code.max()) + 1, dtype=bool)
        self.listed_now: list[int] = []
        self.is_time = np.zeros(size, dtype=bool)
        self.is_time[codes.time_ids] = True

    def add(self, token: int) -> None:
        if self.is_time[token]:  # a new time: clear only what this one listed
            self.listed[self.listed_now] = False
            self.listed_now = []
            return
        code = self.codes.code[token]
        if not self.listed[code]:
            self.listed[code] = True
            self.listed_now.append(code)
        group_id = self.codes.value_group[token]
        if group_id == 0:
            return
        group = self.members[group_id]
        self.counts[group] *= self.factor
        self.counts[token] += 1.0
        self.share[group] = self.counts[group] / self.counts[group].sum()
        self.seen[group] = 1.0


@dataclass
class _Snapshots:
    """Per row (target) of a chunk: the value share and seen rows (or, for the fit, one
    column: the true token's), and the codes listed at the target's time (column 0, no
    code, is never listed; the same for every memory)."""

    share: np.ndarray
    seen: np.ndarray
    listed: np.ndarray


def _group_mass(probs: np.ndarray, codes: HistoryCodes) -> torch.Tensor:
    """(rows, value groups): each row's probability summed over each code's values."""
    rows = torch.from_numpy(probs)
    mass = torch.zeros(rows.shape[0], int(codes.value_group.max()) + 1, dtype=rows.dtype)
    mass.index_add_(1, torch.from_numpy(codes.value_group), rows)
    return mass


def _value_mixed(probs: np.ndarray, snap: _Snapshots, codes: HistoryCodes, weight: float):
    if weight == 0.0:
        return probs
    mass = _group_mass(probs, codes)[:, torch.from_numpy(codes.value_group)].numpy()
    return probs * (1.0 - weight * snap.seen) + weight * mass * snap.share


def _listed_mask(snap: _Snapshots, codes: HistoryCodes) -> np.ndarray:
    listed = snap.listed.copy()
    listed[:, 0] = False  # tokens without a code are never discounted
    return listed[:, codes.code]


def mixed_rows(probs: np.ndarray, snap: _Snapshots, codes: HistoryCodes, s: HistorySettings):
    """The base rows with the value history and the same-time discount applied."""
    rows = _value_mixed(probs, snap, codes, s.weight)
    if s.repeat_factor == 1.0:
        return rows
    rows = np.where(_listed_mask(snap, codes), rows * s.repeat_factor, rows)
    return rows / rows.sum(axis=1, keepdims=True)


@dataclass
class _Walk:
    """Where the chunks of a source stand: the sequence being read, its histories."""

    targets: PredictionTargets
    codes: HistoryCodes
    memories: Sequence[float]
    true_only: bool = False  # snapshots hold the true token's share and seen only (the fit)
    sequence: int = -1
    absorbed: int = 0
    histories: list[_History] = field(default_factory=list)

    def __post_init__(self) -> None:
        group = self.codes.value_group
        self.members = [np.flatnonzero(group == g) for g in range(int(group.max()) + 1)]

    def chunks(
        self, source: RowSource, sequences: Sequence[np.ndarray], progress: Progress | None
    ) -> Iterator[tuple[np.ndarray, np.ndarray, list[_Snapshots]]]:
        """(target indices, base rows, one snapshot per memory) in target order, split
        so that no chunk crosses a sequence or exceeds the cell budget."""
        copies = 1 if self.true_only else 1 + 2 * len(self.memories)
        per_row = self.codes.vocab_size * copies
        step = max(1, _CHUNK_CELLS // per_row)
        last = -1
        for indices, rows in source.probability_rows(sequences, progress):
            if indices.size and indices[0] <= last:
                raise AssertionError(f"{source.name}: rows were not given in target order")
            last = int(indices[-1]) if indices.size else last
            owner = self.targets.sequence[indices]
            for part in np.split(np.arange(indices.size), np.flatnonzero(np.diff(owner)) + 1):
                for low in range(0, part.size, step):
                    piece = part[low : low + step]
                    yield indices[piece], rows[piece], self._snapshots(sequences, indices[piece])

    def _snapshots(self, sequences, indices) -> list[_Snapshots]:
        number = int(self.targets.sequence[indices[0]])
        if number != self.sequence:  # a new sequence starts with empty histories
            self.sequence, self.absorbed = number, 0
            self.histories = [_History(self.codes, self.members, m) for m in self.memories]
        sequence = np.asarray(sequences[number])
        positions = self.targets.position[indices]
        # the fit needs the true token's column only: no copy of whole rows per memory
        pick = self.targets.token[indices] if self.true_only else slice(None)
        n, width = positions.size, 1 if self.true_only else self.codes.vocab_size
        listed = np.empty((n, self.histories[0].listed.size), bool)
        out = []
        for i, history in enumerate(self.histories):
            snap = _Snapshots(np.empty((n, width)), np.empty((n, width)), listed)
            absorbed = self.absorbed
            for row, position in enumerate(positions):
                while absorbed < position:  # the tokens before the target, never itself
                    history.add(int(sequence[absorbed]))
                    absorbed += 1
                at = pick[row] if self.true_only else pick
                snap.share[row], snap.seen[row] = history.share[at], history.seen[at]
                if i == 0:
                    listed[row] = history.listed
            out.append(snap)
        self.absorbed = absorbed
        return out


@dataclass
class SequenceHistoryScorer:
    """A `Scorer`: the base's distributions with the sequence's own history mixed in."""

    base: RowSource
    codes: HistoryCodes
    settings: HistorySettings
    name: str = ""

    def __post_init__(self) -> None:
        self.name = self.name or f"{self.base.name} + sequence history"

    def score(
        self, sequences: Sequence[np.ndarray], progress: Progress | None = None
    ) -> TokenScores:
        targets = prediction_targets(sequences, self.codes.vocab_size)
        n = len(targets)
        log_prob, max_prob = np.full(n, np.nan), np.zeros(n)
        n_greater, n_tied = np.zeros(n, np.int64), np.zeros(n, np.int64)
        walk = _Walk(targets, self.codes, [self.settings.memory])
        for indices, rows, (snap,) in walk.chunks(self.base, sequences, progress):
            mixed = mixed_rows(rows, snap, self.codes, self.settings)
            n_greater[indices], n_tied[indices], true = rank_counts(mixed, targets.token[indices])
            log_prob[indices] = np.log(np.maximum(true, _TINY))
            max_prob[indices] = mixed.max(axis=1)
        if n and np.isnan(log_prob).any():  # a source bug, never the user's input
            raise AssertionError(f"{self.base.name}: some targets got no row")
        return TokenScores.of_targets(targets, log_prob, n_greater, n_tied, max_prob)


@dataclass(frozen=True)
class HistoryFit:
    """The chosen settings and every candidate's tuning cross-entropy (nats)."""

    settings: HistorySettings
    tuning_cross_entropy: dict[tuple[float, float, float], float]

    def as_dict(self) -> dict[str, object]:
        return {
            "memory": self.settings.memory,
            "weight": self.settings.weight,
            "repeat_factor": self.settings.repeat_factor,
            "chosen_by": "lowest cross-entropy on the tuning split "
            "(weight 0 and repeat factor 1: the base alone)",
            "tuning_cross_entropy": {
                f"memory={m:g},weight={w:g},repeat_factor={f:g}": round(ce, 5)
                for (m, w, f), ce in self.tuning_cross_entropy.items()
            },
        }


def fit_history(
    source: RowSource,
    tuning: Sequence[np.ndarray],
    codes: HistoryCodes,
    memories: Sequence[float] = DEFAULT_MEMORIES,
    weights: Sequence[float] = DEFAULT_WEIGHTS,
    repeat_factors: Sequence[float] = DEFAULT_REPEAT_FACTORS,
    progress: Progress | None = None,
) -> HistoryFit:
    """The settings with the lowest cross-entropy on `tuning`, from one pass of the base.

    The discount's normaliser needs no second pass: the value history keeps every
    code's mass, so the listed codes' mass L is the base's, and
    log p2(true) = log p1(true) + [true listed] log f - log(1 - (1 - f) L).
    """
    targets = prediction_targets(tuning, codes.vocab_size)
    if len(targets) == 0:
        raise ConfigError("--sequence-history needs tuning sequences to choose its settings")
    if not codes.value_group.any():
        weights = (0.0,)  # no code has several values: only the same-time part applies
    if codes.time_ids.size == 0:
        repeat_factors = (1.0,)  # no time tokens: no "current time" to discount within
    grid = [
        (float(m), float(w), float(f)) for m in memories for w in weights for f in repeat_factors
    ]
    total = dict.fromkeys(grid, 0.0)
    walk = _Walk(targets, codes, memories, true_only=True)
    for indices, rows, snapshots in walk.chunks(source, tuning, progress):
        tokens = targets.token[indices]
        picked = (np.arange(indices.size), tokens)
        listed = _listed_mask(snapshots[0], codes)  # the same for every memory
        listed_mass = np.where(listed, rows, 0.0).sum(axis=1)
        true_listed = listed[picked]
        # `_value_mixed` at the true token only: its group's mass times its share
        true_base = rows[picked]
        true_group_mass = _group_mass(rows, codes).numpy()[picked[0], codes.value_group[tokens]]
        for memory, snap in zip(memories, snapshots, strict=True):
            share, seen = snap.share[:, 0], snap.seen[:, 0]
            for weight in weights:
                w = float(weight)
                true = true_base * (1.0 - w * seen) + w * true_group_mass * share
                log_true = np.log(np.maximum(true, _TINY))
                for factor in repeat_factors:
                    log_p = log_true + true_listed * np.log(factor)
                    log_p -= np.log(np.maximum(1.0 - (1.0 - factor) * listed_mass, _TINY))
                    total[(float(memory), float(weight), float(factor))] -= float(log_p.sum())
    mean = {key: value / len(targets) for key, value in total.items()}
    # Ties go to the plainer setting: less weight, a milder discount.
    best = min(mean, key=lambda key: (mean[key], key[1], -key[2]))
    return HistoryFit(HistorySettings(*best), mean)


def warn_if_in_sample(scored: str | Sequence[str], tuning_split: str) -> None:
    """Warn when the split the settings are fitted on is also scored: the history's
    figures there are in-sample (as the n-gram order's are)."""
    splits = [scored] if isinstance(scored, str) else list(scored)
    if tuning_split in splits:
        warnings.warn(
            f"--sequence-history fits its settings on the {tuning_split!r} split, which is "
            "scored here too: the history's figures on it are in-sample",
            stacklevel=3,
        )


def with_sequence_history(
    scorers: Sequence[Any],
    tuning: Sequence[np.ndarray],
    codes: HistoryCodes,
    model_name: str,
    progress: Progress | None = None,
) -> tuple[list[Any], dict[str, dict[str, object]]]:
    """Every scorer that gives full rows gets a twin with the sequence history (fitted
    on `tuning` for that scorer); the model's twin takes `model_name`, so the
    comparisons read the model with its history against each baseline with its own,
    and the model as it was is kept as `<model_name> without sequence history`.
    Uniform and unigram have no rows to mix and stay as they are."""
    out: list[Any] = []
    fitted: dict[str, dict[str, object]] = {}
    for scorer in scorers:
        if not hasattr(scorer, "probability_rows"):
            out.append(scorer)
            continue
        fit = fit_history(scorer, tuning, codes, progress=progress)
        is_model = scorer.name == model_name
        if is_model:
            scorer = replace(scorer, name=f"{model_name} without sequence history")
        twin = SequenceHistoryScorer(
            scorer, codes, fit.settings, name=model_name if is_model else ""
        )
        out += [twin, scorer] if is_model else [scorer, twin]
        fitted[twin.name] = fit.as_dict()
    return out, fitted
