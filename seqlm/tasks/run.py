"""`run_task`: labels + corpus + trained run -> predictions, metrics, figures, task.json.

Labels follow the corpus's subject split: train subjects' labels fit (logistic
regressions, the fine-tuned head), tuning subjects' labels choose (regularisation,
epoch), and only the report split (held_out by default) is predicted and scored. The
model itself was trained on the corpus's train split, so zero-shot is scored on the same
report rows.

OUT holds `task.json`, `predictions/<method>.parquet` (MEDS-DEV: `subject_id`,
`prediction_time`, `boolean_value`, `predicted_boolean_value`,
`predicted_boolean_probability`), `rejects.parquet`, `roc.png`, `pr.png`,
`calibration.png`, and `finetune/model.safetensors`.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

import seqlm
from seqlm.corpus.store import Corpus, load_corpus
from seqlm.errors import ConfigError
from seqlm.evaluation.model_scorer import check_run_matches_corpus, load_run_model
from seqlm.outputs import check_output, write_marker
from seqlm.progress import Progress
from seqlm.tasks.figures import FIGURES, write_figures
from seqlm.tasks.history import History, label_histories, time_resolution_s
from seqlm.tasks.labels import binary_targets, match_labels, read_labels, reject_counts
from seqlm.tasks.methods import (
    MethodOutput,
    SplitData,
    run_baseline,
    run_finetune,
    run_probe,
    run_zero_shot,
)
from seqlm.tasks.metrics import TaskMetrics, task_metrics
from seqlm.tasks.options import TaskOptions
from seqlm.training.distributed import resolve_device

# Train labels fit, tuning labels choose: only held-out labels can be reported unbiased.
REPORT_SPLIT = "held_out"
TASK_FILE = "task.json"
PREDICTIONS_DIR = "predictions"
REJECTS_FILE = "rejects.parquet"
TASK_NAMES = (TASK_FILE, PREDICTIONS_DIR, REJECTS_FILE, "finetune", *FIGURES.values())


@dataclass
class TaskResult:
    out: Path
    metrics: dict[str, TaskMetrics]
    predictions: dict[str, pl.DataFrame]
    record: dict[str, Any]


def predictions_frame(rows: pl.DataFrame, probabilities: np.ndarray) -> pl.DataFrame:
    """MEDS-DEV prediction columns for the report rows, in their order."""
    return pl.DataFrame(
        {
            "subject_id": rows["subject_id"],
            "prediction_time": rows["prediction_time"],
            "boolean_value": rows["label"].cast(pl.Boolean),
            "predicted_boolean_value": pl.Series(probabilities >= 0.5, dtype=pl.Boolean),
            "predicted_boolean_probability": pl.Series(probabilities, dtype=pl.Float64),
        }
    )


def _split_data(targets: pl.DataFrame, histories: list[History], report: str) -> SplitData:
    split = targets["split"].to_list()

    def pick(name: str) -> list[History]:
        return [h for h, s in zip(histories, split, strict=True) if s == name]

    def labels(name: str) -> np.ndarray:
        return targets.filter(pl.col("split") == name)["label"].to_numpy().astype(np.int64)

    return SplitData(
        train=pick("train"),
        train_labels=labels("train"),
        tuning=pick("tuning"),
        tuning_labels=labels("tuning"),
        report=pick(report),
    )


def _run_method(
    method: str, data: SplitData, model, corpus: Corpus, options: TaskOptions, out: Path, progress
) -> MethodOutput:  # noqa: ANN001
    if method == "baseline":
        return run_baseline(data, corpus.vocabulary, options)
    if method == "probe":
        return run_probe(data, model, options)
    if method == "finetune":
        return run_finetune(data, model, options, out / "finetune")
    return run_zero_shot(data, model, corpus.vocabulary, options, progress)


def _counts(targets: pl.DataFrame) -> dict[str, Any]:
    by_split = targets.group_by("split").agg(
        pl.len().alias("labels"),
        pl.col("subject_id").n_unique().alias("subjects"),
        pl.col("label").sum().alias("positive"),
    )
    return {
        row["split"]: {k: int(v) for k, v in row.items() if k != "split"}
        for row in by_split.sort("split").iter_rows(named=True)
    }


def run_task(
    run: str | Path,
    corpus_path: str | Path,
    labels_path: str | Path,
    out: str | Path,
    options: TaskOptions | None = None,
    *,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> TaskResult:
    """Predict a binary MEDS task with every method asked for; write OUT (see module)."""
    options = options or TaskOptions()
    out = Path(out)
    check_output(out, [run, corpus_path, labels_path], overwrite=overwrite, own_names=TASK_NAMES)
    corpus = load_corpus(corpus_path)
    loaded = load_run_model(run, options.checkpoint)
    check_run_matches_corpus(loaded.config, corpus)
    needs_states = {"probe", "finetune"} & set(options.methods)
    if needs_states and loaded.model_type != "gpt":
        raise ConfigError(
            f"{run}: a {loaded.model_type} run; {', '.join(sorted(needs_states))} read a GPT's "
            "hidden states (use --method zero-shot,baseline)"
        )
    model = loaded.model.to(resolve_device(options.device))
    labels = read_labels(labels_path)
    matched = match_labels(labels, corpus)
    targets = binary_targets(matched)
    histories = label_histories(corpus, targets)
    data = _split_data(targets, histories, REPORT_SPLIT)
    report_rows = targets.filter(pl.col("split") == REPORT_SPLIT)
    if report_rows.height == 0:
        raise ConfigError(f"no labels of {REPORT_SPLIT} subjects to report on")
    out.mkdir(parents=True, exist_ok=True)
    (out / PREDICTIONS_DIR).mkdir(exist_ok=True)
    matched.rejects.write_parquet(out / REJECTS_FILE)
    report_labels = report_rows["label"].to_numpy()
    subjects = report_rows["subject_id"].to_numpy()
    metrics, predictions, info = {}, {}, {}
    for method in options.methods:
        began = time.process_time(), time.perf_counter()
        output = _run_method(method, data, model, corpus, options, out, progress)
        output.info["cpu_s"] = round(time.process_time() - began[0], 2)
        output.info["wall_s"] = round(time.perf_counter() - began[1], 2)
        frame = predictions_frame(report_rows, output.probabilities)
        frame.write_parquet(out / PREDICTIONS_DIR / f"{method}.parquet")
        predictions[method], info[method] = frame, output.info
        metrics[method] = task_metrics(
            report_labels,
            output.probabilities,
            subjects,
            resamples=options.resamples,
            seed=options.seed,
        )
    probs = {m: f["predicted_boolean_probability"].to_numpy() for m, f in predictions.items()}
    title = f"{Path(labels_path).name}: {REPORT_SPLIT}, {len(report_labels)} labels"
    write_figures(report_labels, probs, metrics, out, title)
    record = {
        "seqlm_version": seqlm.__version__,
        "run": str(run),
        "corpus": str(corpus_path),
        "labels": [str(f) for f in labels.files],
        "value_column": labels.value_column,
        "rows_read": labels.rows_read,
        "labels_used": targets.height,
        "rejects": reject_counts(matched.rejects),
        "labels_by_split": _counts(targets),
        "report_split": REPORT_SPLIT,
        "history_rule": "tokens at or before prediction_time; [EOS] never; left-truncated "
        "to the model's context",
        "time_resolution_s": time_resolution_s(histories),
        "options": asdict(options),
        "methods": {m: {"metrics": metrics[m].to_dict(), **info[m]} for m in metrics},
    }
    (out / TASK_FILE).write_text(json.dumps(record, indent=2, default=str) + "\n")
    write_marker(out, "task")
    return TaskResult(out, metrics, predictions, record)
