"""`seqlm quickstart`: the whole pipeline on the bundled finch lesion data, in minutes on a CPU.

Steps, each a library call the user can repeat on their own data:

1. ingest the bundled Bengalese finch song (7 birds, pre and post mMAN lesion) into
   OUT/ingested (entity-level splits: one bout per entity), and write OUT/corpus with
   each bout's bird as a conditioning token after [BOS] (context only, never scored);
2. keep the pre-lesion bouts (OUT/pre) and train one GPT for all birds (OUT/run), its
   shape and settings chosen by the training recipe for the budget;
3. evaluate it on the held-out pre-lesion bouts beside the uniform, unigram and best
   n-gram baselines (OUT/eval);
4. the lesion comparison: held-out pre vs all post-lesion bouts (OUT/lesion);
5. attention statistics over the held-out bouts (OUT/attention);
6. OUT/report.html, one self-contained page with the tables and figures.

The budget (`QUICKSTART_BUDGET`, `QUICKSTART_TRAIN`) aims at beating the best n-gram
and the per-bird n-grams on held-out pre-lesion song on an idle two-core CPU within ten
minutes; the slow test checks it. `fast` is a smoke version with a tiny model that proves the plumbing only.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from seqlm.analysis.corpus_stats import AttentionStatsOptions, corpus_attention_statistics
from seqlm.analysis.stats_plots import write_stats_plots
from seqlm.analysis.stats_tables import distance_table, head_table, time_table, write_statistics
from seqlm.analysis.trust import assess
from seqlm.corpus import load_corpus
from seqlm.corpus.conditioning import condition_corpus
from seqlm.corpus.subset import subset_corpus
from seqlm.datasets import finch_lesions_path
from seqlm.errors import ConfigError
from seqlm.evaluation.group_ngram import GROUP_NGRAM_NAME
from seqlm.evaluation.paired import best_baseline
from seqlm.evaluation.report import EvalOptions, evaluate_run, write_report
from seqlm.ingest import ingest
from seqlm.outputs import check_output, output_lock, remove_output, write_marker
from seqlm.progress import Progress, ensure_progress
from seqlm.studies.lesion import (
    ALL_GROUPS,
    LesionOptions,
    lesion_comparison,
    write_lesion_report,
)
from seqlm.studies.quickstart_report import QuickstartReport, write_html_report
from seqlm.training.config import RunSettings, TrainConfig
from seqlm.training.runs import load_trained_model, summarize_run
from seqlm.training.session import train_on_corpus

SOURCE_DIR = "ingested"
CORPUS_DIR = "corpus"
PRE_DIR = "pre"
RUN_DIR = "run"
EVAL_DIR = "eval"
LESION_DIR = "lesion"
ATTENTION_DIR = "attention"
REPORT_FILE = "report.html"
RESULT_FILE = "quickstart.json"

# Why these numbers (docs/training.md): the model's shape, dropout, batch, learning rate
# and evaluation schedule come from the training recipe (seqlm.training.recipe) for the
# pre-lesion corpus and a budget of 3M training tokens, which an idle two-core CPU reads
# in about six minutes; the minute cap keeps the README's first command (install
# included) under ten minutes on a slower machine, and the learning rate decays to zero
# at whichever limit comes first. Every bout starts with its bird's conditioning token
# ([COND//group=bird3]), so the one pooled model is told which bird it reads, as each
# per-bird n-gram is by being fitted on that bird alone.
QUICKSTART_BUDGET = "3Mtok"
QUICKSTART_TRAIN: dict[str, Any] = {"max_minutes": 6.5}
CONDITION_ON: tuple[str, ...] = ("group",)
# The smoke version: a tiny model for a few steps; it proves the plumbing, not the model.
FAST_MODEL: dict[str, Any] = {"n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 64}
FAST_TRAIN: dict[str, Any] = {
    "max_steps": 20,
    "batch_size": 8,
    "warmup_steps": 5,
    "eval_every": 10,
    "eval_batches": 2,
    "checkpoint_every": 10,
    "log_every": 5,
    "cpu_threads": 1,
}
FAST_ATTENTION_SEQUENCES = 16
ATTENTION_SEQUENCES = 100

# What to type next on your own data (printed by the CLI, shown in the report).
NEXT_COMMANDS: tuple[str, ...] = (
    "seqlm ingest tabular events.csv --config mapping.toml --out my_corpus",
    "seqlm train my_corpus --out my_run",
    "seqlm eval my_run --corpus my_corpus",
)


@dataclass
class QuickstartResult:
    """Where everything went, and the headline numbers of the report."""

    out: Path
    report: Path
    corpus: Path
    pre_corpus: Path
    run: Path
    figures: dict[str, Path]
    model_perplexity: float
    ngram_perplexity: float
    ngram_order: int | None
    per_bird_ngram_perplexity: float | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    fast: bool = False
    comparisons: list[dict[str, Any]] = field(default_factory=list)
    caution: list[str] = field(default_factory=list)
    # the model against each bird's own n-gram on its held-out pre-lesion bouts
    per_bird: list[dict[str, Any]] = field(default_factory=list)

    def headline_comparisons(self) -> list[dict[str, Any]]:
        """The model against the pooled best n-gram and the per-group n-grams."""
        return [c for c in self.comparisons if "n-gram" in c["baseline"]]

    @property
    def model_beats_ngram(self) -> bool:
        return self.model_perplexity < self.ngram_perplexity

    @property
    def model_beats_per_bird_ngrams(self) -> bool | None:
        if self.per_bird_ngram_perplexity is None:
            return None
        return self.model_perplexity < self.per_bird_ngram_perplexity


def busy_cores(seconds: float = 0.5) -> float | None:
    """How many cores other work keeps busy right now, from two reads of /proc/stat
    `seconds` apart (Linux); None where that file does not exist. Unlike the load
    average this does not lag: a `pip install` that just finished does not count."""

    def read() -> tuple[int, int] | None:
        try:
            with open("/proc/stat", encoding="ascii") as stat:
                fields = [int(v) for v in stat.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields), idle

    first = read()
    if first is None:
        return None
    time.sleep(seconds)
    second = read()
    if second is None or second[0] <= first[0]:
        return None
    total, idle = second[0] - first[0], second[1] - first[1]
    return (os.cpu_count() or 1) * (total - idle) / total


def quickstart_threads() -> int:
    """CPU threads for training: two when the machine is otherwise idle, else one.

    A model this small gains ~1.3x from a second thread on an idle two-core machine, but
    on one whose cores are busy torch's threads wait on each other at every op and a run
    can be several times slower (docs/architecture.md, CPU note), so one is the safe
    choice whenever other work holds half a core or more. Busy-ness is measured now
    (/proc/stat); elsewhere the one-minute load average stands in."""
    cores = os.cpu_count() or 1
    if cores < 2:
        return 1
    busy = busy_cores()
    if busy is None:
        try:
            busy = os.getloadavg()[0]
        except OSError:  # no load average on this platform either: assume busy
            return 1
    return 2 if busy < 0.5 else 1


def quickstart_settings(fast: bool = False) -> RunSettings:
    """The `RunSettings` the quickstart trains with: the recipe for `QUICKSTART_BUDGET`
    (its shape is chosen when the corpus is read), or the fixed tiny smoke model."""
    train = dict(FAST_TRAIN if fast else QUICKSTART_TRAIN)
    train.setdefault("cpu_threads", quickstart_threads())
    if fast:
        return RunSettings(preset="tiny", model=dict(FAST_MODEL), train=TrainConfig(**train))
    return RunSettings(
        train=TrainConfig(**train),
        train_explicit=tuple(sorted(train)),
        use_recipe=True,
        budget=QUICKSTART_BUDGET,
    )


def _finch_inputs() -> list[Path]:
    folder = finch_lesions_path()
    # The plain song files; the *_REPR variants collapse repeats and are a separate study.
    inputs = sorted(
        p for p in folder.iterdir() if p.name.startswith("bird") and not p.name.endswith("_REPR")
    )
    if not inputs:
        raise ConfigError(f"{folder}: the bundled finch data is missing")
    return inputs


# Every top-level name a quickstart writes: --overwrite refuses a folder with others.
QUICKSTART_NAMES = (
    SOURCE_DIR,
    CORPUS_DIR,
    PRE_DIR,
    RUN_DIR,
    EVAL_DIR,
    LESION_DIR,
    ATTENTION_DIR,
    REPORT_FILE,
    RESULT_FILE,
)


def _prepare_out(out: Path, overwrite: bool, inputs: list[Path]) -> None:
    check_output(out, inputs, overwrite=overwrite, own_names=QUICKSTART_NAMES)
    if out.is_dir() and any(out.iterdir()):
        remove_output(out, QUICKSTART_NAMES)
    out.mkdir(parents=True, exist_ok=True)
    write_marker(out, "quickstart")


def quickstart(
    out: str | Path,
    fast: bool = False,
    progress: Progress | None = None,
    *,
    overwrite: bool = False,
) -> QuickstartResult:
    """Run the whole pipeline on the bundled finch data and write OUT/report.html."""
    out = Path(out)
    inputs = _finch_inputs()
    with output_lock(out, "seqlm quickstart"):
        _prepare_out(out, overwrite, inputs)
        return _run_quickstart(out, inputs, fast, progress)


def _run_quickstart(
    out: Path, inputs: list[Path], fast: bool, progress: Progress | None
) -> QuickstartResult:
    bar = ensure_progress(progress)
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[name] = round(now - clock, 2)
        clock = now

    source = ingest("birdsong-strings", inputs, out / SOURCE_DIR, progress=progress)
    corpus = condition_corpus(source, out / CORPUS_DIR, CONDITION_ON)
    lap("ingest")
    pre = subset_corpus(corpus, out / PRE_DIR, {"condition": "pre"})
    settings = quickstart_settings(fast)
    train_on_corpus(pre.path, out / RUN_DIR, settings, progress=progress)
    lap("train")

    bar.start("evaluating", total=None)
    evaluation = evaluate_run(out / RUN_DIR, pre, EvalOptions(split="held_out"), progress=None)
    eval_files = write_report(evaluation, out / EVAL_DIR)
    lap("eval")
    lesion = lesion_comparison(corpus, {ALL_GROUPS: out / RUN_DIR}, LesionOptions())
    lesion_files = write_lesion_report(lesion, out / LESION_DIR)
    lap("lesion")

    caution = _interpretation_check(out / RUN_DIR, evaluation)
    bar.start("attention statistics", total=None)
    heads, stats_figures = _attention_statistics(out, pre.path, fast, caution)
    bar.finish()
    lap("attention")

    summary = evaluation.summary
    model_ppl = _perplexity(summary, "model")
    ngram_name, ngram_ppl = _best_ngram(summary)
    figures: dict[str, Path] = {
        k: v for k, v in eval_files.items() if k != "json" and Path(v).suffix == ".png"
    }
    figures["lesion"] = lesion_files["plot"]
    for name, paths in stats_figures.items():
        figures[f"attention_{name}"] = next(p for p in paths if p.suffix == ".png")

    report = write_html_report(
        QuickstartReport(
            title="seqlm quickstart: Bengalese finch song before and after mMAN lesions",
            summary=summary,
            lesion_rows=lesion.rows,
            attention_heads=heads,
            figures=figures,
            facts=_facts(corpus, pre, out, seconds, fast),
            next_commands=list(NEXT_COMMANDS),
            comparisons=[c.to_dict() for c in evaluation.comparisons],
            caution=caution.lines(),
            per_bird=_per_bird_comparisons(lesion.info),
        ),
        out / REPORT_FILE,
    )
    lap("report")
    result = QuickstartResult(
        out=out,
        report=report,
        corpus=out / CORPUS_DIR,
        pre_corpus=out / PRE_DIR,
        run=out / RUN_DIR,
        figures=figures,
        model_perplexity=model_ppl,
        ngram_perplexity=ngram_ppl,
        ngram_order=_ngram_order(evaluation.info, ngram_name),
        per_bird_ngram_perplexity=_per_bird_ngram(lesion.rows),
        seconds=seconds,
        fast=fast,
        comparisons=[c.to_dict() for c in evaluation.comparisons],
        caution=caution.lines(),
        per_bird=_per_bird_comparisons(lesion.info),
    )
    _write_result(result)
    return result


def _attention_statistics(
    out: Path, pre: Path, fast: bool, caution: Any
) -> tuple[pl.DataFrame, dict[str, list[Path]]]:
    """Attention statistics of the trained run over the held-out pre-lesion bouts, written
    to OUT/attention; returns the per-head table and the figures."""
    model = load_trained_model(out / RUN_DIR, which="best")
    stats_options = AttentionStatsOptions(
        split="held_out",
        max_sequences=FAST_ATTENTION_SEQUENCES if fast else ATTENTION_SEQUENCES,
    )
    stats = corpus_attention_statistics(model, load_corpus(pre), stats_options)
    write_statistics(stats, out / ATTENTION_DIR)
    heads, distance, times = head_table(stats), distance_table(stats), time_table(stats)
    title = f"{caution.caption()}\nHeld-out bouts:" if caution.reasons else "Held-out bouts:"
    figures = write_stats_plots(heads, distance, times, out / ATTENTION_DIR, title=title)
    return heads, figures


def _interpretation_check(run: Path, evaluation: Any) -> Any:
    """The interpretation gate on the evaluation just made (no second scoring pass)."""
    best = best_baseline(evaluation.comparisons)
    return assess(
        summarize_run(run).eval_curve,
        best.to_dict() if best is not None else None,
        "comparison from the quickstart's evaluation (eval/eval.json)",
    )


def _perplexity(summary: pl.DataFrame, model: str) -> float:
    row = summary.filter(pl.col("model") == model)
    if row.height == 0:
        raise ConfigError(f"the evaluation has no {model!r} row")
    return float(row["perplexity"][0])


def _best_ngram(summary: pl.DataFrame) -> tuple[str, float]:
    """The pooled n-gram baseline row (its order was chosen on the tuning split); the
    per-group n-grams are reported beside it, from the comparisons."""
    rows = summary.filter(
        pl.col("model").str.contains("gram") & ~pl.col("model").is_in(["unigram", GROUP_NGRAM_NAME])
    )
    if rows.height == 0:
        raise ConfigError("the evaluation has no n-gram baseline")
    best = rows.sort("perplexity").row(0, named=True)
    return str(best["model"]), float(best["perplexity"])


def _ngram_order(info: dict[str, Any], name: str) -> int | None:
    """The order chosen on tuning when the best row is `best n-gram`, else the name's."""
    chosen = info.get("ngram") or info.get("baselines", {}).get("ngram") or {}
    if name.startswith("best") and "best_order" in chosen:
        return int(chosen["best_order"])
    digits = "".join(c for c in name if c.isdigit())
    return int(digits) if digits else None


def _per_bird_ngram(rows: pl.DataFrame) -> float | None:
    """Held-out pre-lesion perplexity of the per-bird n-grams, pooled over birds."""
    row = rows.filter(
        (pl.col("group") == "all")
        & (pl.col("model") == "per-bird n-gram")
        & (pl.col("condition") == "pre")
    )
    return float(row["perplexity"][0]) if row.height else None


def _per_bird_comparisons(info: dict[str, Any]) -> list[dict[str, Any]]:
    """The lesion comparison's per-bird intervals on held-out pre-lesion bouts: the pooled
    model against each bird's own n-gram (`seqlm.studies.lesion`)."""
    # The lesion comparison divides the model's logits by a temperature fitted on the
    # pre-lesion tuning bouts; each row says which, since the headline is scored at T = 1.
    fit = info.get("temperature_fit", {}).get(ALL_GROUPS)
    temperature = None if fit is None else fit["temperature"]
    return [
        {**c, "temperature": temperature}
        for c in info.get("comparisons", [])
        if c["run"] != ALL_GROUPS and c["condition"] == "pre"
    ]


def _per_bird_summary(comparison: dict[str, Any]) -> dict[str, Any]:
    ce = comparison["metrics"]["cross_entropy"]
    return {
        "bird": comparison["run"],
        "bouts": comparison["units"],
        "model_perplexity": math.exp(ce["model"]),
        "ngram_perplexity": math.exp(ce["baseline"]),
        "ce_difference": ce["difference"],
        "ci95": [ce["ci_low"], ce["ci_high"]],
        "verdict": comparison["verdict"],
        "model_temperature": comparison.get("temperature"),
    }


def _facts(corpus: Any, pre: Any, out: Path, seconds: dict, fast: bool) -> dict:
    """The small key/value table at the top of the report."""
    index = corpus.index
    config = json.loads((out / RUN_DIR / "config.json").read_text(encoding="utf-8"))
    model, train = config["model"], config["train"]
    shape = "chosen by the training recipe, " if config.get("recipe", {}).get("applied") else ""
    return {
        "Data": "Bengalese finch song, 7 birds, pre and post mMAN lesion (Koparkar et al. 2024)",
        "Sequences": f"{index.height:,} bouts, {int(index['length'].sum()):,} tokens",
        "Vocabulary": f"{corpus.vocab_size} tokens",
        "Trained on": f"{pre.split('train').height:,} pre-lesion train bouts",
        "Model": (
            f"GPT ({shape}RUN/recipe.json), {model['n_layer']} layers x {model['n_embd']} "
            f"wide, {model['n_head']} heads, context {model['block_size']}, dropout "
            f"{model.get('dropout', 0.0):g}; each bout starts with its bird's conditioning token"
        ),
        "Training budget": _budget_text(train),
        "Mode": "--fast smoke run (tiny model; numbers mean nothing)" if fast else "full",
        "Output folder": str(out.resolve()),
        "Seconds per stage": ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()),
    }


def _budget_text(train: dict[str, Any]) -> str:
    limits = [f"{train['max_steps']} steps"] if train.get("max_steps") else []
    limits += [f"{train['max_tokens']:,} tokens"] if train.get("max_tokens") else []
    limits += [f"{train['max_minutes']:g} minutes"] if train.get("max_minutes") else []
    threads = train.get("cpu_threads") or 0
    plural = "s" if threads != 1 else ""
    return f"{' or '.join(limits)} (whichever comes first), batch {train['batch_size']}" + (
        f", {threads} CPU thread{plural}" if threads else ""
    )


def _write_result(result: QuickstartResult) -> None:
    payload = {
        "report": result.report.name,
        "model_perplexity": result.model_perplexity,
        "ngram_perplexity": result.ngram_perplexity,
        "ngram_order": result.ngram_order,
        "per_bird_ngram_perplexity": result.per_bird_ngram_perplexity,
        "model_beats_per_bird_ngrams": result.model_beats_per_bird_ngrams,
        "model_beats_ngram": result.model_beats_ngram,
        "seconds": result.seconds,
        "fast": result.fast,
        "comparisons": result.comparisons,
        "per_bird": [_per_bird_summary(c) for c in result.per_bird],
        "interpretation_warning": result.caution,
        "figures": {k: str(Path(v).relative_to(result.out)) for k, v in result.figures.items()},
    }
    path = result.out / RESULT_FILE
    path.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
