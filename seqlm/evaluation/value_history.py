"""A subject's own value history mixed into a model's next-token distribution.

On fused clinical tokens (`CODE//Q7`, `CODE//text`) a model that knows which lab comes
next must still pick its value bin among ten, and a subject's values persist: the bin a
lab had at its last draws is likely again. A model reading a window of 64 tokens
rarely sees them (a day holds hundreds of events). This scorer keeps, per sequence, a
decayed count of each code's value tokens seen so far and moves a share `weight` of the
probability the base model gives a code onto that code's history, leaving the code's
total probability, and every token of a code not yet seen, unchanged:

    p'(v) = p(v) (1 - w [code(v) seen]) + w P(code(v)) h(v | code(v))

where h is the code's decayed history (its k-th last value weighs exp(-k / memory)) and
P(code) the base model's mass on the code's tokens. It is the continuous-cache idea
(Grave et al., 2017) restricted to values within a code. `fit_value_history` chooses
memory and weight on a tuning split by cross-entropy (weight 0, the base model itself,
is one of the choices), as the n-gram order is chosen.

A base is any scorer with `probability_rows(sequences)`: the GPT and the LSTM
(`ModelScorer`) and the Kneser-Ney n-gram, so the comparison in `seqlm eval
--value-history` gives each of them the same history (docs/training.md, "A subject's own value history").
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np
import torch

from seqlm.errors import ConfigError
from seqlm.evaluation.scores import PredictionTargets, TokenScores, prediction_targets
from seqlm.progress import Progress, ensure_progress

DEFAULT_MEMORIES = (2.0, 5.0, 10.0)
DEFAULT_WEIGHTS = (0.0, 0.25, 0.5, 0.75)
# Rows x vocabulary of one chunk of snapshots (float64): bounds the copies to ~256 MB.
_CHUNK_CELLS = 1 << 25


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
class ValueHistorySettings:
    """How long a code's values are remembered and how much of its mass they take."""

    memory: float = 5.0  # the k-th last value of a code weighs exp(-k / memory)
    weight: float = 0.5  # share of a seen code's probability moved onto its history

    def __post_init__(self) -> None:
        if not (self.memory > 0 and np.isfinite(self.memory)):
            raise ConfigError(f"value history memory must be positive, got {self.memory}")
        # At 1 a value the code has not taken yet would get no probability at all.
        if not 0.0 <= self.weight < 1.0:
            raise ConfigError(f"value history weight must be in [0, 1), got {self.weight}")


def value_codes(code_ids: np.ndarray) -> np.ndarray:
    """Per token its code group (0 = none) where the code has at least two value tokens;
    a code with one value token has nothing to redistribute."""
    code_ids = np.asarray(code_ids, dtype=np.int64)
    sizes = np.bincount(code_ids)
    keep = (code_ids > 0) & (sizes[code_ids] >= 2)
    return np.where(keep, code_ids, 0)


def check_has_value_codes(code_ids: np.ndarray) -> None:
    if not value_codes(code_ids).any():
        raise ConfigError(
            "--value-history: no code of this vocabulary has several value tokens (fused "
            "code + value bin or code + text tokens); there is no value to remember"
        )


class _History:
    """Decayed per-code counts of the value tokens of one sequence so far."""

    def __init__(self, codes: np.ndarray, members: list[np.ndarray], memory: float) -> None:
        self.codes, self.members = codes, members
        self.factor = float(np.exp(-1.0 / memory))
        self.counts = np.zeros(codes.shape[0])
        self.share = np.zeros(codes.shape[0])  # h(v | code), 0 for unseen codes
        self.seen = np.zeros(codes.shape[0])  # 1.0 where the token's code has a history

    def add(self, token: int) -> None:
        code = self.codes[token]
        if code == 0:
            return
        group = self.members[code]
        self.counts[group] *= self.factor
        self.counts[token] += 1.0
        self.share[group] = self.counts[group] / self.counts[group].sum()
        self.seen[group] = 1.0


def _snapshots(
    history: _History, sequence: np.ndarray, absorbed: int, positions: np.ndarray
) -> tuple[np.ndarray, np.ndarray, int]:
    """The history's share and seen rows as they stand before each target position (the
    tokens before it absorbed), and how many tokens are absorbed after the last."""
    share = np.empty((positions.size, history.share.shape[0]))
    seen = np.empty_like(share)
    for row, position in enumerate(positions):
        while absorbed < position:
            history.add(int(sequence[absorbed]))
            absorbed += 1
        share[row], seen[row] = history.share, history.seen
    return share, seen, absorbed


def _mixed(
    probs: np.ndarray, share: np.ndarray, seen: np.ndarray, codes: np.ndarray, weight: float
) -> np.ndarray:
    if weight == 0.0:
        return probs
    rows = torch.from_numpy(probs)
    mass = torch.zeros(rows.shape[0], int(codes.max()) + 1, dtype=rows.dtype)
    mass.index_add_(1, torch.from_numpy(codes), rows)
    code_mass = mass[:, torch.from_numpy(codes)].numpy()
    return probs * (1.0 - weight * seen) + weight * code_mass * share


@dataclass
class _Walk:
    """Where the chunks of a source stand: the sequence being read, its histories."""

    targets: PredictionTargets
    codes: np.ndarray
    members: list[np.ndarray]
    memories: Sequence[float]
    sequence: int = -1
    absorbed: int = 0
    histories: list[_History] = field(default_factory=list)

    def chunks(
        self, source: RowSource, sequences: Sequence[np.ndarray], progress: Progress | None
    ) -> Iterator[tuple[np.ndarray, np.ndarray, list[tuple[np.ndarray, np.ndarray]]]]:
        """(target indices, base rows, per memory (share, seen) snapshots) in target
        order, split so that no chunk crosses a sequence or exceeds the cell budget."""
        step = max(1, _CHUNK_CELLS // max(1, self.codes.shape[0] * (1 + len(self.memories))))
        last = -1
        for indices, rows in source.probability_rows(sequences, progress):
            if indices.size and indices[0] <= last:
                raise AssertionError(f"{source.name}: rows were not given in target order")
            last = int(indices[-1]) if indices.size else last
            owner = self.targets.sequence[indices]
            cuts = np.flatnonzero(np.diff(owner)) + 1
            for part in np.split(np.arange(indices.size), cuts):
                for low in range(0, part.size, step):
                    piece = part[low : low + step]
                    yield indices[piece], rows[piece], self._snapshots(sequences, indices[piece])

    def _snapshots(self, sequences, indices) -> list[tuple[np.ndarray, np.ndarray]]:
        number = int(self.targets.sequence[indices[0]])
        if number != self.sequence:  # a new sequence starts with empty histories
            self.sequence, self.absorbed = number, 0
            self.histories = [_History(self.codes, self.members, m) for m in self.memories]
        sequence = np.asarray(sequences[number])
        positions = self.targets.position[indices]
        out, absorbed = [], self.absorbed
        for history in self.histories:
            share, seen, absorbed = _snapshots(history, sequence, self.absorbed, positions)
            out.append((share, seen))
        self.absorbed = absorbed
        return out


def _walk(targets: PredictionTargets, code_ids: np.ndarray, memories: Sequence[float]) -> _Walk:
    codes = value_codes(code_ids)
    members = [np.flatnonzero(codes == c) for c in range(int(codes.max()) + 1)]
    return _Walk(targets, codes, members, list(memories))


@dataclass
class ValueHistoryScorer:
    """A `Scorer`: the base's distributions with the sequence's value history mixed in."""

    base: RowSource
    code_ids: np.ndarray  # per token id its code part (`token_parts.token_part_map`)
    settings: ValueHistorySettings
    name: str = ""

    def __post_init__(self) -> None:
        check_has_value_codes(self.code_ids)
        self.name = self.name or f"{self.base.name} + value history"

    def describe(self) -> dict[str, float]:
        return {"memory": self.settings.memory, "weight": self.settings.weight}

    def score(
        self, sequences: Sequence[np.ndarray], progress: Progress | None = None
    ) -> TokenScores:
        targets = prediction_targets(sequences, self.code_ids.shape[0])
        n = len(targets)
        log_prob, max_prob = np.full(n, np.nan), np.zeros(n)
        n_greater, n_tied = np.zeros(n, np.int64), np.zeros(n, np.int64)
        walk = _walk(targets, self.code_ids, [self.settings.memory])
        for indices, rows, ((share, seen),) in walk.chunks(self.base, sequences, progress):
            mixed = _mixed(rows, share, seen, walk.codes, self.settings.weight)
            true = mixed[np.arange(indices.size), targets.token[indices]]
            n_greater[indices] = np.count_nonzero(mixed > true[:, None], axis=1)
            n_tied[indices] = np.count_nonzero(mixed == true[:, None], axis=1) - 1
            log_prob[indices] = np.log(np.maximum(true, np.finfo(np.float64).tiny))
            max_prob[indices] = mixed.max(axis=1)
        if n and np.isnan(log_prob).any():  # a source bug, never the user's input
            raise AssertionError(f"{self.base.name}: some targets got no row")
        return TokenScores.of_targets(targets, log_prob, n_greater, n_tied, max_prob)


@dataclass(frozen=True)
class ValueHistoryFit:
    """The chosen settings and every candidate's tuning cross-entropy (nats)."""

    settings: ValueHistorySettings
    tuning_cross_entropy: dict[tuple[float, float], float]

    def as_dict(self) -> dict[str, object]:
        return {
            "memory": self.settings.memory,
            "weight": self.settings.weight,
            "chosen_by": "lowest cross-entropy on the tuning split (weight 0: the base alone)",
            "tuning_cross_entropy": {
                f"memory={m:g},weight={w:g}": round(ce, 5)
                for (m, w), ce in self.tuning_cross_entropy.items()
            },
        }


def fit_value_history(
    source: RowSource,
    tuning: Sequence[np.ndarray],
    code_ids: np.ndarray,
    memories: Sequence[float] = DEFAULT_MEMORIES,
    weights: Sequence[float] = DEFAULT_WEIGHTS,
    progress: Progress | None = None,
) -> ValueHistoryFit:
    """Memory and weight with the lowest cross-entropy on `tuning`, one pass of the base."""
    check_has_value_codes(code_ids)
    targets = prediction_targets(tuning, np.asarray(code_ids).shape[0])
    if len(targets) == 0:
        raise ConfigError("--value-history needs tuning sequences to choose its settings")
    total = {(float(m), float(w)): 0.0 for m in memories for w in weights}
    walk = _walk(targets, code_ids, memories)
    progress = ensure_progress(progress)
    for indices, rows, snapshots in walk.chunks(source, tuning, progress):
        picked = (np.arange(indices.size), targets.token[indices])
        for memory, (share, seen) in zip(memories, snapshots, strict=True):
            for weight in weights:
                true = _mixed(rows, share, seen, walk.codes, float(weight))[picked]
                nats = -np.log(np.maximum(true, np.finfo(np.float64).tiny)).sum()
                total[(float(memory), float(weight))] += float(nats)
    mean = {key: value / len(targets) for key, value in total.items()}
    memory, weight = min(mean, key=lambda key: (mean[key], key[1]))
    return ValueHistoryFit(ValueHistorySettings(memory, weight), mean)


def with_value_history(
    scorers: Sequence[object],
    tuning: Sequence[np.ndarray],
    code_ids: np.ndarray,
    model_name: str,
    progress: Progress | None = None,
) -> tuple[list[object], dict[str, dict[str, object]]]:
    """Every scorer that gives full rows gets a twin with the value history (fitted on
    `tuning` for that scorer); the model's twin takes `model_name`, so the comparisons
    read the model with its history against each baseline with its own, and the model
    as it was is kept as `<model_name> without value history`. Uniform and unigram have
    no rows to mix and stay as they are."""
    check_has_value_codes(code_ids)
    out: list[object] = []
    fitted: dict[str, dict[str, object]] = {}
    for scorer in scorers:
        if not hasattr(scorer, "probability_rows"):
            out.append(scorer)
            continue
        fit = fit_value_history(scorer, tuning, code_ids, progress=progress)  # type: ignore[arg-type]
        is_model = scorer.name == model_name  # type: ignore[attr-defined]
        if is_model:
            scorer = replace(scorer, name=f"{model_name} without value history")  # type: ignore[call-overload]
        twin = ValueHistoryScorer(
            scorer, code_ids, fit.settings, name=model_name if is_model else ""
        )  # type: ignore[arg-type]
        out += [twin, scorer] if is_model else [scorer, twin]
        fitted[twin.name] = fit.as_dict()
    return out, fitted
