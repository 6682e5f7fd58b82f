"""`seqlm corpus info` (what is in a corpus folder) and `seqlm corpus condition`.

`seqlm.corpus` is imported inside the commands: it pulls in the vocabularies and the
corpus writer, which `seqlm --help` and the other commands should not wait for.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from seqlm.corpus.clinical_info import ClinicalInfo
    from seqlm.corpus.info import CorpusInfo
    from seqlm.corpus.info_report import CorpusReport

corpus_app = typer.Typer(help="Inspect corpus folders.", no_args_is_help=True)


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left", title_style="bold", header_style="bold")
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i == 0 else "right")
    return table


@corpus_app.command("info")
def info_command(
    corpus: Annotated[Path, typer.Argument(help="Corpus folder written by `seqlm ingest`.")],
    by: Annotated[
        list[str] | None,
        typer.Option("--by", help="Also count by these index columns (e.g. group, condition)."),
    ] = None,
    top: Annotated[int, typer.Option(help="How many of the most frequent tokens to show.")] = 20,
    context: Annotated[
        list[int] | None,
        typer.Option(
            "--context",
            help="Context lengths (tokens) whose record-time coverage to report "
            "(default 128, 512, 2048).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Counts per split and group, vocabulary, top tokens, lengths and rejects."""
    from seqlm.corpus.info import WINDOW_CONTEXTS
    from seqlm.corpus.info_report import corpus_report

    contexts = tuple(context) if context else WINDOW_CONTEXTS
    report = corpus_report(corpus, by or (), top=top, contexts=contexts)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2, default=str))
        return
    console = Console()
    _print_summary(console, report)
    _print_counts(console, report)
    _print_tokens(console, report.info)
    if report.clinical is not None:
        _print_clinical(console, report.clinical)


def _number(value: int | None) -> str:
    return "?" if value is None else f"{value:,}"


def _print_summary(console: Console, report: CorpusReport) -> None:
    """Where the corpus came from, what was read and kept, and notes on it."""
    info = report.info
    console.print(
        f"[bold]{escape(info.path)}[/]  adapter {info.adapter}, seqlm {info.seqlm_version}"
    )
    console.print(
        f"rows read {_number(info.rows_read)} = events {_number(info.events)} + rejects "
        f"{_number(info.rejects)} ({info.rows_balance});  {info.sequences:,} sequences, "
        f"{info.tokens:,} tokens;  "
        f"vocabulary {info.vocab_size:,} ({info.token_dtype}), "
        f"{info.merged_tokens:,} rare tokens merged into unknowns"
    )
    if info.reserved_labels:
        console.print(
            f"{info.reserved_labels:,} events had a label that spells a scheme token "
            "([PAD], VALUE//Q3, ...) or is empty: written as their kind's unknown"
        )
    if info.time_unit == "index":
        console.print("times are unitless positions (time_unit = index), not seconds")
    for line in report.value_lines():
        console.print(Text(line))
    for line in info.notes:
        console.print(Text(f"note: {line}"))
    for line in report.merge_check_lines():
        console.print(Text(line, style="yellow"))


def _print_counts(console: Console, report: CorpusReport) -> None:
    """Sequences and tokens per split, per group (when there are several), per --by."""
    info, breakdown = report.info, report.breakdown
    splits = _table("Splits", "split", "sequences", "tokens")
    for row in info.splits:
        splits.add_row(row.split, f"{row.sequences:,}", f"{row.tokens:,}")
    console.print(splits)
    if len({g.group for g in info.groups}) > 1:
        groups = _table("Groups", "split", "group", "sequences", "tokens")
        for row in info.groups:
            groups.add_row(row.split, Text(str(row.group)), f"{row.sequences:,}", f"{row.tokens:,}")
        console.print(groups)
    if breakdown is not None:
        table = _table("Counts by " + ", ".join(report.by), *breakdown.columns)
        for values in breakdown.iter_rows():
            table.add_row(*(f"{v:,}" if isinstance(v, int) else str(v) for v in values))
        console.print(table)


def _print_tokens(console: Console, info: CorpusInfo) -> None:
    """Lengths, the top tokens, rejects by reason, and (outside MEDS) value-bin edges."""
    lengths = _table("Sequence length (tokens)", "percentile", "length")
    for p, value in info.length_percentiles.items():
        lengths.add_row(f"p{p}", f"{value:,.0f}")
    lengths.add_row("mean", f"{info.mean_tokens_per_sequence:,.1f}")
    console.print(lengths)
    tokens = _table(f"Top {len(info.top_tokens)} tokens", "token", "count", "share")
    for row in info.top_tokens:
        tokens.add_row(Text(row.token), f"{row.count:,}", f"{row.share:.2%}")
    console.print(tokens)
    console.print(
        f"unknown tokens {info.unknown_share:.2%} of all tokens; "
        f"time-gap tokens {info.time_token_share:.2%}"
    )
    for sentence in info.window_time_sentences():
        console.print(Text(sentence))
    if info.rejects_by_reason:
        rejects = _table("Rejected rows by reason", "reason", "rows")
        for reason, n in info.rejects_by_reason.items():
            rejects.add_row(Text(reason), f"{n:,}")
        console.print(rejects)
    if info.binned_codes and info.adapter != "meds":
        bins = _table(
            "Value-bin edges of the most frequent binned codes", "code", "tokens", "edges"
        )
        for row in info.binned_codes:
            bins.add_row(
                Text(row.code), f"{row.tokens:,}", ", ".join(f"{e:.4g}" for e in row.edges)
            )
        console.print(bins)


def _print_clinical(console: Console, clinical: ClinicalInfo) -> None:
    per_subject = _table("Tokens per subject", "split", "subjects", "mean", "median", "p95")
    for row in clinical.tokens_per_subject:
        per_subject.add_row(
            row.split,
            f"{row.subjects:,}",
            f"{row.mean:,.0f}",
            f"{row.median:,.0f}",
            f"{row.p95:,.0f}",
        )
    console.print(per_subject)
    kinds = _table("Token kinds", "kind", "tokens", "share", "unknown share")
    for row in clinical.kinds:
        kinds.add_row(row.kind, f"{row.tokens:,}", f"{row.share:.2%}", f"{row.unknown_share:.2%}")
    console.print(kinds)
    console.print(
        f"unknowns {clinical.unknown_share:.2%}, time tokens {clinical.time_token_share:.2%}, "
        f"static prefix {clinical.static_prefix_share:.2%} of all tokens; privacy threshold "
        f"{clinical.min_entities} subjects ({clinical.merged_tokens:,} tokens merged); "
        f"splits from {clinical.split_source}; "
        f"codes missing from metadata: {clinical.codes_missing_from_metadata}"
    )
    labs = _table("Value-bin edges of the most frequent lab codes", "code", "tokens", "edges")
    for row in clinical.lab_bins:
        labs.add_row(Text(row.code), f"{row.tokens:,}", ", ".join(f"{e:.4g}" for e in row.edges))
    console.print(labs)


@corpus_app.command("condition")
def condition_command(
    corpus: Annotated[Path, typer.Argument(help="Corpus folder to condition.")],
    on: Annotated[
        list[str], typer.Option("--on", help="Index column to prefix as a token (repeatable).")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="New corpus folder.")],
    min_sequences: Annotated[
        int, typer.Option(help="Train sequences a value needs for a token of its own.")
    ] = 5,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing folder.")] = False,
) -> None:
    """Write the corpus with conditioning tokens ([COND//group=bird3]) after [BOS]:
    context only, never a target, never scored, never generated."""
    from seqlm.corpus.conditioning import condition_corpus

    written = condition_corpus(corpus, out, on, min_sequences=min_sequences, overwrite=overwrite)
    vocab = written.vocabulary
    console = Console()
    console.print(f"[bold green]conditioned corpus written[/] to {written.path}")
    console.print(
        f"  {len(vocab.condition_ids)} conditioning tokens on {', '.join(on)}; "
        f"vocabulary {written.vocab_size:,}"
    )


def register(app: typer.Typer) -> None:
    app.add_typer(corpus_app, name="corpus")
