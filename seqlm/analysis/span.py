"""How much context a trained GPT uses: span and truncation sweeps, effective context length.

Two ways to give a model only w tokens of context, which are not the same thing:

- **span w** (`attention_span=w` at evaluation): every layer's queries see their own
  position and the w - 1 keys before it, but the sequence is fed whole, so stacked
  layers can relay information from about n_layer x (w - 1) tokens back;
- **truncation to w**: each target is predicted from its last w tokens only (the window
  starts there, with positions restarting at 0 and no `[BOS]`), so nothing further back
  can reach it. Targets whose whole prefix fits in w tokens are unchanged.

*Full context* is the model as trained (its own config spans): each sequence is fed from
its `[BOS]`; a sequence longer than the model's block size C is read by windows of C
inputs whose ends advance by `stride` (each target predicted once, by the first window
reaching it, so it sees at least C - stride + 1 tokens).

**Statistically effective context length** (after Morita et al. 2021): for truncation
length w, the per-token loss increase d_t = loss_w(t) - loss_full(t) (nats) is averaged
over tokens; the sequences are resampled with replacement (`bootstrap` resamples, fixed
`seed`), each resample giving the perplexity gain exp(mean d_t) - 1. The effective context
length is the smallest w of the sweep whose 5th percentile of that gain is below 1%
(`threshold`): the shortest context for which a perplexity gain of at least 1% cannot be
claimed with 95% confidence. None when no w of the sweep qualifies. It is computed per
group (e.g. per bird) with resamples drawn within the group, and over all sequences.

The batch machinery (`context_batches`, `batch_log_probs`) is shared with head analysis.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch
from numpy.lib.stride_tricks import sliding_window_view
from torch import Tensor, nn

from seqlm.analysis.figures import add_caution
from seqlm.analysis.head_gates import gated_heads
from seqlm.errors import ConfigError
from seqlm.evaluation.scores import PredictionTargets, prediction_targets
from seqlm.progress import Progress, ensure_progress
from seqlm.vocabularies.scheme import PAD_ID

SPAN, TRUNCATION = "span", "truncation"
MODES: tuple[str, ...] = (SPAN, TRUNCATION)
ALL_GROUPS = "all"


@dataclass(frozen=True)
class WindowBatch:
    """Rows of input ids and the (row, column) positions whose next-token predictions
    are kept; `target` indexes each kept prediction into the `PredictionTargets`."""

    inputs: Tensor  # (B, W) int64, right-padded with [PAD]
    rows: Tensor  # (N,) int64
    cols: Tensor  # (N,) int64
    true_ids: Tensor  # (N,) int64
    target: np.ndarray  # (N,) int64


# A window of the full-context reading: (sequence start in the flat tokens, first input,
# stop input, first input whose prediction is kept, target index of the sequence's input 0).
Window = tuple[int, int, int, int, int]


def _sequence_windows(targets: PredictionTargets, context: int, stride: int) -> list[Window]:
    """The windows of the full-context reading (see the module docstring)."""
    windows = []
    # Targets come in sequence order, so each sequence's are one run: its first target
    # gives where it starts, its last one where it ends.
    _, first, count = np.unique(targets.sequence, return_index=True, return_counts=True)
    begins = targets.sequence_start[first].tolist()
    ends = (targets.flat_index[first + count - 1] + 1).tolist()
    for begin, end, first_target in zip(begins, ends, first.tolist(), strict=True):
        inputs = end - begin - 1
        stop, new_from = min(context, inputs), 0
        while inputs > 0:
            windows.append((begin, max(0, stop - context), stop, new_from, first_target))
            if stop == inputs:
                break
            new_from, stop = stop, min(stop + stride, inputs)
    return windows


def context_batches(
    targets: PredictionTargets,
    *,
    context: int,
    truncation: int | None = None,
    stride: int | None = None,
    batch_tokens: int = 16384,
    device: torch.device | str = "cpu",
) -> Iterator[WindowBatch]:
    """Batches that predict every target once: from its full context (`truncation`
    None) or from exactly its last `truncation` tokens (targets whose prefix is that
    short are skipped: their full-context prediction is the truncated one)."""
    if truncation is not None and not 1 <= truncation <= context:
        raise ConfigError(f"truncation must be in 1..{context} (the context), got {truncation}")
    stride = max(1, context // 2) if stride is None else stride
    if not 1 <= stride <= context:
        raise ConfigError(f"stride must be in 1..{context}, got {stride}")
    flat = targets.flat_tokens
    if truncation is not None:
        chosen = np.flatnonzero(targets.position > truncation)
        if chosen.size == 0:  # every prefix is shorter than w (and flat may be too)
            return
        per_batch = max(1, batch_tokens // truncation)
        windows = sliding_window_view(flat, truncation)
        for low in range(0, chosen.size, per_batch):
            picked = chosen[low : low + per_batch]
            inputs = windows[targets.flat_index[picked] - truncation]
            n = picked.size
            yield WindowBatch(
                inputs=torch.as_tensor(np.ascontiguousarray(inputs), device=device),
                rows=torch.arange(n, device=device),
                cols=torch.full((n,), truncation - 1, device=device),
                true_ids=torch.as_tensor(targets.token[picked], device=device),
                target=picked,
            )
        return
    windows = _sequence_windows(targets, context, stride)
    order = sorted(range(len(windows)), key=lambda w: windows[w][1] - windows[w][2])
    batch: list[Window] = []
    for position, w in enumerate(order):
        batch.append(windows[w])
        width = batch[0][2] - batch[0][1]
        last = position == len(order) - 1
        if last or (len(batch) + 1) * width > batch_tokens:
            yield _pack_windows(batch, width, flat, targets, device)
            batch = []


def _pack_windows(
    batch: list[Window],
    width: int,
    flat: np.ndarray,
    targets: PredictionTargets,
    device: torch.device | str,
) -> WindowBatch:
    inputs = np.full((len(batch), width), PAD_ID, dtype=np.int64)
    rows, cols, picked = [], [], []
    for row, (begin, start, stop, new_from, first_target) in enumerate(batch):
        inputs[row, : stop - start] = flat[begin + start : begin + stop]
        new = np.arange(new_from, stop)
        rows.append(np.full(new.size, row))
        cols.append(new - start)
        picked.append(first_target + new)  # input i predicts the sequence's target i
    target = np.concatenate(picked)
    return WindowBatch(
        inputs=torch.as_tensor(inputs, device=device),
        rows=torch.as_tensor(np.concatenate(rows), device=device),
        cols=torch.as_tensor(np.concatenate(cols), device=device),
        true_ids=torch.as_tensor(targets.token[target], device=device),
        target=target,
    )


def batch_log_probs(
    model: nn.Module,
    batch: WindowBatch,
    *,
    attention_span: object = "config",
    head_gates: Tensor | None = None,
) -> Tensor:
    """log p(true id) at the batch's kept positions (N,), differentiable (the caller
    chooses `torch.no_grad()` or not). The LM head runs on those positions only;
    `head_gates` attach as hooks (`seqlm.analysis.head_gates`) for this call."""
    with gated_heads(model, head_gates):
        hidden = model.hidden_states(batch.inputs, attention_span=attention_span)
    logits = model.lm_head(hidden[batch.rows, batch.cols]).float()
    return torch.log_softmax(logits, dim=-1).gather(1, batch.true_ids[:, None])[:, 0]


@torch.no_grad()
def target_log_probs(
    model: nn.Module,
    targets: PredictionTargets,
    *,
    attention_span: object = "config",
    truncation: int | None = None,
    full: np.ndarray | None = None,
    stride: int | None = None,
    batch_tokens: int = 16384,
    progress: Progress | None = None,
) -> np.ndarray:
    """log p(true id) of every target, with full context (optionally a span) or truncated.

    With `truncation`, targets whose prefix is at most that long take their value from
    `full` (the full-context log-probabilities, computed here when not given).
    """
    was_training = model.training
    model.eval()
    try:
        if truncation is not None and full is None:
            full = target_log_probs(model, targets, stride=stride, batch_tokens=batch_tokens)
        out = np.full(len(targets), np.nan) if truncation is None else np.array(full, float)
        batches = context_batches(
            targets,
            context=int(model.config.block_size),
            truncation=truncation,
            stride=stride,
            batch_tokens=batch_tokens,
            device=next(model.parameters()).device,
        )
        for batch in batches:
            values = batch_log_probs(model, batch, attention_span=attention_span)
            out[batch.target] = values.double().cpu().numpy()
            if progress is not None:
                progress.advance(batch.target.size)
    finally:
        model.train(was_training)
    return out


# ----- bootstrap and the effective context length -----


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
) -> SpanSweep:
    """Evaluate with full context, then each span and truncation of the sweep, and derive
    the per-group tables and effective context lengths (see the module docstring)."""
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


# ----- figures -----


def _pyplot():
    from seqlm.plotting import plain_matplotlib

    plain_matplotlib()
    import matplotlib.pyplot as plt

    return plt


FIGURE_DPI = 300  # print resolution, like the maps and the statistics figures


def _save(figure, out: Path, dpi: int) -> None:
    """The PNG at `out` and a vector copy beside it for papers."""
    figure.savefig(out, dpi=dpi, bbox_inches="tight")
    if out.suffix.lower() == ".png":
        figure.savefig(out.with_suffix(".svg"), bbox_inches="tight")


def _window_axis(axes, windows: Sequence[int]) -> None:
    axes.set_xscale("log", base=2)
    axes.set_xticks(list(windows))
    axes.set_xticklabels([str(w) for w in windows])
    axes.minorticks_off()


def plot_loss_vs_window(
    sweep: SpanSweep,
    out: str | Path,
    group: str = ALL_GROUPS,
    *,
    dpi: int = FIGURE_DPI,
    caution: str = "",
) -> Path:
    """Loss against window w for span masks and truncation, with the full-context line
    and the effective context length marked (PNG at `dpi`, and an SVG beside it);
    `caution` (a trust warning) is written in red above it."""
    plt = _pyplot()
    part = sweep.table.filter(pl.col("group") == group)
    if part.height == 0:
        raise ConfigError(f"no sweep results for group {group!r}")
    out = Path(out)
    figure, axes = plt.subplots(figsize=(7.5, 4.5), dpi=130)
    try:
        styles = {
            SPAN: ("o-", "span mask (whole sequence fed)"),
            TRUNCATION: ("s-", "truncation (only the last w tokens fed)"),
        }
        for mode in sweep.config.modes:
            rows = part.filter(pl.col("mode") == mode).sort("window")
            marker, label = styles[mode]
            axes.plot(rows["window"], rows["loss"], marker, label=label, linewidth=1.5)
        full_loss = float(part["full_loss"][0])
        axes.axhline(full_loss, color="black", linestyle="--", linewidth=1.0)
        windows = sorted(set(part["window"].to_list()))
        axes.annotate(
            f"full context {full_loss:.3f}",
            (windows[0], full_loss),
            textcoords="offset points",
            xytext=(0, 6),
            fontsize=9,
        )
        effective = sweep.effective.get(group)
        if effective is not None and TRUNCATION in sweep.config.modes:
            axes.axvline(effective, color="tab:green", linestyle=":", linewidth=1.2)
            axes.annotate(
                f"effective context {effective} ",
                (effective, (full_loss + axes.get_ylim()[1]) / 2),
                textcoords="offset points",
                xytext=(-4, 0),
                ha="right",
                fontsize=9,
                color="tab:green",
            )
        _window_axis(axes, windows)
        axes.set_xlabel("window w (tokens)")
        axes.set_ylabel("loss (nats per token)")
        tokens, sequences = int(part["tokens"][0]), int(part["sequences"][0])
        title = "all sequences" if group == ALL_GROUPS else group
        axes.set_title(
            f"Loss vs context window: {title} ({tokens:,} tokens, {sequences:,} sequences, "
            f"{sweep.n_layer} layers)",
            fontsize=10,
        )
        axes.grid(alpha=0.3)
        axes.legend(fontsize=9)
        figure.tight_layout()
        add_caution(figure, caution)
        _save(figure, out, dpi)
    finally:
        plt.close(figure)
    return out


# Perplexity-gain ticks (%) on the symmetric-log axis: plain numbers, not powers of ten.
_GAIN_TICKS = [-100, -10, -1, 0, 1, 10, 100, 1000, 10000]


def plot_effective_context(
    sweep: SpanSweep, out: str | Path, *, dpi: int = FIGURE_DPI, caution: str = ""
) -> Path:
    """One panel per group: perplexity gain of truncation to w over full context (%),
    its bootstrap band, the threshold, and the effective context length (PNG at `dpi`,
    and an SVG beside it); `caution` (a trust warning) is written in red above it."""
    plt = _pyplot()
    from matplotlib.ticker import FixedLocator, FuncFormatter

    part = sweep.table.filter(pl.col("mode") == TRUNCATION)
    if part.height == 0:
        raise ConfigError("the sweep has no truncation results")
    groups = sorted(set(part["group"].to_list()) - {ALL_GROUPS}) or [ALL_GROUPS]
    if len(groups) > 1:
        groups = [ALL_GROUPS, *groups]
    columns = min(4, len(groups))
    n_rows = -(-len(groups) // columns)
    out = Path(out)
    figure, grid = plt.subplots(
        n_rows,
        columns,
        figsize=(3.4 * columns, 2.9 * n_rows),
        dpi=130,
        sharex=True,
        sharey=True,
        squeeze=False,
    )
    threshold = 100 * sweep.config.threshold
    try:
        for axes, group in zip(grid.flat, groups, strict=False):
            rows = part.filter(pl.col("group") == group).sort("window")
            windows = rows["window"].to_numpy()
            axes.fill_between(
                windows,
                100 * rows["gain_low"].to_numpy(),
                100 * rows["gain_high"].to_numpy(),
                alpha=0.25,
                label=f"{sweep.config.percentile:g}-{100 - sweep.config.percentile:g}th pct",
            )
            axes.plot(windows, 100 * rows["perplexity_gain"].to_numpy(), "o-", markersize=3)
            axes.axhline(threshold, color="tab:red", linestyle="--", linewidth=1.0)
            effective = sweep.effective.get(group)
            if effective is not None:
                axes.axvline(effective, color="tab:green", linestyle=":", linewidth=1.2)
            axes.set_yscale("symlog", linthresh=threshold)
            axes.yaxis.set_major_locator(FixedLocator(_GAIN_TICKS))
            axes.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}%"))
            _window_axis(axes, windows.tolist())
            axes.tick_params(labelsize=8)
            label = "none in sweep" if effective is None else str(effective)
            axes.set_title(f"{group}: effective {label}", fontsize=9)
            axes.grid(alpha=0.3)
        for axes in grid.flat[len(groups) :]:
            axes.set_visible(False)
        for axes in grid[:, 0]:
            axes.set_ylabel("perplexity gain (%)", fontsize=9)
        for axes in grid[-1, :]:
            axes.set_xlabel("truncation w (tokens)", fontsize=9)
        figure.suptitle(
            f"Cost of truncating the context (band: bootstrap {sweep.config.percentile:g}th to "
            f"{100 - sweep.config.percentile:g}th percentile; red: {threshold:g}% threshold; "
            "green: effective context length)",
            fontsize=10,
        )
        figure.tight_layout()
        add_caution(figure, caution)
        _save(figure, out, dpi)
    finally:
        plt.close(figure)
    return out
