"""Zero-shot prediction: sample futures from the history, count those reaching the outcome.

For each label, `samples` trajectories are drawn from the model's full distribution
(temperature 1, no top-k/top-p: truncation would bias the estimated frequency), each
continuing the history known at the prediction time. The probability is the share of
trajectories in which a token whose code matches an outcome pattern appears within the
horizon. As in MEDS_EIC_AR and ETHOS.

Time in a trajectory: the generated time-gap tokens add their interval's centre
(`time_token_seconds`, as the MEDS export rebuilds time) to the time of the history's
last event. The horizon ends `horizon_s` after the prediction time, so a trajectory may
run `(prediction_time - last history event) + horizon_s` seconds. A trajectory that
spends its token budget before reaching the horizon without the outcome counts as
"no outcome"; the share of such trajectories is reported (`budget_before_horizon`), as it
biases the probability low. Without a horizon (or without time tokens) the token budget
alone bounds a trajectory.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from seqlm.errors import ConfigError
from seqlm.evaluation.generate import sample_trajectories, time_token_seconds
from seqlm.progress import Progress, ensure_progress
from seqlm.tasks.history import History
from seqlm.vocabularies.scheme import BOS_ID, EOS_ID, PAD_ID
from seqlm.vocabularies.vocabulary import Vocabulary


def outcome_token_ids(vocab: Vocabulary, patterns: Sequence[str]) -> np.ndarray:
    """Ids of the tokens whose code (or token string) matches a shell-style pattern."""
    matched = []
    for token_id, token in enumerate(vocab.tokens):
        info = vocab.token_info(token_id)
        names = [token] + ([info.code] if info.code else [])
        if any(fnmatch.fnmatchcase(name, p) for p in patterns for name in names):
            matched.append(token_id)
    if not matched:
        raise ConfigError(
            f"no token of the vocabulary matches the outcome codes {list(patterns)}; "
            "codes below the privacy threshold became unknowns (seqlm corpus info lists codes)"
        )
    return np.asarray(matched, dtype=np.int64)


def reaches_outcome(
    trajectory: Sequence[int],
    outcome: np.ndarray,
    step_seconds: np.ndarray,
    allowed_s: float | None,
) -> tuple[bool, bool]:
    """(outcome reached within the allowed time, horizon reached) for one trajectory."""
    ids = np.asarray(trajectory, dtype=np.int64)
    if ids.size == 0:
        return False, False
    if allowed_s is None:
        return bool(np.isin(ids, outcome).any()), False
    clock = np.cumsum(step_seconds[ids])
    inside = clock <= allowed_s
    return bool(np.isin(ids[inside], outcome).any()), bool((~inside).any())


@dataclass
class ZeroShotResult:
    probabilities: np.ndarray
    outcome_ids: list[int]
    budget_before_horizon: float
    tokens_generated: int
    notes: list[str] = field(default_factory=list)


def _allowed_seconds(history: History, horizon_s: float | None) -> float | None:
    if horizon_s is None:
        return None
    return max(0.0, history.prediction_s - history.last_time_s) + horizon_s


def zero_shot_probabilities(
    model: nn.Module,
    vocab: Vocabulary,
    histories: Sequence[History],
    outcome_codes: Sequence[str],
    *,
    samples: int = 20,
    max_new_tokens: int = 256,
    horizon_s: float | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> ZeroShotResult:
    """Share of `samples` trajectories per history that reach an outcome token."""
    outcome = outcome_token_ids(vocab, outcome_codes)
    step_seconds = time_token_seconds(vocab)
    notes = []
    if horizon_s is not None and not step_seconds.any():
        notes.append("the vocabulary has no time tokens: the horizon is ignored")
        horizon_s = None
    context = int(model.config.block_size)  # type: ignore[union-attr]
    banned = [PAD_ID, BOS_ID, *vocab.condition_ids]
    generator = torch.Generator().manual_seed(seed)
    progress = ensure_progress(progress)
    progress.start("zero-shot (labels)", total=len(histories))
    probabilities = np.zeros(len(histories))
    short = total = generated = 0
    for row, history in enumerate(histories):
        # A trajectory may stop at its first outcome code: whether it came within the
        # horizon is decided there, and nothing after it can change the answer.
        trajectories = sample_trajectories(
            model,
            history.window(context),
            samples,
            max_new_tokens,
            stop_token_ids=(EOS_ID, *(int(i) for i in outcome)),
            banned_token_ids=banned,
            generator=generator,
        )
        allowed = _allowed_seconds(history, horizon_s)
        hits = 0
        for trajectory in trajectories:
            reached, passed = reaches_outcome(trajectory, outcome, step_seconds, allowed)
            hits += reached
            ended = bool(trajectory) and trajectory[-1] == EOS_ID
            short += allowed is not None and not (reached or passed or ended)
            generated += len(trajectory)
        total += len(trajectories)
        probabilities[row] = hits / len(trajectories)
        progress.advance(1)
    progress.finish()
    return ZeroShotResult(
        probabilities=probabilities,
        outcome_ids=[int(i) for i in outcome],
        budget_before_horizon=short / total if total else 0.0,
        tokens_generated=generated,
        notes=notes,
    )
