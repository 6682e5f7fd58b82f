"""ROC, precision-recall and calibration figures: one PNG each, every method a line."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from sklearn.metrics import precision_recall_curve, roc_curve

from seqlm.plotting import plain_text, subplots
from seqlm.tasks.metrics import TaskMetrics, calibration_bins

FIGURES = {"roc": "roc.png", "pr": "pr.png", "calibration": "calibration.png"}


def _label(method: str, metrics: TaskMetrics, which: str) -> str:
    estimate = metrics.auroc if which == "auroc" else metrics.auprc
    return f"{method}: {which.upper()} {estimate.text(2)}"


def _draw(kind: str, axes, labels, predictions, metrics) -> None:  # noqa: ANN001
    for method, probs in predictions.items():
        if kind == "calibration":
            rows = calibration_bins(labels, probs)
            axes.plot(
                [r["mean_predicted"] for r in rows],
                [r["observed_rate"] for r in rows],
                "o-",
                label=method,
            )
            continue
        if len(np.unique(labels)) < 2:
            continue
        if kind == "roc":
            x, y, _ = roc_curve(labels, probs)
            axes.plot(x, y, label=_label(method, metrics[method], "auroc"))
        else:
            precision, recall, _ = precision_recall_curve(labels, probs)
            axes.plot(recall, precision, label=_label(method, metrics[method], "auprc"))


_AXES = {
    "roc": ("false positive rate", "true positive rate", [0, 1], [0, 1]),
    "pr": ("recall", "precision", None, None),
    "calibration": ("mean predicted probability", "observed positive rate", [0, 1], [0, 1]),
}


@plain_text
def write_figures(
    labels: np.ndarray,
    predictions: Mapping[str, np.ndarray],
    metrics: Mapping[str, TaskMetrics],
    out: Path,
    title: str,
) -> dict[str, Path]:
    """Write roc.png, pr.png, calibration.png into `out`; returns name -> path."""
    written = {}
    rate = float(np.mean(labels)) if len(labels) else 0.0
    for kind, name in FIGURES.items():
        figure, axes = subplots(figsize=(5.5, 5), dpi=150)
        _draw(kind, axes, labels, predictions, metrics)
        xlabel, ylabel, diag_x, diag_y = _AXES[kind]
        if diag_x is not None:
            axes.plot(diag_x, diag_y, ":", color="grey", linewidth=1)
        else:
            axes.axhline(rate, linestyle=":", color="grey", linewidth=1)
        axes.set_xlabel(xlabel)
        axes.set_ylabel(ylabel)
        axes.set_xlim(0, 1)
        axes.set_ylim(0, 1.02)
        axes.set_title(title, fontsize=9)
        if axes.get_legend_handles_labels()[0]:
            axes.legend(fontsize=7, loc="lower right" if kind == "roc" else "best")
        axes.grid(alpha=0.3)
        figure.tight_layout()
        figure.savefig(out / name)
        written[kind] = out / name
    return written
