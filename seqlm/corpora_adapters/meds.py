"""Clinical events in MEDS (Medical Event Data Standard) 0.3 / 0.4.

A MEDS dataset is a folder `data/**/*.parquet` (shards; columns `subject_id`, `time`,
`code`, `numeric_value`, `text_value`, often many more) beside `metadata/`
(`codes.parquet`, `subject_splits.parquet`, `dataset.json`). The reader is lazy: it scans
the shards, runs a few streaming aggregations (one row per subject), and returns an
EventTable whose frame has not been collected, so datasets larger than memory stream.

Choices (documented in `seqlm adapters meds`):

- splits: `metadata/subject_splits.parquet` when present, else the folder under `data/`
  (`train`/`tuning`/`held_out`, with common aliases such as `test`, `val`); a subject in
  two splits is an InputError naming both places.
- demographics: static rows (null `time`) stay static and sort first. The `MEDS_BIRTH`
  row becomes an `AGE` event (kind and code `AGE`, null time so it joins the static
  prefix, value = age in completed years at the subject's first kept timed event), which the
  vocabulary bins per code like any value. A birth date as a timed event would put a
  decades-long gap (many time tokens) before the first visit and says nothing the age
  does not. `birth = "event"` keeps it as an ordinary timed event instead.
- `MEDS_DEATH`, admissions and discharges are ordinary timed events (kinds `MEDS_DEATH`,
  `HOSPITAL_ADMISSION`, ...).
- non-finite `numeric_value` (NaN, inf): by default the event is kept and its value
  nulled (the test happened; its number is unusable); `non_finite = "reject"` rejects it.
- unsorted events within a subject are sorted (the EventTable sorts by time anyway, with
  the file order as tie-break); `unsorted = "error"` makes them an InputError instead.
- `text_value` goes to `text`; the MEDS scheme defaults use it (`scheme.use_text`,
  docs/tokenization.md "Text values"): a `CODE//text` token, or a binned number.
- a row timed before `earliest_time` (1800-01-01) or after `latest_time` (2400-01-01)
  is rejected as `time outside plausible range` (a year-9999 date is a data error).
- codes used in the data but missing from `metadata/codes.parquet` are counted and
  warned about (`MedsMetadataWarning`), never an error.

Every input row is either an event or a reject (`file` = shard path relative to the
dataset root, `row` = 1-based row within that shard), so rows read = events + rejects.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import polars as pl

import seqlm.corpora_adapters.meds_shard as shard_read
from seqlm.corpora_adapters.base import Ingested, RejectLog, register_adapter, reject_columns
from seqlm.corpora_adapters.meds_checks import (
    CodeSummary,
    check_sorted,
    check_split_consistency,
    code_summary,
)
from seqlm.corpora_adapters.meds_cohort import (
    PREFIX_REASON,
    CodeRewrite,
    CohortOptions,
    check_rewrites,
    cohort_reason,
    cohort_windows,
    prefix_filtered,
    rewrite_codes,
)
from seqlm.corpora_adapters.meds_layout import (
    TIME_DTYPE,
    MedsDataset,
    count_rows,
    locate_dataset,
    metadata_notes,
    scan_rows,
    shard_pieces,
    source_splits,
)
from seqlm.corpora_adapters.time_range import (
    DEFAULT_EARLIEST,
    DEFAULT_LATEST,
    EARLIEST_HELP,
    LATEST_HELP,
    TIME_RANGE_REASON,
    check_bounds,
    datetime_outside,
)
from seqlm.events import EventTable
from seqlm.vocabularies.scheme import CLINICAL_TIME_GAPS

BIRTH_CODE = "MEDS_BIRTH"
AGE_CODE = "AGE"
SECONDS_PER_YEAR = 365.25 * 86400.0

# Clinical token-scheme defaults: privacy threshold of 5 subjects per code (codes seen
# in fewer become `KIND//[UNK]`), per-code deciles fused into the code token
# (`LAB//51003//ng/mL//Q7`), and ETHOS-like time-gap tokens from 5 minutes to 6 months.
MEDS_SCHEME_DEFAULTS: dict[str, Any] = {
    "min_entities": 5,
    "value_mode": "fused",
    # text_value used (issue 20): `CODE//text` tokens, number-like texts of numeric codes
    # binned as values, the rest counted in the manifest by reason.
    "use_text": True,
    "value_bins": 10,
    "time_tokens": True,
    "time_gap_edges": list(CLINICAL_TIME_GAPS),
}


class MedsMetadataWarning(UserWarning):
    """The dataset's metadata is incomplete (e.g. codes missing from codes.parquet)."""


@dataclass
class MedsOptions:
    """Options of the `meds` adapter (TOML table `[adapter]`)."""

    # Where splits come from: "auto" = metadata/subject_splits.parquet if present, else
    # the data/<split>/ folder names; "none" leaves them to the corpus's [splits] config.
    split_source: Literal["auto", "metadata", "folders", "none"] = field(
        default="auto",
        metadata={
            "help": "Where splits come from: auto (metadata/subject_splits.parquet, else data/<split>/ folders), metadata, folders, or none ([splits] decides)."
        },
    )
    # Extra folder-name -> split names, for exports with their own names ({"dev" = ...}).
    split_folders: dict[str, str] = field(
        default_factory=dict,
        metadata={
            "help": "Extra folder name -> split name pairs, for exports with their own names."
        },
    )
    # Code families to keep (empty = all) or drop: `LAB` keeps `LAB//...` and `LAB`.
    keep_prefixes: list[str] = field(
        default_factory=list,
        metadata={"help": "Code families to keep (empty = all): LAB keeps LAB//... and LAB."},
    )
    drop_prefixes: list[str] = field(
        default_factory=list, metadata={"help": "Code families to drop."}
    )
    # Keep the first N characters of ICD codes (3 = the ICD category).
    truncate_icd: int | None = field(
        default=None,
        metadata={"help": "Keep the first N characters of ICD codes (3 = the ICD category)."},
    )
    # Regex rewrites applied in order after truncate_icd ([[adapter.rewrite]] tables).
    rewrite: list[CodeRewrite] = field(
        default_factory=list,
        metadata={
            "help": "Regex rewrites of codes, applied in order after truncate_icd ([[adapter.rewrite]] tables)."
        },
    )
    # Extra columns whose value is appended to the code (`unit` -> `LAB//x//mg`).
    code_suffix_columns: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Extra columns whose value is appended to the code (unit -> LAB//x//mg)."
        },
    )
    birth: Literal["age", "event"] = field(
        default="age",
        metadata={
            "help": "The MEDS_BIRTH row: age (a static AGE token valued by age at the first event) or event (kept as a timed event)."
        },
    )
    non_finite: Literal["null_value", "reject"] = field(
        default="null_value",
        metadata={
            "help": "A NaN or infinite numeric_value: null_value (keep the event, no value) or reject the row."
        },
    )
    unsorted: Literal["sort", "error"] = field(
        default="sort", metadata={"help": "Rows not in (subject, time) order: sort them, or error."}
    )
    cohort: CohortOptions | None = field(
        default=None,
        metadata={
            "help": "A [adapter.cohort] table choosing subjects and their event window (see its keys)."
        },
    )
    earliest_time: str = field(default=DEFAULT_EARLIEST, metadata={"help": EARLIEST_HELP})
    latest_time: str = field(default=DEFAULT_LATEST, metadata={"help": LATEST_HELP})

    def __post_init__(self) -> None:
        check_rewrites(self.rewrite, self.truncate_icd)
        check_bounds(self.earliest_time, self.latest_time)


def _subject_table(
    valid: pl.LazyFrame, options: MedsOptions, splits: pl.DataFrame | None
) -> pl.DataFrame:
    """Per-subject facts the row decisions need: birth time, cohort window, split.

    Only subjects with a birth, a cohort window or a metadata split appear; each part
    comes from a pass that keeps a few rows per subject, so memory stays small.
    """
    is_birth = pl.col("code") == BIRTH_CODE
    table = (
        valid.filter(is_birth & pl.col("time").is_not_null())
        .group_by("entity")
        .agg(birth_time=pl.col("time").min(), birth_order=pl.col("order").min())
        .collect(engine="streaming")
    )
    parts = []
    if options.cohort is not None:
        windows = cohort_windows(valid, options.cohort).with_columns(in_cohort=pl.lit(True))
        parts.append(windows)
    if splits is not None:
        parts.append(splits)
    for part in parts:
        table = table.join(part, on="entity", how="full", coalesce=True)
    return table


def _implausible(options: MedsOptions) -> pl.Expr:
    """Rows timed outside [earliest_time, latest_time] (static rows never are)."""
    time = pl.col("time")
    return datetime_outside(time, options.earliest_time, options.latest_time).fill_null(False)


def _reject_reason(options: MedsOptions) -> pl.Expr:
    """Why a row is not used, or null; the first applicable reason wins."""
    code, time = pl.col("code"), pl.col("time")
    is_birth = code == BIRTH_CODE
    non_finite = pl.col("value").is_not_null() & ~pl.col("value").is_finite()
    reason = (
        pl.when(pl.col("entity").is_null())
        .then(pl.lit("null subject_id"))
        .when(code.is_null() | (code == ""))
        .then(pl.lit("null code"))
        .when(_implausible(options))
        .then(pl.lit(TIME_RANGE_REASON))
    )
    if options.non_finite == "reject":
        reason = reason.when(non_finite).then(pl.lit("non-finite numeric_value"))
    if options.birth == "age":
        reason = (
            reason.when(is_birth & time.is_null())
            .then(pl.lit("MEDS_BIRTH without time"))
            .when(is_birth & (pl.col("order") != pl.col("birth_order")))
            .then(pl.lit("duplicate MEDS_BIRTH"))
        )
    if options.cohort is not None:
        exempt = is_birth if options.birth == "age" else pl.lit(False)
        in_cohort = pl.col("in_cohort").fill_null(False)
        reason = reason.when(cohort_reason(in_cohort, exempt).is_not_null()).then(
            cohort_reason(in_cohort, exempt)
        )
    reason = reason.when(prefix_filtered(options.keep_prefixes, options.drop_prefixes, code)).then(
        pl.lit(PREFIX_REASON)
    )
    reason = reason.when(pl.col("birth_time").is_not_null() & (time < pl.col("birth_time"))).then(
        pl.lit("before birth")
    )
    return reason.otherwise(pl.lit(None, dtype=pl.String))


def _final_code(options: MedsOptions, ages: bool) -> Callable[[pl.Expr], pl.Expr]:
    """The event's code from the raw one (for shards read whole, once per distinct code:
    `meds_shard.categorical_codes`), except the code suffix columns."""

    def final(raw: pl.Expr) -> pl.Expr:
        code = rewrite_codes(raw, options.truncate_icd, options.rewrite)
        return pl.when(raw == BIRTH_CODE).then(pl.lit(AGE_CODE)).otherwise(code) if ages else code

    return final


def _kind(code: pl.Expr) -> pl.Expr:
    # The part before the first "//" (splitn: no list per row).
    return code.str.splitn("//", 2).struct.field("field_0")


def _event_columns(options: MedsOptions, ages: bool, raw_codes: bool = False) -> list[pl.Expr]:
    """The events' columns; `raw_codes`: `code` and `kind` as the raw code (for
    `categorical_codes`)."""
    code = rewrite_codes(pl.col("code"), options.truncate_icd, options.rewrite)
    for column in options.code_suffix_columns:
        suffix = pl.col(f"suffix__{column}")
        code = pl.when(suffix.is_null()).then(code).otherwise(code + "//" + suffix)
    value = pl.col("value")
    value = pl.when(value.is_finite()).then(value).otherwise(pl.lit(None, dtype=pl.Float64))
    time = pl.col("time")
    if ages:
        is_birth = pl.col("code") == BIRTH_CODE
        code = pl.when(is_birth).then(pl.lit(AGE_CODE)).otherwise(code)
        # Completed years, as de-identified data states ages: value-bin edges are
        # observed values, and an exact age to the microsecond is one person's (issue 20).
        age = (
            (pl.col("first_time") - pl.col("time")).dt.total_microseconds().cast(pl.Float64)
            / (SECONDS_PER_YEAR * 1e6)
        ).floor()
        value = pl.when(is_birth).then(age).otherwise(value)
        time = pl.when(is_birth).then(pl.lit(None, dtype=TIME_DTYPE)).otherwise(time)
    return [
        pl.col("entity"),
        time.alias("time"),
        pl.col("order"),
        (pl.col("code") if raw_codes else _kind(code)).alias("kind"),
        (pl.col("code") if raw_codes else code).alias("code"),
        value.alias("value"),
        pl.col("text"),
        pl.col("split"),
    ]


@register_adapter(
    "meds",
    options=MedsOptions,
    description="Clinical events in MEDS 0.3/0.4 (data/**/*.parquet + metadata/).",
    scheme_defaults=MEDS_SCHEME_DEFAULTS,
    count_rows=count_rows,
)
def read_meds(inputs: Sequence[Path], options: MedsOptions) -> Ingested:
    """Read a MEDS dataset (its root folder, its `data/` folder, or shard files)."""
    dataset = locate_dataset([Path(p) for p in inputs], options.split_folders)
    # The code summary (a pass of its own over three columns) runs beside the rest,
    # most of all beside `_shard_events`, which is Python and holds one core.
    with ThreadPoolExecutor(1, thread_name_prefix="seqlm-meds-codes") as thread:
        summary = thread.submit(code_summary, dataset)
        return _read_meds(dataset, options, summary)


def _read_meds(
    dataset: MedsDataset, options: MedsOptions, summary: Future[CodeSummary]
) -> Ingested:
    rows = scan_rows(dataset, options.code_suffix_columns)
    rows_read = sum(shard.rows for shard in dataset.shards)

    splits, split_source = source_splits(dataset, options.split_source, options.split_folders)
    if split_source != "none":
        check_split_consistency(rows, dataset, splits)
    if options.unsorted == "error":
        check_sorted(rows, dataset)

    # Implausible times are left out of births and cohort windows as well.
    valid = rows.filter(
        pl.col("entity").is_not_null() & pl.col("code").is_not_null() & ~_implausible(options)
    )
    subjects = _subject_table(valid, options, splits)
    joined = _with_reasons(rows, subjects, options, split_source)
    ages = options.birth == "age"
    events = _events(joined, options)
    # The same events per shard: MEDS shards hold whole subjects, so the corpus builder
    # can use them as its partitions (it checks, and hashes the events when not).
    source_parts, source_reads = _shard_events(dataset, subjects, options, split_source)

    rejects = RejectLog()
    rejects.extend(_rejects(joined))
    codes = summary.result()
    if codes.missing_from_metadata:
        warnings.warn(
            f"{codes.missing_from_metadata:,} of {codes.used:,} codes used in the data are "
            "missing from metadata/codes.parquet (kept; the vocabulary does not need it)",
            MedsMetadataWarning,
            stacklevel=2,
        )
    settings = {
        "dataset": dataset.info,
        "shards": len(dataset.shards),
        "split_source": split_source,
        "codes_in_data": codes.used,
        "codes_missing_from_metadata": codes.missing_from_metadata,
        # Kinds of the static prefix (for trajectory export): coarse, never a code.
        "static_kinds": sorted({*codes.static_kinds, *([AGE_CODE] if ages else [])}),
        "options": dataclasses.asdict(options),
    }
    return Ingested(
        events=events,
        rejects=rejects,
        rows_read=rows_read,
        adapter="meds",
        settings=settings,
        notes=metadata_notes(
            dataset, options.split_source, split_source, codes.missing_from_metadata is None
        ),
        source_parts=source_parts,
        source_reads=source_reads,
    )


def _shard_events(
    dataset: MedsDataset, subjects: pl.DataFrame, options: MedsOptions, split_source: str
) -> tuple[tuple[tuple[int, pl.LazyFrame], ...], tuple[partial[Any], ...]]:
    """(input rows, unsorted events) of every shard alone (`Ingested.source_parts`), a
    large shard in pieces cut between subjects (`shard_pieces`), and their `read_shard`
    (`Ingested.source_reads`; none when the shards differ in schema: the whole dataset's
    scan then reads them in another order than shard by shard, and so lists the rejects)."""
    parts, reads = [], []
    for number, shard in enumerate(dataset.shards):
        pieces = shard_pieces(shard)
        for piece in pieces:
            cut = piece if len(pieces) > 1 else None
            rows = scan_rows(dataset, options.code_suffix_columns, only=[number], piece=cut)
            events = _events(_with_reasons(rows, subjects, options, split_source), options)
            parts.append((piece[1], events.unsorted))
            # Built in the worker (a plan per piece cost the building process 2 ms).
            reads.append(
                partial(_read_piece, dataset, number, cut, subjects, options, split_source)
            )
    one_schema = len({tuple(shard.schema.items()) for shard in dataset.shards}) == 1
    return tuple(parts), tuple(reads) if one_schema else ()


def _read_piece(
    dataset: MedsDataset,
    number: int,
    cut: tuple[int, int] | None,
    subjects: pl.DataFrame,
    options: MedsOptions,
    split_source: str,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """`read_shard` of shard `number` (the rows `cut` of it, or all): integer subject ids
    stay integers in the read, so a subject is named once."""
    rows = scan_rows(dataset, options.code_suffix_columns, [number], cut, integer_ids=True)
    return read_shard(rows, subjects, options, split_source)


def read_shard(
    rows: pl.LazyFrame, subjects: pl.DataFrame, options: MedsOptions, split_source: str
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """A shard's (or piece's) events and rejects from one read: its rows with their
    reasons collected once (subject facts once per run of a subject; integer ids kept)
    and split in memory (no second scan for the rejects). Without code suffix columns
    `kind` and `code` are categoricals (`code` from the read on: `raw_categories`)."""
    plain = not (options.code_suffix_columns or options.keep_prefixes or options.drop_prefixes)
    joined = shard_read.with_subject_facts(shard_read.raw_categories(rows, plain), subjects)
    joined = _with_split_and_reason(joined.lazy(), options, split_source).collect()
    used, ages = pl.col("reason").is_null(), options.birth == "age"
    if ages:
        joined = joined.with_columns(
            shard_read.birth_first_times(joined, pl.col("code") == BIRTH_CODE, used)
        )
    rejects = reject_columns(_rejects(joined.lazy())).collect()
    # Lazy, so that only the events' columns of the used rows are copied.
    kept = joined.lazy().filter(used)
    if options.code_suffix_columns:
        return _event_table(kept, options, ages).unsorted.collect(), rejects
    events = shard_read.event_frame(kept, _event_columns(options, ages, raw_codes=True))
    return shard_read.categorical_codes(events, _final_code(options, ages), _kind), rejects


def _rejects(joined: pl.LazyFrame) -> pl.LazyFrame:
    """The rows of `_with_reasons` that are not used, as reject rows."""
    return joined.filter(pl.col("reason").is_not_null()).select(
        "file", "row", pl.lit(None, dtype=pl.String).alias("column"), "reason"
    )


def _with_reasons(
    rows: pl.LazyFrame, subjects: pl.DataFrame, options: MedsOptions, split_source: str
) -> pl.LazyFrame:
    """`rows` with their subject's facts, split and `reason` (null: the row is used)."""
    # The per-subject tables are small: build the join on them and stream the rows past
    # (left to itself polars may build on the rows, holding them all in memory).
    joined = rows.join(
        subjects.lazy(), on="entity", how="left", build_side="force_right", maintain_order="left"
    )
    return _with_split_and_reason(joined, options, split_source)


def _with_split_and_reason(
    joined: pl.LazyFrame, options: MedsOptions, split_source: str
) -> pl.LazyFrame:
    """Rows with their subject's facts given their split and `reason`."""
    if split_source == "data folders":
        joined = joined.with_columns(split=pl.col("folder_split"))
    elif split_source == "none":
        joined = joined.with_columns(split=pl.lit(None, dtype=pl.String))
    return joined.with_columns(reason=_reject_reason(options))


def _events(joined: pl.LazyFrame, options: MedsOptions) -> EventTable:
    """The used rows of `_with_reasons` as events (birth as an age by default)."""
    kept = joined.filter(pl.col("reason").is_null())
    ages = options.birth == "age"
    if ages:
        kept = kept.join(
            shard_read.first_times(kept, pl.col("code") == BIRTH_CODE),
            on="entity",
            how="left",
            build_side="force_right",
            maintain_order="left",
        )
    return _event_table(kept, options, ages)


def _event_table(kept: pl.LazyFrame, options: MedsOptions, ages: bool) -> EventTable:
    """The used rows (with `first_time` where `ages`) as events."""
    return EventTable.from_frame(kept.select(_event_columns(options, ages)))


__all__ = [
    "MEDS_SCHEME_DEFAULTS",
    "CodeRewrite",
    "CohortOptions",
    "MedsDataset",
    "MedsMetadataWarning",
    "MedsOptions",
    "read_meds",
]
