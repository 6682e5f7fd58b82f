"""What a MEDS config declares about rows and codes: prefix filters, rewrites, cohorts.

Everything here is declarative (TOML tables of strings and numbers, never code):

- prefix filters keep or drop whole code families (`LAB`, `DIAGNOSIS//ICD//10`);
- rewrites map codes to coarser ones: `truncate_icd = 3` or regex + replacement rules;
- a cohort selects subjects by code patterns and a time window around the match, e.g.
  "subjects with a chest-pain diagnosis; their events from that admission onward":

      [adapter.cohort]
      include = ["DIAGNOSIS//ICD//10//R07", "DIAGNOSIS//ICD//9//7865"]
      start = "admission"      # the admission in which the first match happened
      end = "end"              # ... onward (or "discharge": that admission only)

Patterns and filters see the codes as they are in the dataset; rewrites apply after,
to the rows that were kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Literal

import polars as pl

from seqlm.errors import ConfigError

COHORT_SUBJECT_REASON = "filtered: cohort subject"
COHORT_WINDOW_REASON = "filtered: cohort window"
PREFIX_REASON = "filtered: prefix"


@dataclass
class CodeRewrite:
    """Replace the first match of `pattern` (a regular expression, Rust `regex` syntax as
    polars uses it) in each code by `replacement`, where `$1` / `${name}` are groups."""

    pattern: str = field(
        metadata={"help": "Regular expression (Rust regex syntax) matched in each code."}
    )
    replacement: str = field(
        metadata={"help": "What the first match becomes; $1 or ${name} insert groups."}
    )


@dataclass
class CohortOptions:
    """Which subjects, and which window of their events, make the corpus.

    A subject belongs to the cohort when any of its codes starts with a pattern in
    `include` (regular expressions matched at the start of the code) and none matches
    `exclude`. Its window starts at the first (or last, `occurrence`) matching timed
    event, or at the latest admission at or before it (`start = "admission"`), or covers
    its whole history (`start = "history"`); `hours_before` widens the start. The window
    ends at the first discharge at or after its start (`end = "discharge"`) or with the
    subject's record (`end = "end"`), and at most `max_hours` after the start.
    Static rows (null time) of cohort subjects are always kept.
    """

    include: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Code patterns (regex at the code's start); a subject with any match joins the cohort."
        },
    )
    exclude: list[str] = field(
        default_factory=list,
        metadata={"help": "Code patterns that keep a subject out of the cohort."},
    )
    occurrence: Literal["first", "last"] = field(
        default="first",
        metadata={"help": "Which matching event anchors the window: first or last."},
    )
    start: Literal["admission", "match", "history"] = field(
        default="admission",
        metadata={
            "help": "Window start: the latest admission before the match, the match itself, or the whole history."
        },
    )
    end: Literal["end", "discharge"] = field(
        default="end",
        metadata={
            "help": "Window end: the record's end, or the first discharge at or after the start."
        },
    )
    hours_before: float = field(
        default=0.0, metadata={"help": "Widen the window start by this many hours."}
    )
    max_hours: float | None = field(
        default=None,
        metadata={"help": "Cut the window this many hours after its start; null = no limit."},
    )
    admission_codes: list[str] = field(
        default_factory=lambda: ["HOSPITAL_ADMISSION"],
        metadata={"help": "Codes that mark a hospital admission."},
    )
    discharge_codes: list[str] = field(
        default_factory=lambda: ["HOSPITAL_DISCHARGE"],
        metadata={"help": "Codes that mark a hospital discharge."},
    )

    def __post_init__(self) -> None:
        if not self.include:
            raise ConfigError("cohort.include must list at least one code pattern")
        if self.hours_before < 0:
            raise ConfigError("cohort.hours_before must be >= 0")
        if self.max_hours is not None and self.max_hours <= 0:
            raise ConfigError("cohort.max_hours must be > 0")
        for name in ("include", "exclude", "admission_codes", "discharge_codes"):
            check_patterns(getattr(self, name), f"cohort.{name}")


def check_patterns(patterns: Sequence[str], option: str) -> None:
    """Raise ConfigError naming the option if a pattern is not a valid regular expression."""
    for pattern in patterns:
        try:
            pl.Series([""]).str.contains(pattern)
        except pl.exceptions.PolarsError as err:
            raise ConfigError(
                f"{option}: {pattern!r} is not a valid regular expression: {err}"
            ) from None


def check_rewrites(rules: Sequence[CodeRewrite], truncate_icd: int | None) -> None:
    if truncate_icd is not None and truncate_icd < 1:
        raise ConfigError("truncate_icd must be >= 1")
    for number, rule in enumerate(rules, start=1):
        try:
            pl.Series(["x"]).str.replace(rule.pattern, rule.replacement)
        except pl.exceptions.PolarsError as err:
            raise ConfigError(
                f"rewrite rule {number}: invalid pattern {rule.pattern!r}: {err}"
            ) from None


def code_matches(patterns: Sequence[str], code: pl.Expr | None = None) -> pl.Expr:
    """True where the code starts with a match of any of the patterns."""
    code = pl.col("code") if code is None else code
    if not patterns:
        return pl.lit(False)
    return code.str.contains("^(?:" + "|".join(f"(?:{p})" for p in patterns) + ")")


def has_prefix(prefixes: Sequence[str], code: pl.Expr) -> pl.Expr:
    """True where the code is one of the prefixes or continues one after `//`.

    Literal comparison (no regex), so prefixes with spaces or dots need no escaping.
    """
    tests = [(code == p) | code.str.starts_with(p + "//") for p in prefixes]
    return pl.any_horizontal(tests) if tests else pl.lit(False)


def prefix_filtered(keep: Sequence[str], drop: Sequence[str], code: pl.Expr) -> pl.Expr:
    """True for rows the prefix filters remove: outside `keep` (when given) or in `drop`."""
    removed = pl.lit(False)
    if keep:
        removed = ~has_prefix(keep, code)
    if drop:
        removed = removed | has_prefix(drop, code)
    return removed


def rewrite_codes(code: pl.Expr, truncate_icd: int | None, rules: Sequence[CodeRewrite]) -> pl.Expr:
    """Apply `truncate_icd`, then each rule in order, to the code expression.

    `truncate_icd = 3` keeps the first 3 characters of the ICD part of any
    `KIND//ICD//<version>//<code>` code (`DIAGNOSIS//ICD//10//I2510` -> `.../I25`): the
    ICD category, the usual coarsening for sequence models.
    """
    if truncate_icd is not None:
        code = code.str.replace(
            rf"^([^/]+//ICD//[^/]+//)([^/]{{{truncate_icd}}})[^/]+$", "${1}${2}"
        )
    for rule in rules:
        code = code.str.replace(rule.pattern, rule.replacement)
    return code


def cohort_windows(rows: pl.LazyFrame, cohort: CohortOptions) -> pl.DataFrame:
    """One row per cohort subject: `entity`, `window_start`, `window_end` (null = open).

    `rows` holds the valid rows (`entity`, `time`, `code`); only rows that match a
    pattern are collected, in one streaming pass over three columns.
    """
    # One pass keeps the few rows any pattern matches; the rest is done in memory.
    patterns = [*cohort.include, *cohort.exclude, *cohort.admission_codes]
    patterns += cohort.discharge_codes
    matched = (
        rows.filter(code_matches(patterns))
        .select("entity", "time", "code")
        .collect(engine="streaming")
    )
    timed = matched.filter(pl.col("time").is_not_null())
    anchor = pl.col("time").min() if cohort.occurrence == "first" else pl.col("time").max()
    anchors_df = timed.filter(code_matches(cohort.include)).group_by("entity").agg(anchor=anchor)
    if cohort.exclude:
        excluded = matched.filter(code_matches(cohort.exclude)).select("entity").unique()
        anchors_df = anchors_df.join(excluded, on="entity", how="anti")
    admissions = timed.filter(code_matches(cohort.admission_codes)).select("entity", "time")
    discharges = timed.filter(code_matches(cohort.discharge_codes)).select("entity", "time")
    windows = anchors_df
    if cohort.start == "admission":
        latest_admission = (
            admissions.join(anchors_df, on="entity")
            .filter(pl.col("time") <= pl.col("anchor"))
            .group_by("entity")
            .agg(admitted=pl.col("time").max())
        )
        windows = windows.join(latest_admission, on="entity", how="left").with_columns(
            window_start=pl.coalesce("admitted", "anchor")
        )
    elif cohort.start == "match":
        windows = windows.with_columns(window_start=pl.col("anchor"))
    else:
        windows = windows.with_columns(window_start=pl.lit(None, dtype=anchors_df["anchor"].dtype))
    if cohort.hours_before:
        windows = windows.with_columns(
            window_start=pl.col("window_start") - timedelta(hours=cohort.hours_before)
        )

    # The end is measured from the window start, or from the match for "history".
    reference = pl.coalesce("window_start", "anchor")
    windows = windows.with_columns(window_end=pl.lit(None, dtype=anchors_df["anchor"].dtype))
    if cohort.end == "discharge":
        first_discharge = (
            discharges.join(windows.select("entity", reference.alias("ref")), on="entity")
            .filter(pl.col("time") >= pl.col("ref"))
            .group_by("entity")
            .agg(discharged=pl.col("time").min())
        )
        windows = windows.join(first_discharge, on="entity", how="left").with_columns(
            window_end=pl.col("discharged")
        )
    if cohort.max_hours is not None:
        cap = reference + timedelta(hours=cohort.max_hours)
        windows = windows.with_columns(
            window_end=pl.when(pl.col("window_end").is_null() | (pl.col("window_end") > cap))
            .then(cap)
            .otherwise(pl.col("window_end"))
        )
    return windows.select("entity", "window_start", "window_end")


def cohort_reason(in_cohort: pl.Expr, exempt: pl.Expr) -> pl.Expr:
    """The reject reason from the joined `window_start`/`window_end` columns, else null.

    `exempt` rows (static rows, and the birth row that becomes the static AGE event)
    are kept for every cohort subject whatever their time.
    """
    time = pl.col("time")
    outside = (
        time.is_not_null()
        & ~exempt
        & (
            (pl.col("window_start").is_not_null() & (time < pl.col("window_start")))
            | (pl.col("window_end").is_not_null() & (time > pl.col("window_end")))
        )
    )
    return (
        pl.when(~in_cohort)
        .then(pl.lit(COHORT_SUBJECT_REASON))
        .when(outside)
        .then(pl.lit(COHORT_WINDOW_REASON))
        .otherwise(pl.lit(None, dtype=pl.String))
    )
