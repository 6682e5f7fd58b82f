"""A trained model as a `Scorer`: load a run folder, score sequences with full context.

`load_run_model(run)` reads `config.json` (model type and shape) and the weights
(`best/model.safetensors` when the run kept one, else the latest), and
`ModelScorer(model).score(sequences)` gives `TokenScores` on exactly the positions
`prediction_targets` lists, the same ones every baseline scores.

Long sequences (MIMIC subjects run to thousands of tokens, past the model's context C)
are scored by sliding windows of C input tokens whose ends advance by a stride s
(default C // 2). Each target is predicted once, by the first window that reaches it:
window k covers inputs [e_k - C, e_k) with e_k = min(C + k s, L - 1) and predicts the
targets after e_{k-1}, so every target past the first window sees at least C - s + 1
tokens of context (the last window is shifted back to end at the sequence's end, never
shorter). `ModelScorer.describe()` states this in eval.json.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from seqlm.errors import ConfigError, CorpusError
from seqlm.evaluation.lstm import LSTMConfig, LSTMLanguageModel
from seqlm.evaluation.scores import PredictionTargets, TokenScores, prediction_targets
from seqlm.model.config import GPTConfig
from seqlm.model.gpt import GPT
from seqlm.progress import Progress, ensure_progress
from seqlm.training.checkpoint import (
    BEST_DIR,
    CHECKPOINTS_DIR,
    STATE_FILE,
    WEIGHTS_FILE,
    load_weights,
)
from seqlm.vocabularies.scheme import PAD_ID

# Rows of logits turned into scores at once: bounds the float64 copy (rows x vocab).
_SCORE_ROWS = 1024


@dataclass
class LoadedRun:
    """A model rebuilt from a run folder, in eval mode on the CPU."""

    model: nn.Module
    config: dict[str, Any]
    model_type: str
    weights: Path
    step: int | None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CorpusError(f"{path}: not found") from None
    except (OSError, ValueError) as err:
        raise CorpusError(f"{path}: not readable JSON: {err}") from None


def build_model(config: dict[str, Any]) -> tuple[nn.Module, str]:
    """A freshly initialised model for a run's config.json (`model_type` gpt or lstm)."""
    model_type = str(config.get("model_type", "gpt"))
    table = config.get("model")
    if not isinstance(table, dict):
        raise CorpusError("config.json has no [model] table")
    if model_type == "gpt":
        return GPT(GPTConfig.from_dict(table)), model_type
    if model_type == "lstm":
        return LSTMLanguageModel(LSTMConfig.from_dict(table)), model_type
    raise CorpusError(f"config.json: unknown model_type {model_type!r} (gpt or lstm)")


def load_run_model(run: str | Path, checkpoint: str = "best") -> LoadedRun:
    """The model of a run folder. `checkpoint`: "best" (lowest tuning loss; the latest
    when the run has no best/), "latest", or a checkpoint folder name (`step_0000500`)."""
    run = Path(run)
    if not (run / "config.json").is_file() and (run / "manifest.json").is_file():
        raise CorpusError(
            f"{run}: a corpus folder (from seqlm ingest), not a run; train one with "
            f"`seqlm train {run} --out RUN` and give RUN"
        )
    config = _read_json(run / "config.json")
    if checkpoint == "best" and not (run / BEST_DIR / WEIGHTS_FILE).is_file():
        checkpoint = "latest"
    if checkpoint == "best":
        folder = run / BEST_DIR
    elif checkpoint == "latest":
        folder = run
    else:
        folder = run / CHECKPOINTS_DIR / checkpoint
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise CorpusError(f"{weights}: no weights; has the run written a checkpoint yet?")
    model, model_type = build_model(config)
    state = load_weights(weights)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CorpusError(f"{weights}: weights do not fit config.json's model: {err}") from None
    step = None
    if (folder / STATE_FILE).is_file():
        step = _read_json(folder / STATE_FILE).get("step")
    model.eval()
    return LoadedRun(model=model, config=config, model_type=model_type, weights=weights, step=step)


def check_run_matches_corpus(config: dict[str, Any], corpus: Any) -> None:
    """A run can score a corpus only with the vocabulary it was trained on."""
    recorded = config.get("corpus", {})
    vocabulary = (corpus.manifest or {}).get("vocabulary") or {}
    if int(config.get("model", {}).get("vocab_size", -1)) != corpus.vocab_size:
        raise CorpusError(
            f"{corpus.path}: vocabulary of {corpus.vocab_size} tokens, but the run's model "
            f"has {config.get('model', {}).get('vocab_size')}"
        )
    want, have = recorded.get("vocabulary_hash"), vocabulary.get("hash")
    if want and have and want != have:
        raise CorpusError(
            f"{corpus.path}: not the vocabulary the run was trained with "
            f"(hash {have[:12]}..., the run recorded {want[:12]}...)"
        )


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError as err:
        raise ConfigError(f"unknown device {name!r}: {err}") from None


@dataclass(frozen=True)
class WindowPlan:
    """Windows over a list of sequences: window w feeds inputs [start, stop) of sequence
    `sequence[w]` and keeps the predictions of inputs [new_from, stop)."""

    sequence: np.ndarray
    start: np.ndarray
    stop: np.ndarray
    new_from: np.ndarray


def plan_windows(lengths: Sequence[int], context: int, stride: int) -> WindowPlan:
    """Sliding windows (see the module docstring) for sequences of these lengths."""
    if context < 1 or not 1 <= stride <= context:
        raise ConfigError(f"need 1 <= stride <= context, got stride {stride}, context {context}")
    sequence, start, stop, new_from = [], [], [], []
    for number, length in enumerate(lengths):
        inputs = int(length) - 1  # input i predicts target i + 1
        previous_end = 0
        end = min(context, inputs)
        while inputs > 0:
            sequence.append(number)
            start.append(max(0, end - context))
            stop.append(end)
            new_from.append(previous_end)
            if end == inputs:
                break
            previous_end, end = end, min(end + stride, inputs)
    as_array = lambda values: np.asarray(values, dtype=np.int64)  # noqa: E731
    return WindowPlan(as_array(sequence), as_array(start), as_array(stop), as_array(new_from))


def _model_context(model: nn.Module) -> int:
    size = getattr(getattr(model, "config", None), "block_size", None)
    if not isinstance(size, int):
        raise ConfigError(f"{type(model).__name__} has no config.block_size; pass context=")
    return size


def _scores_of_rows(logits: Tensor, true_ids: Tensor) -> tuple[Tensor, ...]:
    """log p(true), ids strictly more probable, other ids as probable, top-1 probability
    (float64, so ranks compare the very values the log-probabilities report)."""
    log_probs = torch.log_softmax(logits.double(), dim=-1)
    true = log_probs.gather(1, true_ids[:, None])
    n_greater = (log_probs > true).sum(dim=1)
    n_tied = (log_probs == true).sum(dim=1) - 1
    return true[:, 0], n_greater, n_tied, log_probs.max(dim=1).values.exp()


@dataclass
class ModelScorer:
    """Scores sequences with a model whose forward gives `.logits` (B, T, V).

    `context` defaults to the model's block size and `stride` to half of it;
    `batch_tokens` bounds the padded input tokens per forward; `temperature` divides the
    logits (1 = the model as trained; `seqlm lesion` fits one on the tuning split).
    """

    model: nn.Module
    name: str = "model"
    context: int | None = None
    stride: int | None = None
    batch_tokens: int = 8192
    device: str = "auto"
    temperature: float = 1.0  # logits are divided by it (fitted on a tuning split)

    def __post_init__(self) -> None:
        if not (self.temperature > 0 and np.isfinite(self.temperature)):
            raise ConfigError(f"temperature must be a positive number, got {self.temperature}")
        block = _model_context(self.model)
        self.context = block if self.context is None else self.context
        if not 1 <= self.context <= block:
            raise ConfigError(f"context must be in 1..{block} (the block size), got {self.context}")
        self.stride = max(1, self.context // 2) if self.stride is None else self.stride
        if not 1 <= self.stride <= self.context:
            raise ConfigError(f"stride must be in 1..context ({self.context}), got {self.stride}")
        if self.batch_tokens < self.context:
            raise ConfigError(f"batch_tokens must be at least the context ({self.context})")

    def describe(self) -> dict[str, Any]:
        """The windowing (and a temperature other than 1), for eval.json."""
        scaled = {} if self.temperature == 1.0 else {"temperature": self.temperature}
        return {
            **scaled,
            "context": self.context,
            "stride": self.stride,
            "min_context_after_first_window": self.context - self.stride + 1,
            "rule": (
                "sliding windows of `context` input tokens whose ends advance by `stride`; "
                "each target is predicted once, by the first window reaching it, so every "
                "target past the first window has at least context - stride + 1 tokens of "
                "context"
            ),
        }

    @torch.no_grad()
    def score(
        self, sequences: Sequence[np.ndarray], progress: Progress | None = None
    ) -> TokenScores:
        targets = prediction_targets(sequences, int(self.model.config.vocab_size))
        n = len(targets)
        log_prob = np.full(n, np.nan)
        n_greater = np.zeros(n, dtype=np.int64)
        n_tied = np.zeros(n, dtype=np.int64)
        max_prob = np.zeros(n)
        covered = np.zeros(n, dtype=np.int64)
        for target_rows, logits in self._predictions(sequences, targets, progress):
            true_ids = torch.as_tensor(targets.token[target_rows], device=logits.device)
            for low in range(0, target_rows.size, _SCORE_ROWS):
                part = slice(low, low + _SCORE_ROWS)
                values = _scores_of_rows(logits[part], true_ids[part])
                at = target_rows[part]
                log_prob[at], n_greater[at], n_tied[at], max_prob[at] = (
                    v.cpu().numpy() for v in values
                )
                covered[at] += 1
        if n and not (covered == 1).all():  # a planning bug, never the user's input
            raise AssertionError("sliding windows did not predict every target exactly once")
        return TokenScores.of_targets(targets, log_prob, n_greater, n_tied, max_prob)

    @torch.no_grad()
    def target_logits(
        self,
        sequences: Sequence[np.ndarray],
        context_only_ids: Sequence[int] | np.ndarray = (),
        max_rows: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The logits (float32, at temperature 1) and true id of every target whose id is
        not in `context_only_ids`, in target order: what a temperature is fitted on. With
        `max_rows`, at most that many evenly spaced targets (bounds the rows x vocab copy)."""
        vocab_size = int(self.model.config.vocab_size)
        targets = prediction_targets(sequences, vocab_size)
        chosen = np.flatnonzero(~np.isin(targets.token, np.asarray(context_only_ids, np.int64)))
        if max_rows is not None and chosen.size > max_rows:
            chosen = chosen[np.linspace(0, chosen.size - 1, max(max_rows, 1)).astype(np.int64)]
        slot = np.full(len(targets), -1, dtype=np.int64)
        slot[chosen] = np.arange(chosen.size)
        rows = np.zeros((chosen.size, vocab_size), dtype=np.float32)
        temperature, self.temperature = self.temperature, 1.0
        try:
            for target_rows, logits in self._predictions(sequences, targets, None):
                into = slot[target_rows]
                wanted = into >= 0
                picked = torch.as_tensor(wanted, device=logits.device)
                rows[into[wanted]] = logits[picked].cpu().numpy()
        finally:
            self.temperature = temperature
        return rows, targets.token[chosen]

    @torch.no_grad()
    def probability_rows(
        self, sequences: Sequence[np.ndarray], progress: Progress | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(target rows, ascending; their next-token probabilities, float64) batch by
        batch in target order: what `sequence_history` mixes a sequence's history into."""
        targets = prediction_targets(sequences, int(self.model.config.vocab_size))
        for target_rows, logits in self._predictions(sequences, targets, progress, ordered=True):
            for low in range(0, target_rows.size, _SCORE_ROWS):
                part = slice(low, low + _SCORE_ROWS)
                rows = torch.softmax(logits[part].double(), dim=-1).cpu().numpy()
                yield target_rows[part], rows

    def _predictions(
        self,
        sequences: Sequence[np.ndarray],
        targets: PredictionTargets,
        progress: Progress | None,
        ordered: bool = False,
    ) -> Iterator[tuple[np.ndarray, Tensor]]:
        """(target rows, their logits divided by the temperature) batch by batch, every
        target once, through the sliding windows of the module docstring; longest
        windows first, or with `ordered` in target order."""
        lengths = [int(np.asarray(s).shape[0]) for s in sequences]
        plan = plan_windows(lengths, self.context, self.stride)
        seq_start = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        # Target index of (sequence s, input i): targets are listed in sequence order, one
        # per position >= 1, so sequence s's targets begin at seq_start[s] - s.
        first_target = seq_start - np.arange(len(lengths))
        device = resolve_device(self.device)
        was_training = self.model.training
        self.model.to(device).eval()
        progress = ensure_progress(progress)
        progress.start(f"scoring with {self.name} (windows)", total=len(plan.sequence))
        order = np.argsort(-(plan.stop - plan.start), kind="stable")
        if ordered:  # windows are planned sequence by sequence, position by position
            order = np.arange(plan.sequence.size)
        flat = targets.flat_tokens
        try:
            for batch in self._batches(order, plan):
                width = int((plan.stop[batch] - plan.start[batch]).max())
                idx = np.full((batch.size, width), PAD_ID, dtype=np.int64)
                rows, cols, where = [], [], []
                for row, w in enumerate(batch):
                    begin = seq_start[plan.sequence[w]] + plan.start[w]
                    size = plan.stop[w] - plan.start[w]
                    idx[row, :size] = flat[begin : begin + size]
                    new = np.arange(plan.new_from[w], plan.stop[w])
                    rows.append(np.full(new.size, row))
                    cols.append(new - plan.start[w])
                    where.append(first_target[plan.sequence[w]] + new)
                rows_t = torch.as_tensor(np.concatenate(rows), device=device)
                cols_t = torch.as_tensor(np.concatenate(cols), device=device)
                logits = self._logits_at(torch.as_tensor(idx, device=device), rows_t, cols_t)
                if self.temperature != 1.0:
                    logits = logits / self.temperature
                yield np.concatenate(where), logits
                progress.advance(batch.size)
        finally:
            self.model.train(was_training)
            progress.finish()

    def _batches(self, order: np.ndarray, plan: WindowPlan):
        """Windows (longest first) grouped so that padded tokens stay within budget."""
        sizes = plan.stop - plan.start
        batch: list[int] = []
        for w in order:
            width = int(sizes[batch[0]]) if batch else int(sizes[w])
            if batch and (len(batch) + 1) * width > self.batch_tokens:
                yield np.asarray(batch)
                batch = []
            batch.append(int(w))
        if batch:
            yield np.asarray(batch)

    def _logits_at(self, idx: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
        """Logits (N, V) at the given (row, column) positions. Models with
        `hidden_states` + `lm_head` (the GPT, the LSTM) apply the head to those positions
        only, never holding (B, T, V)."""
        model = self.model
        if hasattr(model, "hidden_states") and hasattr(model, "lm_head"):
            hidden = model.hidden_states(idx)
            head = getattr(model, "head_logits", model.lm_head)  # GPT: part-shared rows too
            return head(hidden[rows, cols]).float()
        return model(idx).logits[rows, cols].float()


def scorer_from_run(
    run: str | Path,
    *,
    name: str = "model",
    checkpoint: str = "best",
    context: int | None = None,
    stride: int | None = None,
    device: str = "auto",
) -> tuple[ModelScorer, LoadedRun]:
    """A `ModelScorer` for a run folder's model, and what was loaded."""
    loaded = load_run_model(run, checkpoint)
    # One window must fit a forward: long-context runs (block 16,384) get a bigger batch.
    window = context or _model_context(loaded.model)
    batch_tokens = max(ModelScorer.batch_tokens, window)
    scorer = ModelScorer(
        loaded.model,
        name=name,
        context=context,
        stride=stride,
        batch_tokens=batch_tokens,
        device=device,
    )
    return scorer, loaded
