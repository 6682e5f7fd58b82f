"""Which attention heads a trained GPT needs: gate-gradient importance, ablation, pruning.

Every head's output is multiplied by a gate g (`seqlm.analysis.head_gates`, hooks on the
model; all ones by default, so the model is unchanged). Following Michel et al. (2019, "Are Sixteen Heads
Really Better than One?"):

- **importance** of head h: I_h = mean over windows x of |dL(x)/dg_h| at g = 1, where
  L(x) is the mean next-token loss of one window (one sequence when it fits in the
  block size). Per-window gradients come from one backward per batch by giving each row
  its own gate set. `importance` is I normalised per layer (divided by the layer's L2
  norm, as in the paper); `importance_raw` keeps I.
- **ablation**: the loss (mean over all predicted tokens) with that one head's gate set
  to 0, minus the loss of the intact model.
- **prune curve**: heads removed in order of increasing (normalised) importance, the
  loss after each step.

Conditioning tokens (`context_only_ids`) are read as context and never a target: no loss
above counts them (issue 13 item 3).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch
from torch import Tensor, nn

from seqlm.analysis.context_batches import WindowBatch, batch_log_probs, context_batches
from seqlm.analysis.figures import add_caution
from seqlm.errors import ConfigError
from seqlm.evaluation.scores import prediction_targets
from seqlm.plotting import plain_text, subplots
from seqlm.progress import Progress, ensure_progress


@dataclass(frozen=True)
class HeadAnalysisConfig:
    """`prune_points`: how many pruning levels to evaluate between none and all heads
    (None = every number of heads); `ablation=False` skips the single-head ablations."""

    batch_tokens: int = 16384
    stride: int | None = None
    ablation: bool = True
    prune_points: int | None = None

    def __post_init__(self) -> None:
        if self.batch_tokens < 1:
            raise ConfigError(f"batch_tokens must be positive, got {self.batch_tokens}")
        if self.prune_points is not None and self.prune_points < 2:
            raise ConfigError(f"prune_points must be at least 2, got {self.prune_points}")


@dataclass
class HeadAnalysis:
    """Arrays are (n_layer, n_head). `prune_curve` has columns heads_pruned,
    fraction_pruned, loss, loss_change; `prune_order` lists (layer, head) pruned first to
    last. `ablation_loss` is None when ablation was skipped. `tokens` counts the scored
    targets, `context_only` the conditioning targets left out."""

    base_loss: float
    importance_raw: np.ndarray
    importance: np.ndarray
    ablation_loss: np.ndarray | None
    prune_order: list[tuple[int, int]]
    prune_curve: pl.DataFrame
    tokens: int
    windows: int
    context_only: int = 0  # conditioning targets read as context, not counted in `tokens`

    def table(self) -> pl.DataFrame:
        """One row per head: layer, head, importance_raw, importance, importance_rank
        (1 = most important), ablation_loss, loss_change (ablated minus intact)."""
        n_layer, n_head = self.importance.shape
        layer, head = np.divmod(np.arange(n_layer * n_head), n_head)
        flat = self.importance.reshape(-1)
        rank = np.empty(flat.size, dtype=np.int64)
        rank[np.argsort(-flat, kind="stable")] = np.arange(1, flat.size + 1)
        columns = {
            "layer": layer,
            "head": head,
            "importance_raw": self.importance_raw.reshape(-1),
            "importance": flat,
            "importance_rank": rank,
        }
        if self.ablation_loss is not None:
            columns["ablation_loss"] = self.ablation_loss.reshape(-1)
            columns["loss_change"] = self.ablation_loss.reshape(-1) - self.base_loss
        return pl.DataFrame(columns)


def _shape(model: nn.Module) -> tuple[int, int]:
    return int(model.config.n_layer), int(model.config.n_head)


def mean_loss(
    model: nn.Module, batches: Sequence[WindowBatch], head_gates: Tensor | None = None
) -> float:
    """Mean next-token loss (nats) over every kept position of the batches."""
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in batches:
            total -= float(batch_log_probs(model, batch, head_gates=head_gates).double().sum())
            count += int(batch.target.size)
    if count == 0:
        raise ConfigError("no tokens to evaluate")
    return total / count


def gate_importance(
    model: nn.Module, batches: Sequence[WindowBatch], progress: Progress | None = None
) -> np.ndarray:
    """Michel et al.'s I_h: mean over windows of |d(window mean loss)/d gate_h|, (L, H)."""
    n_layer, n_head = _shape(model)
    device = next(model.parameters()).device
    total = torch.zeros(n_layer, n_head, dtype=torch.float64)
    windows = 0
    for batch in batches:
        rows = int(batch.inputs.shape[0])
        gates = torch.ones(rows, n_layer, n_head, device=device, requires_grad=True)
        log_probs = batch_log_probs(model, batch, head_gates=gates)
        # Each kept position weighs 1 / (its row's count): the sum over rows of each
        # row's mean loss, so row b's gradient is dL(window b)/dg[b].
        per_row = torch.bincount(batch.rows, minlength=rows).clamp(min=1).to(log_probs)
        loss = -(log_probs / per_row[batch.rows]).sum()
        (grad,) = torch.autograd.grad(loss, gates)
        has_targets = torch.bincount(batch.rows, minlength=rows) > 0
        total += grad[has_targets].abs().sum(dim=0).double().cpu()
        windows += int(has_targets.sum())
        if progress is not None:
            progress.advance()
    return (total / max(windows, 1)).numpy()


def normalise_per_layer(importance: np.ndarray) -> np.ndarray:
    """Each layer's scores divided by their L2 norm (a layer of zeros stays zero)."""
    norms = np.linalg.norm(importance, axis=1, keepdims=True)
    return np.divide(importance, norms, out=np.zeros_like(importance), where=norms > 0)


def _prune_levels(n_heads: int, points: int | None) -> list[int]:
    if points is None or points >= n_heads + 1:
        return list(range(n_heads + 1))
    return sorted({int(round(x)) for x in np.linspace(0, n_heads, points)})


def analyse_heads(
    model: nn.Module,
    sequences: Sequence[np.ndarray],
    config: HeadAnalysisConfig | None = None,
    progress: Progress | None = None,
    context_only_ids: Sequence[int] | np.ndarray = (),
) -> HeadAnalysis:
    """Importance, single-head ablation and the prune-by-importance curve on sequences
    (full context; see the module docstring). Targets whose true id is in
    `context_only_ids` (conditioning tokens) are never counted."""
    config = config or HeadAnalysisConfig()
    n_layer, n_head = _shape(model)
    targets = prediction_targets(sequences, int(model.config.vocab_size))
    scored = len(targets.without_tokens(context_only_ids))
    if len(targets) == 0:
        raise ConfigError("no tokens to evaluate: every sequence is only [BOS]")
    if scored == 0:
        raise ConfigError("no tokens to evaluate: every target is a conditioning token")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    progress = ensure_progress(progress)
    try:
        batches = list(
            context_batches(
                targets,
                context=int(model.config.block_size),
                stride=config.stride,
                batch_tokens=config.batch_tokens,
                device=device,
                context_only_ids=context_only_ids,
            )
        )
        levels = _prune_levels(n_layer * n_head, config.prune_points)
        ablations = n_layer * n_head if config.ablation else 0
        progress.start("head analysis", total=len(batches) + 1 + ablations + len(levels))
        progress.update(step="importance")
        raw = gate_importance(model, batches, progress)
        importance = normalise_per_layer(raw)
        base = mean_loss(model, batches)
        progress.advance()
        ablation = None
        if config.ablation:
            progress.update(step="ablation")
            ablation = np.zeros((n_layer, n_head))
            for layer in range(n_layer):
                for head in range(n_head):
                    gates = torch.ones(n_layer, n_head, device=device)
                    gates[layer, head] = 0.0
                    ablation[layer, head] = mean_loss(model, batches, gates)
                    progress.advance()
        progress.update(step="pruning")
        order = np.argsort(importance.reshape(-1), kind="stable")
        prune_order = [(int(i // n_head), int(i % n_head)) for i in order]
        curve = []
        for pruned in levels:
            gates = torch.ones(n_layer * n_head, device=device)
            gates[torch.as_tensor(order[:pruned], device=device)] = 0.0
            loss = base if pruned == 0 else mean_loss(model, batches, gates.view(n_layer, -1))
            curve.append((pruned, pruned / (n_layer * n_head), loss, loss - base))
            progress.advance()
    finally:
        progress.finish()
        model.train(was_training)
    return HeadAnalysis(
        base_loss=base,
        importance_raw=raw,
        importance=importance,
        ablation_loss=ablation,
        prune_order=prune_order,
        prune_curve=pl.DataFrame(
            curve, schema=["heads_pruned", "fraction_pruned", "loss", "loss_change"], orient="row"
        ),
        tokens=scored,
        context_only=len(targets) - scored,
        windows=sum(int(torch.unique(b.rows).numel()) for b in batches),
    )


# ----- figures -----


def _heatmap(
    axes,
    figure,
    values: np.ndarray,
    title: str,
    cmap: str,
    fmt: str,
    limits: tuple[float, float] | None = None,
) -> None:
    image = axes.imshow(values, cmap=cmap, aspect="auto")
    if limits is not None:
        image.set_clim(*limits)
    n_layer, n_head = values.shape
    axes.set_xticks(range(n_head))
    axes.set_yticks(range(n_layer))
    axes.set_xlabel("head")
    axes.set_ylabel("layer")
    axes.set_title(title, fontsize=10)
    if values.size <= 256:  # numbers stay legible up to a 16 x 16 grid
        for (layer, head), value in np.ndenumerate(values):
            red, green, blue, _ = image.cmap(image.norm(value))
            dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5
            axes.text(
                head,
                layer,
                format(value, fmt),
                ha="center",
                va="center",
                fontsize=8,
                color="white" if dark else "black",
            )
    figure.colorbar(image, ax=axes, shrink=0.85)


@plain_text
def plot_heads(analysis: HeadAnalysis, out: str | Path, *, caution: str = "") -> Path:
    """Importance and ablation heatmaps (layer x head) beside the prune curve; `caution`
    (a trust warning) is written in red above them."""
    out = Path(out)
    panels = 3 if analysis.ablation_loss is not None else 2
    figure, grid = subplots(1, panels, figsize=(4.6 * panels, 4.0), dpi=130)
    _heatmap(
        grid[0],
        figure,
        analysis.importance,
        "importance (normalised per layer)",
        "viridis",
        ".2f",
    )
    if analysis.ablation_loss is not None:
        change = analysis.ablation_loss - analysis.base_loss
        limit = float(np.abs(change).max()) or 1.0
        _heatmap(
            grid[1],
            figure,
            change,
            "loss change when the head is removed (nats)",
            "RdBu_r",
            "+.3f",
            (-limit, limit),
        )
    axes = grid[-1]
    curve = analysis.prune_curve
    axes.plot(100 * curve["fraction_pruned"], curve["loss"], "o-", markersize=3)
    axes.axhline(analysis.base_loss, color="black", linestyle="--", linewidth=1.0)
    axes.set_xlabel("heads removed, least important first (%)")
    axes.set_ylabel("loss (nats per token)")
    axes.set_title(f"pruning by importance (intact {analysis.base_loss:.3f})", fontsize=10)
    axes.grid(alpha=0.3)
    figure.suptitle(
        f"Attention heads: {analysis.tokens:,} tokens in {analysis.windows:,} windows",
        fontsize=11,
    )
    figure.tight_layout()
    add_caution(figure, caution)
    figure.savefig(out, bbox_inches="tight" if caution else None)
    return out
