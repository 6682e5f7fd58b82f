"""The context-length sweep: loss per span and truncation window, bootstrap of the
perplexity gain, and the statistically effective context length (see `seqlm.analysis.span`
for the method)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
from torch import nn

from seqlm.analysis.context_batches import target_log_probs
from seqlm.errors import ConfigError
from seqlm.evaluation.scores import PredictionTargets, prediction_targets
from seqlm.progress import Progress, ensure_progress

SPAN, TRUNCATION = "span", "truncation"
MODES: tuple[str, ...] = (SPAN, TRUNCATION)
ALL_GROUPS = "all"


def bootstrap_perplexity_gain(
    increase: np.ndarray,
    sequence: np.ndarray,
    *,
    resamples: int = 1000,
    seed: int = 0,
) -> np.ndarray:
    """exp(mean loss increase) - 1 for `resamples` resamples of the sequences (with
    replacement; the mean is over the tokens of the resampled sequences)."""
    if resamples < 1:
        raise ConfigError(f"bootstrap needs at least 1 resample, got {resamples}")
    _, owner = np.unique(sequence, return_inverse=True)
    n = int(owner.max()) + 1 if owner.size else 0
    if n == 0:
        raise ConfigError("no tokens to bootstrap")
    sums = np.bincount(owner, weights=increase, minlength=n)
    counts = np.bincount(owner, minlength=n).astype(np.float64)
    rng = np.random.default_rng(seed)
    # How often each sequence is drawn in each resample: a (resamples, n) count matrix,
    # so one matrix product gives every resample's token-weighted mean.
    draws = rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(np.float64)
    return np.expm1((draws @ sums) / (draws @ counts))


def effective_context_length(
    windows: Sequence[int], gain_p5: Sequence[float], threshold: float = 0.01
) -> int | None:
    """The smallest window whose 5th-percentile perplexity gain is below `threshold`."""
    qualifying = [int(w) for w, g in zip(windows, gain_p5, strict=True) if g < threshold]
    return min(qualifying) if qualifying else None


@dataclass(frozen=True)
class SpanSweepConfig:
    """Which windows and modes to sweep, and the bootstrap behind the effective length."""

    windows: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
    modes: tuple[str, ...] = MODES
    bootstrap: int = 1000
    seed: int = 0
    threshold: float = 0.01
    percentile: float = 5.0
    stride: int | None = None
    batch_tokens: int = 16384

    def __post_init__(self) -> None:
        if not self.windows or any(
            isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in self.windows
        ):
            raise ConfigError(f"windows must be positive integers, got {self.windows}")
        unknown = [m for m in self.modes if m not in MODES]
        if unknown or not self.modes:
            raise ConfigError(f"modes must be among {', '.join(MODES)}, got {self.modes}")
        if not 0 < self.percentile < 100 or self.threshold <= 0 or self.bootstrap < 1:
            raise ConfigError("need 0 < percentile < 100, threshold > 0 and bootstrap >= 1")
        if self.batch_tokens < 1:
            raise ConfigError(f"batch_tokens must be positive, got {self.batch_tokens}")


@dataclass
class SpanSweep:
    """Results of `span_sweep`.

    `full` and `log_probs[(mode, w)]` hold log p(true id) per target (aligned with
    `targets`); `table` has one row per (group, mode, window): tokens, sequences, loss,
    full_loss, loss_increase, perplexity_gain and its bootstrap percentiles `gain_low`
    (the `percentile`-th) and `gain_high` (100 - percentile), and `below_threshold`;
    `effective[group]` is the effective context length (truncation) per group and `all`.
    """

    config: SpanSweepConfig
    targets: PredictionTargets
    groups: np.ndarray  # str per target
    full: np.ndarray
    log_probs: dict[tuple[str, int], np.ndarray]
    table: pl.DataFrame
    effective: dict[str, int | None]
    n_layer: int
    block_size: int

    def definition(self) -> str:
        c = self.config
        return (
            f"effective context length: the smallest truncation length w of the sweep whose "
            f"{c.percentile:g}th-percentile perplexity gain over full context, "
            f"exp(mean per-token loss increase) - 1, is below {c.threshold:.2%}; "
            f"{c.bootstrap} bootstrap resamples of sequences within each group, seed {c.seed}"
        )


def span_sweep(
    model: nn.Module,
    sequences: Sequence[np.ndarray],
    groups: Sequence[str] | None = None,
    config: SpanSweepConfig | None = None,
    progress: Progress | None = None,
    context_only_ids: Sequence[int] = (),
) -> SpanSweep:
    """Evaluate with full context, then each span and truncation of the sweep, and derive
    the per-group tables and effective context lengths (see the module docstring).
    Targets whose true id is in `context_only_ids` (conditioning tokens) are not scored."""
    config = config or SpanSweepConfig()
    block_size = int(model.config.block_size)
    too_long = [w for w in config.windows if w > block_size]
    if too_long:
        raise ConfigError(f"windows {too_long} exceed the model's block size {block_size}")
    windows = sorted(set(config.windows))
    targets = prediction_targets(sequences, int(model.config.vocab_size))
    if len(targets) == 0:
        raise ConfigError("no tokens to evaluate: every sequence is only [BOS]")
    names = np.asarray(
        [ALL_GROUPS] * len(sequences) if groups is None else [str(g) for g in groups],
        dtype=object,
    )
    if names.shape[0] != len(sequences):
        raise ConfigError(f"{names.shape[0]} group labels for {len(sequences)} sequences")
    progress = ensure_progress(progress)
    passes = 1 + len(windows) * len(config.modes)
    progress.start("span sweep", total=passes)
    common = {"stride": config.stride, "batch_tokens": config.batch_tokens}
    try:
        full = target_log_probs(model, targets, **common)
        progress.advance()
        log_probs: dict[tuple[str, int], np.ndarray] = {}
        for mode in config.modes:
            for w in windows:
                progress.update(mode=mode, window=w)
                if mode == SPAN:
                    log_probs[(mode, w)] = target_log_probs(
                        model, targets, attention_span=w, **common
                    )
                else:
                    log_probs[(mode, w)] = target_log_probs(
                        model, targets, truncation=w, full=full, **common
                    )
                progress.advance()
    finally:
        progress.finish()
    # Scored with every target (the window batches follow each sequence target by
    # target), then the conditioning targets are dropped from every figure.
    keep = ~np.isin(targets.token, np.asarray(context_only_ids, dtype=np.int64))
    targets, full = targets.without_tokens(context_only_ids), full[keep]
    log_probs = {key: values[keep] for key, values in log_probs.items()}
    if len(targets) == 0:
        raise ConfigError("no tokens to evaluate: every target is a conditioning token")
    target_groups = names[targets.sequence]
    table = _sweep_table(targets, target_groups, full, log_probs, config)
    effective = {
        str(group): effective_context_length(
            part["window"].to_list(), part["gain_low"].to_list(), config.threshold
        )
        for (group,), part in table.filter(pl.col("mode") == TRUNCATION)
        .sort("window")
        .group_by("group", maintain_order=True)
    }
    return SpanSweep(
        config=config,
        targets=targets,
        groups=target_groups,
        full=full,
        log_probs=log_probs,
        table=table,
        effective=effective,
        n_layer=int(model.config.n_layer),
        block_size=block_size,
    )


def _sweep_table(
    targets: PredictionTargets,
    target_groups: np.ndarray,
    full: np.ndarray,
    log_probs: dict[tuple[str, int], np.ndarray],
    config: SpanSweepConfig,
) -> pl.DataFrame:
    selections = {ALL_GROUPS: np.ones(len(targets), dtype=bool)}
    distinct = sorted(set(target_groups.tolist()))
    if distinct != [ALL_GROUPS]:
        selections.update({g: target_groups == g for g in distinct})
    rows = []
    for group, chosen in selections.items():
        full_loss = float(-full[chosen].mean())
        for (mode, w), values in log_probs.items():
            increase = full[chosen] - values[chosen]
            gains = bootstrap_perplexity_gain(
                increase, targets.sequence[chosen], resamples=config.bootstrap, seed=config.seed
            )
            low, high = np.percentile(gains, [config.percentile, 100 - config.percentile])
            rows.append(
                {
                    "group": group,
                    "mode": mode,
                    "window": w,
                    "tokens": int(chosen.sum()),
                    "sequences": int(np.unique(targets.sequence[chosen]).size),
                    "loss": float(-values[chosen].mean()),
                    "full_loss": full_loss,
                    "loss_increase": float(increase.mean()),
                    "perplexity_gain": float(np.expm1(increase.mean())),
                    "gain_low": float(low),
                    "gain_high": float(high),
                    "below_threshold": bool(low < config.threshold),
                }
            )
    return pl.DataFrame(rows).sort("group", "mode", "window")
