"""Compare efficient-training methods against a fully decayed baseline under one budget.

Each method (and the baseline) trains the same model on the same corpus for the same
budget, measured in FLOPs or reference system time
(`seqlm.training.efficient.reference_time`), for several
seeds. The baseline's learning rate decays to zero exactly at the end of that budget,
the comparison that "No Train No Gain" (Kaddour et al. 2023) showed most gains vanish
against. Each run evaluates on the held-out split at regular steps (no model selection
and no early stopping on it, so the final loss is not tuned on it); the table reports
the final held-out loss (mean +- std over seeds), the budget used, wall-clock, and the
cost at which each method first reached the baseline's mean final loss.

Runs are ordinary run folders under `out/<method>/seed_<k>/`; a finished one is read
back rather than trained again, and an interrupted one resumes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seqlm.corpus import load_corpus
from seqlm.errors import ConfigError
from seqlm.plotting import plain_text, subplots
from seqlm.progress import Progress
from seqlm.training.callbacks import TrainCallback
from seqlm.training.config import RunSettings, TrainConfig
from seqlm.training.efficient.layer_drop import LayerDrop, LayerDropOptions, ProgressiveLayerDrop
from seqlm.training.efficient.reference_time import (
    CalibrationTable,
    CostMeter,
    CostModel,
    CostUnit,
)
from seqlm.training.efficient.selective_backprop import (
    SelectiveBackprop,
    SelectiveBackpropOptions,
)
from seqlm.training.efficient.stacking import LayerStacking, StackingOptions
from seqlm.training.session import build_gpt_config, train_on_corpus

METHODS = ("baseline", "pld", "stacking", "selective_backprop", "layerdrop")
RESULTS_FILE = "results.json"


@dataclass
class EfficiencyOptions:
    """What to compare and under which budget. `budget` is a number in `unit`, or
    `"<N>steps"`: the cost of N full-depth baseline steps of batch x context tokens."""

    methods: tuple[str, ...] = ("baseline", "pld", "stacking", "selective_backprop")
    seeds: int = 3
    budget: str = "300steps"
    unit: CostUnit = "flops"
    preset: str = "tiny"
    model: dict[str, Any] = field(
        default_factory=lambda: {"n_layer": 4, "n_head": 4, "n_embd": 64, "block_size": 64}
    )
    batch_size: int = 16
    lr: float = 3e-3
    warmup_steps: int = 20
    evaluations: int = 10
    eval_batches: int = 0
    cpu_threads: int = 1
    pld: LayerDropOptions = field(default_factory=LayerDropOptions)
    stacking: StackingOptions = field(default_factory=StackingOptions)
    selective_backprop: SelectiveBackpropOptions = field(default_factory=SelectiveBackpropOptions)

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ConfigError(f"unknown methods {unknown}; available: {', '.join(METHODS)}")
        if "baseline" not in self.methods:
            raise ConfigError("the comparison needs the baseline among its methods")
        if self.seeds < 1:
            raise ConfigError(f"seeds must be >= 1, got {self.seeds}")
        if self.evaluations < 1:
            raise ConfigError(f"evaluations must be >= 1, got {self.evaluations}")


@dataclass
class MethodRun:
    """One finished run: its held-out curve is (cost, elapsed_s, step, loss) points."""

    method: str
    seed: int
    steps: int
    cost_used: float
    elapsed_s: float
    final_loss: float
    curve: list[tuple[float, float, int, float]]

    def cost_to_reach(self, target: float) -> tuple[float, float] | None:
        """(cost, elapsed_s) of the first evaluation at or below `target`, or None."""
        for cost, elapsed, _, loss in self.curve:
            if loss <= target:
                return cost, elapsed
        return None


@dataclass
class MethodSummary:
    method: str
    runs: int
    loss_mean: float
    loss_std: float
    cost_mean: float
    elapsed_mean: float
    reached: int  # seeds that reached the baseline's mean final loss
    reach_cost_mean: float | None
    reach_elapsed_mean: float | None
    verdict: str


@dataclass
class Comparison:
    unit: str
    budget: float
    runs: list[MethodRun]
    summaries: list[MethodSummary]

    def to_dict(self) -> dict[str, Any]:
        return {
            "unit": self.unit,
            "budget": self.budget,
            "runs": [dataclasses.asdict(r) for r in self.runs],
            "summaries": [dataclasses.asdict(s) for s in self.summaries],
        }


def parse_budget(text: str, cost_model: CostModel, batch_size: int) -> float:
    """A budget string in the cost unit: a number, or `<N>steps` (N full-depth steps)."""
    match = re.fullmatch(r"\s*([0-9.eE+-]+)\s*(steps?)?\s*", str(text))
    try:
        value = float(match.group(1)) if match else math.nan
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"budget {text!r}: expected a positive number or '<N>steps'")
    if match is not None and match.group(2):
        config = cost_model.config
        tokens = batch_size * config.block_size
        return value * cost_model.cost("train", config.n_layer, tokens)
    return value


def method_callbacks(method: str, options: EfficiencyOptions) -> list[TrainCallback]:
    """The callbacks that implement a method (none for the baseline)."""
    factories: dict[str, Callable[[], list[TrainCallback]]] = {
        "baseline": list,
        "pld": lambda: [ProgressiveLayerDrop(options.pld)],
        "layerdrop": lambda: [LayerDrop(options.pld)],
        "stacking": lambda: [LayerStacking(options.stacking)],
        "selective_backprop": lambda: [SelectiveBackprop(options.selective_backprop)],
    }
    return factories[method]()


def run_settings(options: EfficiencyOptions, seed: int, eval_every: int) -> RunSettings:
    train = TrainConfig(
        max_steps=10**9,  # the cost budget ends training; this limit is never reached
        batch_size=options.batch_size,
        lr=options.lr,
        warmup_steps=options.warmup_steps,
        eval_every=eval_every,
        eval_batches=options.eval_batches,
        checkpoint_every=max(eval_every, 1) * 5,
        keep_last=1,
        log_every=max(1, eval_every),
        seed=seed,
        cpu_threads=options.cpu_threads,
        eval_split="held_out",
    )
    return RunSettings(preset=options.preset, model=dict(options.model), train=train)


def _finished(run_dir: Path) -> dict[str, Any] | None:
    state_path = run_dir / "state.json"
    metrics_path = run_dir / "metrics.jsonl"
    if not state_path.exists() or not metrics_path.exists():
        return None
    lines = metrics_path.read_text(encoding="utf-8").splitlines()
    if not lines or json.loads(lines[-1]).get("kind") != "final":
        return None
    return json.loads(state_path.read_text(encoding="utf-8"))


def train_method(
    corpus: str | Path,
    run_dir: Path,
    method: str,
    seed: int,
    options: EfficiencyOptions,
    cost_model: CostModel,
    budget: float,
    eval_every: int,
    progress: Progress | None = None,
) -> MethodRun:
    """Train (or resume, or read back) one method x seed run."""
    state = _finished(run_dir)
    if state is None:
        meter = CostMeter(cost_model, limit=budget)
        callbacks = [meter, *method_callbacks(method, options)]
        resume = (run_dir / "checkpoints").exists() and any((run_dir / "checkpoints").iterdir())
        settings = None if resume else run_settings(options, seed, eval_every)
        train_on_corpus(
            corpus, run_dir, settings, resume=resume, progress=progress, callbacks=callbacks
        )
        state = _finished(run_dir)
        assert state is not None
    cost_state = state.get("callbacks", {}).get("cost", {})
    curve = [(float(c), float(e), int(s), float(v)) for c, e, s, v in cost_state.get("curve", [])]
    if not curve:
        raise ConfigError(f"{run_dir}: the run has no held-out evaluations")
    return MethodRun(
        method=method,
        seed=seed,
        steps=int(state["step"]),
        cost_used=float(cost_state.get("used", 0.0)),
        elapsed_s=float(state["counters"]["elapsed_s"]),
        final_loss=curve[-1][3],
        curve=curve,
    )


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    return mean, statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(runs: Sequence[MethodRun], methods: Sequence[str]) -> list[MethodSummary]:
    """Per-method means; the verdict compares each method's final loss with the
    baseline's: 'better'/'worse' when the means differ by more than both standard
    deviations together (else 'no clear difference')."""
    by_method = {m: [r for r in runs if r.method == m] for m in methods}
    base_mean, base_std = _mean_std([r.final_loss for r in by_method["baseline"]])
    summaries = []
    for method in methods:
        group = by_method[method]
        mean, std = _mean_std([r.final_loss for r in group])
        reached = [r.cost_to_reach(base_mean) for r in group]
        reached = [x for x in reached if x is not None]
        if method == "baseline":
            verdict = "reference"
        elif abs(mean - base_mean) <= std + base_std:
            verdict = "no clear difference"
        else:
            verdict = "better" if mean < base_mean else "worse"
        summaries.append(
            MethodSummary(
                method=method,
                runs=len(group),
                loss_mean=mean,
                loss_std=std,
                cost_mean=statistics.fmean(r.cost_used for r in group),
                elapsed_mean=statistics.fmean(r.elapsed_s for r in group),
                reached=len(reached),
                reach_cost_mean=statistics.fmean(c for c, _ in reached) if reached else None,
                reach_elapsed_mean=statistics.fmean(e for _, e in reached) if reached else None,
                verdict=verdict,
            )
        )
    return summaries


def estimate_steps(cost_model: CostModel, budget: float, batch_size: int) -> int:
    config = cost_model.config
    step_cost = cost_model.cost("train", config.n_layer, batch_size * config.block_size)
    return max(1, int(budget / step_cost))


def compare_methods(
    corpus: str | Path,
    out: str | Path,
    options: EfficiencyOptions,
    *,
    calibration: CalibrationTable | None = None,
    progress: Progress | None = None,
) -> Comparison:
    """Train every method x seed under one budget and summarise; writes results.json."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    loaded = load_corpus(Path(corpus))
    if loaded.split("held_out").height == 0:
        raise ConfigError(f"{corpus}: the corpus has no held_out split to compare on")
    base = run_settings(options, 0, 1)
    config = build_gpt_config(base, loaded.vocab_size)
    cost_model = CostModel(options.unit, config, calibration)
    budget = parse_budget(options.budget, cost_model, options.batch_size)
    eval_every = max(
        1, estimate_steps(cost_model, budget, options.batch_size) // options.evaluations
    )
    runs = []
    for method in options.methods:
        for seed in range(options.seeds):
            run_dir = out / method / f"seed_{seed}"
            runs.append(
                train_method(
                    corpus, run_dir, method, seed, options, cost_model, budget, eval_every, progress
                )
            )
    comparison = Comparison(
        unit=options.unit, budget=budget, runs=runs, summaries=summarize(runs, options.methods)
    )
    (out / RESULTS_FILE).write_text(
        json.dumps(comparison.to_dict(), indent=2) + "\n", encoding="utf-8"
    )
    return comparison


def _format_cost(value: float, unit: str) -> str:
    return f"{value:.3g} FLOP" if unit == "flops" else f"{value:.1f} ref-s"


def comparison_rows(comparison: Comparison) -> list[dict[str, str]]:
    """The table as strings, one dict per method (the CLI renders it with rich)."""
    rows = []
    for s in comparison.summaries:
        reach = (
            f"{_format_cost(s.reach_cost_mean, comparison.unit)} / {s.reach_elapsed_mean:.0f}s "
            f"({s.reached}/{s.runs})"
            if s.reach_cost_mean is not None and s.reach_elapsed_mean is not None
            else f"not reached (0/{s.runs})"
        )
        rows.append(
            {
                "method": s.method,
                "held-out loss": f"{s.loss_mean:.4f} +- {s.loss_std:.4f}",
                "budget used": f"{100 * s.cost_mean / comparison.budget:.0f}%",
                "wall-clock": f"{s.elapsed_mean:.0f}s",
                "reach baseline loss": reach,
                "vs baseline": s.verdict,
            }
        )
    return rows


def comparison_markdown(comparison: Comparison) -> str:
    rows = comparison_rows(comparison)
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row[h] for h in header) + " |" for row in rows]
    budget = _format_cost(comparison.budget, comparison.unit)
    return f"Budget: {budget} per run\n\n" + "\n".join(lines) + "\n"


@plain_text
def plot_comparison(comparison: Comparison, png: str | Path) -> Path:
    """Held-out loss against budget used, one colour per method, one line per seed."""
    import matplotlib

    fig, ax = subplots(figsize=(7, 4.5))
    methods = [s.method for s in comparison.summaries]
    colours = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, method in enumerate(methods):
        colour = colours[index % len(colours)]
        for n, run in enumerate(r for r in comparison.runs if r.method == method):
            xs = [100 * c / comparison.budget for c, _, _, _ in run.curve]
            ys = [loss for _, _, _, loss in run.curve]
            ax.plot(xs, ys, color=colour, alpha=0.8, label=method if n == 0 else None)
    unit = "FLOPs" if comparison.unit == "flops" else "reference time"
    ax.set_xlabel(f"budget used (% of {_format_cost(comparison.budget, comparison.unit)}, {unit})")
    ax.set_ylabel("held-out loss (nats/token)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    png = Path(png)
    fig.savefig(png, dpi=120)
    return png
