"""Reading a finished (or running) run folder: summary, loss curves, trained model.

Evaluation and analysis read runs through these functions and never the trainer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from torch import nn

from seqlm.errors import CorpusError
from seqlm.plotting import plain_text, subplots
from seqlm.training.checkpoint import WEIGHTS_FILE, RunFolder, load_weights
from seqlm.training.metrics_log import read_metrics
from seqlm.training.session import gpt_from_dict


@dataclass
class RunSummary:
    """What `seqlm runs show` prints: settings, progress and the loss curves."""

    path: Path
    config: dict[str, Any]
    step: int | None
    tokens: int | None
    final: dict[str, Any] | None
    best: dict[str, Any] | None
    checkpoints: list[int]
    train_curve: list[tuple[int, float]] = field(default_factory=list)
    eval_curve: list[tuple[int, float]] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.final is not None


def summarize_run(path: str | Path) -> RunSummary:
    run = RunFolder(path)
    config = run.read_config()
    records = read_metrics(run.metrics_path)
    latest = run.latest_checkpoint()
    best = run.best_checkpoint()
    finals = [r for r in records if r.get("kind") == "final"]
    return RunSummary(
        path=run.path,
        config=config,
        step=latest.step if latest else None,
        tokens=latest.state.get("tokens") if latest else None,
        final=finals[-1] if finals else None,
        best=best.state if best else None,
        checkpoints=[int(p.name[5:]) for p in run.list_checkpoints()],
        train_curve=[
            (int(r["step"]), float(r["loss"]))
            for r in records
            if r.get("kind") == "train" and r.get("loss") is not None
        ],
        eval_curve=[
            (int(r["step"]), float(r["loss"]))
            for r in records
            if r.get("kind") == "eval" and r.get("loss") is not None
        ],
    )


@plain_text
def plot_loss_curves(summary: RunSummary, out: str | Path) -> Path:
    """A PNG of training and tuning loss against step."""
    out = Path(out)
    figure, axes = subplots(figsize=(7, 4), dpi=120)
    if summary.train_curve:
        steps, losses = zip(*summary.train_curve, strict=True)
        axes.plot(steps, losses, label="train", linewidth=1.2)
    if summary.eval_curve:
        steps, losses = zip(*summary.eval_curve, strict=True)
        axes.plot(steps, losses, "o-", label="tuning", linewidth=1.2, markersize=3)
    axes.set_xlabel("step")
    axes.set_ylabel("loss (nats per token)")
    axes.set_title(summary.path.name)
    axes.grid(alpha=0.3)
    if summary.train_curve or summary.eval_curve:
        axes.legend()
    figure.tight_layout()
    figure.savefig(out)
    return out


def load_trained_model(
    path: str | Path, which: Literal["latest", "best"] = "latest", device: str = "cpu"
) -> nn.Module:
    """The run's GPT with its latest (or best) weights, in eval mode."""

    run = RunFolder(path)
    config = run.read_config()
    if config.get("model_type", "gpt") != "gpt":
        raise CorpusError(f"{run.path}: model type {config.get('model_type')!r} is not a GPT")
    weights = (run.best_dir if which == "best" else run.path) / WEIGHTS_FILE
    model = gpt_from_dict(config["model"])
    state = load_weights(weights)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CorpusError(
            f"{weights}: weights do not match the model "
            f"(missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})"
        )
    return model.to(device).eval()
