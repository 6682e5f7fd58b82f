"""The plausibility check of `seqlm generate --check`: generated trajectories beside the
real continuations of the same prefixes, as one table, a JSON file and a figure.

Both sides go through the same tokens -> MEDS rows path (`seqlm.export.meds`'s
`TrajectoryExporter`, as `corpus_to_meds` and `generations_to_meds` use it):

- generated: each sample is its prompt + generation; the prompt's rows are context.
- real: each sequence of the check split (held_out by default) cut to its first
  `prompt_length + max_tokens` tokens; the rows of the first `prompt_length` are context,
  so the real side is what followed a prefix of the same length, over the same token
  budget (with sequence prompts from that split, exactly the same prefixes).
- value ranges come from the train split's rows, rebuilt the same way.

"Within 2x": for the rates of implausible things (repeats, unopened closes, static rows,
values outside the range) the generated rate is at most twice the real one (0 when the
real one is 0); for the time-gap median and 90th percentile the ratio lies in [1/2, 2].
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from seqlm.evaluation.plausibility import (
    SECONDS_PER_HOUR,
    SideMeasures,
    ks_distance,
    mark_scored,
    measure,
    value_ranges,
)
from seqlm.export.meds import DEFAULT_START, TrajectoryExporter, rows_frame
from seqlm.plotting import new_figure, plain_text

if TYPE_CHECKING:
    from rich.table import Table

    from seqlm.corpus.store import Corpus
    from seqlm.evaluation.generate import Generation

RATE = "rate"  # lower is better, within 2x means at most twice the real
SPREAD = "spread"  # within 2x means between half and twice the real


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _gap_quantile(q: float) -> Callable[[SideMeasures], float | None]:
    def value(side: SideMeasures) -> float | None:
        if side.gaps_s.size == 0:
            return None
        return float(np.quantile(side.gaps_s, q)) / SECONDS_PER_HOUR

    return value


def _repeat_share(kind: str, column: int) -> Callable[[SideMeasures], float | None]:
    def value(side: SideMeasures) -> float | None:
        counts = side.repeats.get(kind, (0, 0, 0))
        return _share(counts[column], counts[0])

    return value


# (label, value of one side, how the ratio is judged)
MEASURES: tuple[tuple[str, Callable[[SideMeasures], float | None], str], ...] = (
    ("same-time repeats / row", _repeat_share("all", 1), RATE),
    ("  conflicting values / row", _repeat_share("all", 2), RATE),
    ("same-time repeats / LAB row", _repeat_share("LAB", 1), RATE),
    ("  conflicting values / LAB row", _repeat_share("LAB", 2), RATE),
    ("unopened closes / close", lambda s: _share(s.closes["all"][1], s.closes["all"][0]), RATE),
    ("static rows outside prefix / row", lambda s: _share(s.static_outside, s.scored_rows), RATE),
    ("values outside train p1-p99 / value", lambda s: _share(s.values[1], s.values[0]), RATE),
    ("time gap median (h)", _gap_quantile(0.5), SPREAD),
    ("time gap p90 (h)", _gap_quantile(0.9), SPREAD),
)


@dataclass(frozen=True)
class PlausibilityReport:
    """Both sides' measures, and the table rows comparing them."""

    generated: SideMeasures
    real: SideMeasures
    rows: list[dict[str, object]]
    gap_ks: float | None

    def to_dict(self) -> dict[str, object]:
        return {
            "table": self.rows,
            "time_gap_ks_distance": self.gap_ks,
            "generated": self.generated.to_dict(),
            "real": self.real.to_dict(),
        }

    @property
    def all_within_2x(self) -> bool:
        return all(row["within_2x"] is not False for row in self.rows)


def _within(generated: float | None, real: float | None, judged: str) -> bool | None:
    if generated is None or real is None:
        return None
    if judged == RATE:
        return generated <= 2 * real
    if real == 0:
        return generated == 0
    return 0.5 <= generated / real <= 2


def compare(generated: SideMeasures, real: SideMeasures) -> PlausibilityReport:
    """The table rows: each measure on both sides, their ratio and the 2x verdict."""
    rows = []
    for label, value, judged in MEASURES:
        gen, ref = value(generated), value(real)
        ratio = gen / ref if gen is not None and ref else None
        rows.append(
            {
                "measure": label.strip(),
                "label": label,
                "generated": gen,
                "real": ref,
                "ratio": ratio,
                "within_2x": _within(gen, ref, judged),
            }
        )
    return PlausibilityReport(generated, real, rows, ks_distance(generated.gaps_s, real.gaps_s))


# ----- rows of both sides ------------------------------------------------------------------


def generated_rows(generations: Sequence[Generation], exporter: TrajectoryExporter) -> pl.DataFrame:
    """MEDS rows of every sample (prompt + generation, subjects 0, 1, ...), the prompt's
    rows marked as context."""
    rows: list[tuple] = []
    context: dict[int, int] = {}
    subject = 0
    for generation in generations:
        prompt_rows = len(exporter.rows(generation.prompt, subject, DEFAULT_START))
        for sequence in generation.sequences():
            rows.extend(exporter.rows(sequence, subject, DEFAULT_START))
            context[subject] = prompt_rows
            subject += 1
    return mark_scored(rows_frame(rows), context)


def real_rows(
    corpus: Corpus,
    cuts: Sequence[tuple[int, int]],
    exporter: TrajectoryExporter,
    max_tokens: int | None,
) -> pl.DataFrame:
    """MEDS rows of corpus sequences: for each `(seq_id, prefix)` in `cuts`, the first
    `prefix` tokens as context and the next `max_tokens` (all the rest with None) scored;
    subjects number the cuts 0, 1, ...; each starts at its sequence's first real time."""
    rows: list[tuple] = []
    context: dict[int, int] = {}
    for subject, (seq_id, prefix) in enumerate(cuts):
        ids = corpus.sequence(int(seq_id))
        if max_tokens is not None:
            ids = ids[: prefix + max_tokens]
        first = corpus.index.row(int(seq_id), named=True)["first_time"]
        start = first if isinstance(first, datetime) else DEFAULT_START
        context[subject] = len(exporter.rows(ids[:prefix], subject, start))
        rows.extend(exporter.rows(ids, subject, start))
    return mark_scored(rows_frame(rows), context)


def split_ids(corpus: Corpus, split: str) -> list[int]:
    """seq_ids of one split."""
    return corpus.index.filter(pl.col("split") == split)["seq_id"].to_list()


def split_cuts(corpus: Corpus, split: str, prompt_length: int) -> list[tuple[int, int]]:
    """`(seq_id, prompt_length)` for every sequence of `split`: its real continuation
    after a prefix of that length."""
    return [(seq_id, prompt_length) for seq_id in split_ids(corpus, split)]


def check_generations(
    generations: Sequence[Generation],
    corpus: Corpus,
    static_kinds: Collection[str],
    *,
    real_cuts: Sequence[tuple[int, int]],
    max_tokens: int,
) -> PlausibilityReport:
    """The plausibility report of `generations` beside the real continuations of
    `real_cuts` (`(seq_id, prefix length)`, see `real_rows`); value ranges from the
    train split."""
    exporter = TrajectoryExporter(corpus.vocabulary, static_kinds)
    train = real_rows(corpus, [(i, 0) for i in split_ids(corpus, "train")], exporter, None)
    ranges = value_ranges(train)
    real = real_rows(corpus, real_cuts, exporter, max_tokens)
    generated = generated_rows(generations, exporter)
    return compare(measure(generated, static_kinds, ranges), measure(real, static_kinds, ranges))


# ----- table, JSON, figure -----------------------------------------------------------------


def _number(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def plausibility_table(report: PlausibilityReport, title: str | None = None) -> Table:
    """Generated beside real, their ratio and the 2x verdict, one row per measure."""
    from rich.table import Table

    table = Table(title=title, title_justify="left", title_style="bold", header_style="bold")
    for column in ("measure", "generated", "real", "gen/real", "within 2x"):
        table.add_column(column, justify="left" if column == "measure" else "right")
    for row in report.rows:
        table.add_row(
            str(row["label"]),
            *(_number(row[k]) for k in ("generated", "real", "ratio", "within_2x")),
        )
    table.add_row("time gap KS distance", _number(report.gap_ks), "", "", "")
    rows = (report.generated.scored_rows, report.real.scored_rows)
    table.add_row("rows measured", *(str(n) for n in rows), "", "")
    return table


def write_report(report: PlausibilityReport, out: Path) -> dict[str, Path]:
    """plausibility.json and plausibility.png in `out`."""
    json_path, figure_path = out / "plausibility.json", out / "plausibility.png"
    json_path.write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    plausibility_figure(report, figure_path)
    return {"plausibility": json_path, "plausibility figure": figure_path}


@plain_text
def plausibility_figure(report: PlausibilityReport, path: Path) -> Path:
    """Left: each rate, generated beside real (bars); right: the time-gap CDFs."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    figure = new_figure(figsize=(12.0, 4.8), layout="constrained")
    bars, cdf = figure.subplots(1, 2, width_ratios=(1.4, 1.0))
    rates = [r for r in report.rows if not str(r["measure"]).startswith("time gap")]
    positions = np.arange(len(rates))
    for offset, side in ((-0.2, "generated"), (0.2, "real")):
        heights = [float(r[side]) if r[side] is not None else np.nan for r in rates]
        bars.barh(positions + offset, heights, height=0.4, label=side)
    bars.set_yticks(positions, [str(r["measure"]) for r in rates])
    bars.invert_yaxis()
    bars.set(xlabel="share (lower is more plausible)", title="implausible events")
    bars.legend()
    for side, gaps in (("generated", report.generated.gaps_s), ("real", report.real.gaps_s)):
        if gaps.size:
            hours = np.sort(np.maximum(gaps / SECONDS_PER_HOUR, 1e-3))
            cdf.step(hours, np.arange(1, hours.size + 1) / hours.size, where="post", label=side)
    ks = "-" if report.gap_ks is None else f"{report.gap_ks:.3f}"
    cdf.set_xscale("log")
    # plain numbers: with math text off (plain_text) the default log labels read as TeX
    cdf.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    cdf.xaxis.set_minor_formatter(NullFormatter())
    cdf.set(xlabel="time gap (hours, log)", ylabel="share of gaps <= x", title=f"KS {ks}")
    cdf.legend()
    cdf.grid(alpha=0.3)
    figure.savefig(path, dpi=150)
    return path
