"""`seqlm eval`, `seqlm generate`, `seqlm lesion` and `seqlm subset`: thin over
`seqlm.evaluation`, `seqlm.studies.lesion` and `seqlm.corpus.subset`.

Those are imported inside the commands: they import torch (or the corpus writer), which
`seqlm --help` and every other command should not wait for.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from seqlm.cli.progress_bar import RichProgress
from seqlm.config import parse_option_strings


def _lstm_overrides(sets: list[str]) -> dict[str, Any]:
    """`--lstm-set minutes=2` (TrainConfig names or the trainer's aliases; a leading
    `train.` is optional) to TrainConfig field overrides."""
    from seqlm.training.config import TRAIN_ALIASES

    parsed = parse_option_strings(sets)
    if isinstance(parsed.get("train"), dict):
        parsed = {**{k: v for k, v in parsed.items() if k != "train"}, **parsed["train"]}
    return {TRAIN_ALIASES.get(key, key): value for key, value in parsed.items()}


def eval_command(
    run: Annotated[Path, typer.Argument(help="Run folder written by `seqlm train`.")],
    corpus: Annotated[Path, typer.Option("--corpus", help="Corpus folder to evaluate on.")],
    split: Annotated[
        str, typer.Option(help="Split(s) to score, comma-separated (e.g. held_out).")
    ] = "held_out",
    baselines: Annotated[
        str,
        typer.Option(
            help="Baselines beside uniform and unigram: ngram, group-ngram (one n-gram per "
            "index group, where there are several), lstm (comma-separated); `none` for the "
            "model alone."
        ),
    ] = "ngram,group-ngram",
    checkpoint: Annotated[
        str, typer.Option(help="best (lowest tuning loss), latest, or a step_N folder.")
    ] = "best",
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Where eval.json and plots go (RUN/eval/CORPUS-SPLIT)."),
    ] = None,
    stride: Annotated[
        int | None, typer.Option(help="Sliding-window stride for long sequences (context/2).")
    ] = None,
    max_order: Annotated[int, typer.Option(help="Highest n-gram order to consider.")] = 8,
    lstm_run: Annotated[
        Path | None, typer.Option(help="A trained LSTM run to use instead of training one.")
    ] = None,
    lstm_set: Annotated[
        list[str] | None,
        typer.Option(help="Training setting for the LSTM, e.g. minutes=2 or steps=500."),
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    resamples: Annotated[
        int, typer.Option(help="Bootstrap resamples for the confidence intervals.")
    ] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap.")] = 0,
    sequence_history: Annotated[
        bool,
        typer.Option(
            "--sequence-history",
            help="Clinical corpora: mix what each subject's own sequence says (a lab's "
            "earlier values; codes already listed at the current time) into the model, "
            "the n-gram and the LSTM alike (settings fitted on the tuning split); the "
            "model as trained is kept as `model without sequence history`.",
        ),
    ] = False,
) -> None:
    """Score a run's model beside uniform, unigram, best n-gram (and LSTM) baselines, with
    paired bootstrap intervals of the differences and a verdict in words."""
    from seqlm.evaluation.eval_run import evaluate_run_into_folder
    from seqlm.evaluation.paired import ComparisonOptions
    from seqlm.evaluation.report import EvalOptions, parse_baselines

    splits = [s.strip() for s in split.split(",") if s.strip()]
    options = EvalOptions(
        split=splits[0] if len(splits) == 1 else splits,
        baselines=parse_baselines(baselines),
        checkpoint=checkpoint,
        stride=stride,
        device=device,
        ngram_max_order=max_order,
        lstm_run=lstm_run,
        lstm_train=_lstm_overrides(lstm_set or []),
        comparison=ComparisonOptions(resamples=resamples, seed=seed),
        sequence_history=sequence_history,
    )
    progress = RichProgress()
    try:
        result = evaluate_run_into_folder(run, corpus, options, out=out, progress=progress)
    finally:
        progress.finish()
    _print_evaluation(result, f"{run} on {result.corpus_name} [{split}]")


def _print_evaluation(result: Any, title: str) -> None:  # noqa: ANN401 (EvaluatedRun)
    from seqlm.corpus.within_time_order import describe_within_time_order
    from seqlm.evaluation.paired import comparison_table
    from seqlm.evaluation.report import summary_table

    evaluation = result.evaluation
    console = Console()
    console.print(summary_table(evaluation.summary, title=title))
    if evaluation.comparisons:
        console.print(comparison_table(evaluation.comparisons, title="model against each baseline"))
        for comparison in evaluation.comparisons:
            console.print("  " + comparison.sentence(), markup=False, highlight=False)
    scoring = evaluation.info["scoring"]["model"]
    console.print(
        f"model context {scoring['context']}, stride {scoring['stride']} "
        f"(targets past the first window see >= {scoring['min_context_after_first_window']} "
        "tokens)"
    )
    for name, fit in (evaluation.info.get("sequence_history") or {}).items():
        console.print(
            f"{name}: value memory {fit['memory']:g}, weight {fit['weight']:g}, same-time "
            f"repeat factor {fit['repeat_factor']:g} (chosen on the tuning split; weight 0 "
            "and factor 1 = no history)",
            markup=False,
            highlight=False,
        )
    if evaluation.info.get("sequence_history_available"):
        console.print(
            "this corpus fuses codes with values: `--sequence-history` also scores every "
            "model with each sequence's earlier values and the codes of its current time "
            '(docs/training.md, "A subject\'s own sequence history")',
            markup=False,
            highlight=False,
        )
    corpus_info = evaluation.info.get("corpus", {})
    share = corpus_info.get("shared_time_share")
    if share is None or share > 0:  # silent where no two events share a time (song)
        line = describe_within_time_order(corpus_info.get("within_time_order", "file"))
        if share is not None:
            line += f" ({100 * share:.1f}% of the targets share their time with the token before)"
        console.print(line, markup=False, highlight=False)
    for name, path in result.written.items():
        console.print(f"  {name}: {path}")


# `seqlm generate`'s clinical options (grammar constraints and --check), named here so
# the command stays readable.
RepeatsOption = Annotated[
    str,
    typer.Option(
        help="Clinical grammar: the same code twice at one time: no-repeat (never), "
        "no-conflict (only the same value) or allow."
    ),
]
PairedOption = Annotated[
    bool,
    typer.Option(
        "--paired/--no-paired", help="Clinical grammar: a discharge only after its admission."
    ),
]
CheckOption = Annotated[
    bool,
    typer.Option(
        "--check",
        help="Print the plausibility of the samples beside the real data's "
        "(MEDS corpora; writes plausibility.json/.png with --out).",
    ),
]
CheckSplitOption = Annotated[
    str, typer.Option(help="The real data --check compares with (its sequences' continuations).")
]


def generate_command(
    run: Annotated[Path, typer.Argument(help="Run folder written by `seqlm train`.")],
    prompt: Annotated[
        list[str] | None,
        typer.Option("--prompt", help="Prompt as space-separated tokens (repeatable)."),
    ] = None,
    corpus: Annotated[
        Path | None,
        typer.Option(help="Corpus for the vocabulary and for --sequence prompts."),
    ] = None,
    sequence: Annotated[
        list[int] | None,
        typer.Option(help="Prompt from this corpus sequence's prefix (seq_id; repeatable)."),
    ] = None,
    prompt_length: Annotated[
        int, typer.Option(help="Tokens of a --sequence prompt, [BOS] included.")
    ] = 1,
    n: Annotated[int, typer.Option("--n", help="Samples per prompt.")] = 20,
    max_tokens: Annotated[int, typer.Option(help="Token budget per sample.")] = 256,
    temperature: Annotated[float, typer.Option(help="1 = the model's distribution.")] = 1.0,
    top_k: Annotated[int | None, typer.Option(help="Keep only the k most likely.")] = None,
    top_p: Annotated[float | None, typer.Option(help="Nucleus sampling mass.")] = None,
    horizon: Annotated[
        str | None, typer.Option(help="Stop at this much generated time, e.g. 30d, 12h.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Decode without KV cache.")] = False,
    checkpoint: Annotated[str, typer.Option(help="best, latest or step_N.")] = "best",
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Folder for generations.jsonl/.txt and, for a MEDS corpus, a MEDS dataset (meds/).",
        ),
    ] = None,
    show: Annotated[int, typer.Option(help="Samples to print.")] = 5,
    repeats: RepeatsOption = "no-repeat",
    paired: PairedOption = True,
    check: CheckOption = False,
    check_split: CheckSplitOption = "held_out",
) -> None:
    """Sample continuations of prompts from a trained model (clinical corpora: static tokens
    never generated, grammar constraints, --check for plausibility)."""
    from seqlm.evaluation.generate_run import GenerateSettings, generate_from_run

    settings = GenerateSettings(
        prompts=tuple(prompt or ()),
        sequences=tuple(sequence or ()),
        prompt_length=prompt_length,
        n_samples=n,
        max_tokens=max_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        horizon=horizon,
        seed=seed,
        use_cache=not no_cache,
        checkpoint=checkpoint,
        repeats=repeats,
        paired=paired,
        check_split=check_split if check else None,
    )
    progress = RichProgress()
    try:
        result = generate_from_run(run, settings, corpus=corpus, out=out, progress=progress)
    finally:
        progress.finish()
    console = Console()
    lines = result.text_lines()
    for line in lines[:show]:
        console.print(line, markup=False, highlight=False)
    console.print(f"{len(lines)} samples, {result.tokens:,} tokens in {result.seconds:.1f} s")
    if result.plausibility is not None:
        _print_plausibility(result.plausibility, check_split, console)
    if out is not None:
        _print_written(result.written, console)


def _print_written(written: dict[str, Path], console: Console) -> None:
    """The files `seqlm generate --out` wrote, one line each."""
    console.print(f"  tokens: {written['tokens']}\n  text: {written['text']}")
    for name in ("MEDS dataset", "plausibility", "plausibility figure"):
        if name in written:
            console.print(f"  {name}: {written[name]}", markup=False, highlight=False)


def _print_plausibility(report: Any, split: str, console: Console) -> None:  # noqa: ANN401
    from seqlm.evaluation.plausibility_report import plausibility_table

    title = f"plausibility: generated beside the real {split} continuations"
    console.print(plausibility_table(report, title=title))
    verdict = "all within 2x of the real data" if report.all_within_2x else "NOT all within 2x"
    console.print(f"  {verdict} (rates: at most 2x the real; time gaps: 1/2x to 2x)")


def lesion_command(
    corpus: Annotated[Path, typer.Argument(help="Corpus with pre- and post-lesion sequences.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for runs and results.")],
    run: Annotated[
        list[str] | None,
        typer.Option(
            help="Already trained run(s): RUN for all birds, or BIRD=RUN per bird. "
            "Without it, models are trained on the pre-lesion train split."
        ),
    ] = None,
    per_bird: Annotated[
        bool, typer.Option("--per-bird", help="Train one model per bird (FinchGPT's setting).")
    ] = False,
    preset: Annotated[str | None, typer.Option(help="Model size for training.")] = None,
    config: Annotated[Path | None, typer.Option(help="TOML with [model] and [train].")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", "-s", help="table.key=value for training.")
    ] = None,
    condition: Annotated[
        str, typer.Option(help="Condition column ('': none, held-out only).")
    ] = "condition",
    pre: Annotated[str, typer.Option(help="Value of the pre-lesion condition.")] = "pre",
    post: Annotated[str, typer.Option(help="Value of the post-lesion condition.")] = "post",
    group: Annotated[str, typer.Option(help="Index column naming the bird.")] = "group",
    checkpoint: Annotated[str, typer.Option(help="best, latest or step_N.")] = "best",
    budget: Annotated[
        str | None, typer.Option(help="Training budget per model: 10m, 2Mtok or 1e15flops.")
    ] = None,
    init: Annotated[
        Path | None,
        typer.Option(help="With --per-bird: fine-tune each bird from this (pooled) run."),
    ] = None,
    select_on_tuning: Annotated[
        bool,
        typer.Option(
            help="With --init: score a bird with the pooled run unless its fine-tuned run "
            "is better on the bird's tuning split beyond the 95% bootstrap interval."
        ),
    ] = True,
    calibrate_on_tuning: Annotated[
        bool,
        typer.Option(
            help="Fit one temperature per scored run on its pre-lesion tuning split "
            "before scoring (lesion.json: temperature_fit)."
        ),
    ] = True,
) -> None:
    """Per-bird perplexity on held-out pre-lesion vs post-lesion song, model beside n-grams."""
    from seqlm.studies.lesion import LesionOptions, lesion_comparison_lines, lesion_table
    from seqlm.studies.lesion_run import LesionRequest, lesion_study
    from seqlm.studies.lesion_splits import few_bouts_lines

    options = LesionOptions(
        condition=condition,
        pre=pre,
        post=post,
        group=group,
        checkpoint=checkpoint,
        calibrate_on_tuning=calibrate_on_tuning,
    )
    request = LesionRequest(
        runs=tuple(run or ()),
        per_group=per_bird,
        preset=preset,
        config=config,
        sets=tuple(set_ or ()),
        budget=budget,
        init=init,
        select_on_tuning=select_on_tuning,
    )
    progress = RichProgress()
    try:
        result, written = lesion_study(corpus, out, request, options, progress)
    finally:
        progress.finish()
    console = Console()
    console.print(lesion_table(result, title=f"lesion comparison ({result.info['setting']})"))
    for line in lesion_comparison_lines(result) + few_bouts_lines(result.bouts, pre):
        console.print("  " + line, markup=False, highlight=False)
    console.print("\n".join(f"  {name}: {path}" for name, path in written.items()))


def lesion_splits_command(
    lesions: Annotated[
        list[Path],
        typer.Argument(help="`seqlm lesion` output folders, one per entity-level split."),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the pooled results.")],
    resamples: Annotated[int, typer.Option(help="Bootstrap resamples of the bouts.")] = 1000,
) -> None:
    """Pool `seqlm lesion` results over several splits of the same song, per bird.

    Ingest the data again with other split seeds (`--option splits.seed=S`), train and run
    `seqlm lesion` on each; this scores every folder again as its lesion did and pools
    each bird's held-out bouts over the splits (interval resampled by bout)."""
    from seqlm.evaluation.paired import ComparisonOptions
    from seqlm.studies.lesion_splits import lesion_across_splits, splits_lines, splits_table

    progress = RichProgress()
    try:
        result, written = lesion_across_splits(
            lesions, out, ComparisonOptions(resamples=resamples), progress
        )
    finally:
        progress.finish()
    console = Console()
    console.print(splits_table(result))
    for line in splits_lines(result):
        console.print("  " + line, markup=False, highlight=False)
    for name, path in written.items():
        console.print(f"  {name}: {path}")


def subset_command(
    corpus: Annotated[Path, typer.Argument(help="Corpus folder to take sequences from.")],
    where: Annotated[
        list[str], typer.Option(help="column=value (value1,value2 for either); repeatable.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="New corpus folder.")],
    overwrite: Annotated[
        bool, typer.Option(help="Replace a corpus seqlm wrote at --out (never another folder).")
    ] = False,
) -> None:
    """Write the sequences whose index rows match --where as a corpus of their own."""
    from seqlm.corpus.subset import parse_where, subset_corpus

    subset = subset_corpus(corpus, out, parse_where(where), overwrite=overwrite)
    counts = subset.manifest["counts"]
    console = Console()
    console.print(f"[bold green]subset written[/] to {escape(str(subset.path))}")
    console.print(f"  sequences {counts['sequences']:,}, tokens {counts['tokens']:,}")
    console.print("  per split: " + json.dumps(counts["sequences_per_split"]))


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
    app.command("generate")(generate_command)
    app.command("lesion")(lesion_command)
    app.command("lesion-splits")(lesion_splits_command)
    app.command("subset")(subset_command)
