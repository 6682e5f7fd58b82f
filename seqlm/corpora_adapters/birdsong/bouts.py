"""What every birdsong adapter shares: options, input discovery, bird ids, bout splitting.

Each format module only parses its files into `Syllable`s (label, onset and offset in
seconds from the start of the recording, and the 1-based row or line they came from);
`EventBuilder` turns them into the canonical event table:

- a labelled row is either an event or a reject with a reason (empty label, silence
  label, dropped introductory note), so rows read = events + rejects;
- silences are not events: labels in `silence_labels` are rejected ("silence label") and,
  like unlabelled stretches, act as gaps;
- a recording is split into bouts where the silence between one syllable's offset and
  the next onset exceeds `bout_gap_s` (sources with their own bouts pass bout ids);
- `entity` is `<recording>#<bout index>`, `time` is seconds from the bout's first event,
  `value` the duration (offset - onset), `group` the bird id, `code` the label exactly
  as written (stripped of surrounding whitespace; multi-character labels stay whole).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from seqlm.corpora_adapters.base import Ingested, RejectLog
from seqlm.corpora_adapters.birdsong.labels import label_notes
from seqlm.errors import ConfigError, InputError
from seqlm.events import EventTable

# Time-gap edges for birdsong (`--option scheme.time_tokens=true` turns gap tokens on):
# the vocabulary measures a gap from one event's time (onset) to the next, and within a
# Bengalese finch bout those intervals run from a few tens to a few hundred ms.
BIRDSONG_TIME_GAP_EDGES: tuple[str, ...] = ("40ms", "80ms", "160ms", "320ms", "640ms")

# Token-scheme defaults for birdsong: a token is the syllable label alone (`value`, the
# duration, is binned into it only with `scheme.value_mode=fused`); there are no
# patients to protect, so a syllable seen in one bout only still gets its own token.
BIRDSONG_SCHEME_DEFAULTS: dict[str, Any] = {
    "min_entities": 1,
    "value_mode": "ignore",
    "time_gap_edges": BIRDSONG_TIME_GAP_EDGES,
}

# Entity-level attribute columns of the timed adapters (copied into the corpus index).
TIMED_ATTRIBUTES: tuple[str, ...] = ("source_file", "recording", "bout_start_s")

# Names of documentation files that sit beside data files and are never annotations.
_DOC_FILE = re.compile(r"^(license|licence|readme|citation|copying|notice)([._-].*)?$", re.I)


@dataclass
class BirdsongOptions:
    """Options every birdsong adapter takes.

    `bird` fixes the group of every input; otherwise the bird id is the first capture
    group of `bird_pattern` searched in the file name (default: the file name up to the
    first `_`, `.`, `-` or space, skipping a leading all-digit part, so
    `gy6or6_baseline_230312.not.mat` -> `gy6or6`, `405_marron1_June.txt` -> `marron1`,
    `bird1.csv` -> `bird1`), or the file name up to its first dot when it does not match.
    `pattern` is a glob on file names that selects the files read inside folders.
    """

    bird: str | None = field(
        default=None, metadata={"help": "Bird id (group) of every input; overrides bird_pattern."}
    )
    bird_pattern: str = field(
        default=r"^(?:\d+_)?([^_.\- ]+)",
        metadata={"help": "Regex whose first group, searched in the file name, is the bird id."},
    )
    intro_labels: list[str] = field(
        default_factory=lambda: ["i"],
        metadata={
            "help": "Labels of introductory notes; removed only with drop_intro = true (the ingest summary names the likely intro label)."
        },
    )
    drop_intro: bool = field(
        default=False,
        metadata={
            "help": "Drop the notes in intro_labels (counted as rejects 'introductory note')."
        },
    )
    pattern: str | None = field(
        default=None,
        metadata={
            "help": "Glob on file names selecting the files read inside folders (e.g. '*.csv')."
        },
    )

    def __post_init__(self) -> None:
        try:
            compiled = re.compile(self.bird_pattern)
        except re.error as err:
            raise ConfigError(f"option bird_pattern is not a valid regex: {err}") from None
        if compiled.groups < 1:
            raise ConfigError("option bird_pattern needs a capture group: (…) around the id")


@dataclass
class TimedOptions(BirdsongOptions):
    """Options of the adapters whose rows carry onset and offset times.

    `bout_gap_s`: a silence longer than this (seconds) starts a new bout; None keeps a
    whole recording (or a source's own bout) as one sequence.
    """

    bout_gap_s: float | None = field(
        default=0.5,
        metadata={
            "help": "A silence longer than this (seconds) starts a new bout; null keeps a recording (or the source's own bout) whole."
        },
    )
    silence_labels: list[str] = field(
        default_factory=lambda: ["SIL"],
        metadata={
            "help": "Labels that mark silence: not events (rejected as 'silence label'), they act as gaps."
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.bout_gap_s is not None and not self.bout_gap_s >= 0:
            raise ConfigError(f"option bout_gap_s must be >= 0 or unset, got {self.bout_gap_s}")


def require_positive(option: str, value: float | None) -> None:
    """Rates and similar options: unset, or a number above zero."""
    if value is not None and not value > 0:
        raise ConfigError(f"option {option} must be > 0, got {value}")


@dataclass(frozen=True, slots=True)
class Syllable:
    """One labelled row of a timed annotation file.

    Times are seconds from the start of the recording; `offset` is None for point
    annotations (Praat point tiers). `row` is the 1-based line or row it was read from.
    `bout` is the source's own bout number where the format has one (Koumura sequences).
    """

    label: str
    onset: float
    offset: float | None
    row: int
    bout: int = 0


def settings_of(options: Any, files: Sequence[Path]) -> dict[str, Any]:
    """What goes into the corpus manifest: the options and the input file names."""
    return {"options": dataclasses.asdict(options), "files": [f.name for f in files]}


def read_files(
    adapter: str,
    inputs: Sequence[Path],
    options: BirdsongOptions,
    suffixes: Sequence[str],
    what: str,
    read_file: Callable[[Path, Any, EventBuilder], None],
) -> Ingested:
    """The body of every timed adapter: find its files, read each into one builder."""
    files = collect_inputs(inputs, suffixes, options.pattern, what)
    builder = EventBuilder(TIMED_ATTRIBUTES)
    for path in files:
        read_file(path, options, builder)
    return builder.ingested(adapter, settings_of(options, files))


def add_file_recording(
    builder: EventBuilder,
    path: Path,
    suffixes: Sequence[str],
    syllables: Sequence[Syllable],
    options: TimedOptions,
    label_column: str | None,
) -> None:
    """A file that holds one recording: named after the file, its bird from the name."""
    recording = recording_name(path, suffixes)
    group = bird_from_name(path.name, options)
    builder.add_recording(path, recording, group, syllables, options, label_column)


def collect_inputs(
    inputs: Sequence[Path], suffixes: Sequence[str], pattern: str | None, what: str
) -> list[Path]:
    """Files given, plus the files of the format inside folders (sorted, recursive).

    Inside folders a file is taken when its name ends with one of `suffixes`
    (case-insensitive; "" means no suffix at all) or, when given, matches the glob
    `pattern`; hidden files and licence/readme files are skipped.
    """
    if not inputs:
        raise ConfigError("no input files given")
    files: list[Path] = []
    for raw in inputs:
        path = Path(raw)
        if path.is_file():
            files.append(path)
            continue
        if not path.is_dir():
            raise InputError("input not found", file=path)
        found = sorted(
            p
            for p in path.rglob("*")
            if p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(path).parts)
            and _wanted(p.name, suffixes, pattern)
        )
        if not found:
            wanted = pattern or ", ".join(s or "(no suffix)" for s in suffixes)
            raise InputError(f"no {what} files ({wanted}) in this folder", file=path)
        files.extend(found)
    return unique_files(files)


def unique_files(files: Sequence[Path]) -> list[Path]:
    """The same file named twice (or inside two folders given) is read once."""
    unique: dict[Path, Path] = {}
    for path in files:
        unique.setdefault(path.resolve(), path)
    return list(unique.values())


def _wanted(name: str, suffixes: Sequence[str], pattern: str | None) -> bool:
    if pattern is not None:
        return fnmatch.fnmatch(name, pattern)
    if _DOC_FILE.match(name):
        return False
    lower = name.lower()
    return any(lower.endswith(s.lower()) if s else "." not in name for s in suffixes)


def recording_name(path: Path, suffixes: Sequence[str]) -> str:
    """The file name without the format's suffix (`x.cbin.not.mat` -> `x.cbin`)."""
    name = path.name
    for suffix in sorted(suffixes, key=len, reverse=True):
        if suffix and name.lower().endswith(suffix.lower()) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def bird_from_name(name: str, options: BirdsongOptions) -> str:
    """The bird id for a file name or recording name, by the rule in `BirdsongOptions`."""
    if options.bird is not None:
        return options.bird
    match = re.search(options.bird_pattern, name)
    if match and match.group(1):
        return match.group(1)
    return name.split(".", 1)[0] or name


class EventBuilder:
    """Collects bouts of events and rejects, then builds the `Ingested` result."""

    def __init__(self, attributes: Sequence[str]) -> None:
        self.attributes = tuple(attributes)
        self.rejects = RejectLog()
        self.rows_read = 0
        self._columns: dict[str, list[Any]] = {
            name: [] for name in ("entity", "group", "time", "order", "code", "value")
        }
        self._attribute_values: dict[str, list[Any]] = {a: [] for a in self.attributes}
        self._owner: dict[str, str] = {}
        self.notes: list[str] = []

    def note(self, line: str) -> None:
        """A line the ingest summary prints (once)."""
        if line not in self.notes:
            self.notes.append(line)

    def claim(self, recording: str, file: Path) -> None:
        """Entities must be unique: two files may not produce the same recording name."""
        owner = self._owner.setdefault(recording, str(file))
        if owner != str(file):
            raise InputError(
                f"gives the same sequence names ({recording}#…) as {owner}; "
                "read them separately or rename one",
                file=file,
            )

    def add_bout(
        self,
        entity: str,
        group: str | None,
        codes: Sequence[str],
        times: Sequence[float | None],
        values: Sequence[float | None],
        attributes: dict[str, Any],
    ) -> None:
        n = len(codes)
        cols = self._columns
        cols["entity"].extend([entity] * n)
        cols["group"].extend([group] * n)
        cols["time"].extend(times)
        cols["order"].extend(range(n))
        cols["code"].extend(codes)
        cols["value"].extend(values)
        for name in self.attributes:
            self._attribute_values[name].extend([attributes.get(name)] * n)

    def add_recording(
        self,
        file: Path,
        recording: str,
        group: str | None,
        syllables: Sequence[Syllable],
        options: TimedOptions,
        label_column: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        """Sort a recording's syllables by onset, split them into bouts, add them."""
        self.claim(recording, file)
        self.rows_read += len(syllables)
        silence = set(options.silence_labels)
        intro = set(options.intro_labels) if options.drop_intro else set()
        sounds = []
        for syllable in syllables:
            if not syllable.label:
                self.rejects.add(file.name, syllable.row, "empty label", label_column)
            elif syllable.label in silence:
                self.rejects.add(file.name, syllable.row, "silence label", label_column)
            else:
                sounds.append(syllable)
        sounds.sort(key=lambda s: (s.bout, s.onset, s.row))
        bout_index = -1
        bout: list[Syllable] = []
        reach = 0.0  # the latest offset so far in this bout: overlapping rows are no gap
        for syllable in sounds:
            starts_bout = (
                not bout
                or syllable.bout != bout[-1].bout
                or (options.bout_gap_s is not None and syllable.onset - reach > options.bout_gap_s)
            )
            if starts_bout:
                if bout:
                    self._add_timed_bout(file, recording, bout_index, group, bout, intro, extra)
                bout_index += 1
                bout = []
                reach = syllable.onset
            bout.append(syllable)
            end = syllable.offset if syllable.offset is not None else syllable.onset
            reach = max(reach, end)
        if bout:
            self._add_timed_bout(file, recording, bout_index, group, bout, intro, extra)

    def _add_timed_bout(
        self,
        file: Path,
        recording: str,
        index: int,
        group: str | None,
        bout: list[Syllable],
        intro: set[str],
        extra: dict[str, Any] | None,
    ) -> None:
        kept = []
        for syllable in bout:
            if syllable.label in intro:
                self.rejects.add(file.name, syllable.row, "introductory note")
            else:
                kept.append(syllable)
        if not kept:
            return
        start = kept[0].onset
        attributes = {
            "source_file": file.name,
            "recording": recording,
            "bout_start_s": start,
            **(extra or {}),
        }
        self.add_bout(
            f"{recording}#{index}",
            group,
            [s.label for s in kept],
            [s.onset - start for s in kept],
            [None if s.offset is None else s.offset - s.onset for s in kept],
            attributes,
        )

    @property
    def events(self) -> int:
        return len(self._columns["code"])

    def ingested(self, adapter: str, settings: dict[str, Any]) -> Ingested:
        frame = pl.DataFrame(
            {
                **self._columns,
                "kind": ["syllable"] * self.events,
                **self._attribute_values,
            },
            schema_overrides={
                "entity": pl.String,
                "group": pl.String,
                "time": pl.Float64,
                "order": pl.Int64,
                "code": pl.String,
                "value": pl.Float64,
                **{a: _attribute_type(a) for a in self.attributes},
            },
        )
        accounted = self.events + len(self.rejects)
        if accounted != self.rows_read:  # a bug in an adapter, never the user's input
            raise AssertionError(f"{adapter}: {self.rows_read} rows read but {accounted} placed")
        return Ingested(
            events=EventTable.from_frame(frame, self.attributes),
            rejects=self.rejects,
            rows_read=self.rows_read,
            adapter=adapter,
            settings=settings,
            notes=[*self.notes, *label_notes(frame, settings.get("options", {}))],
        )


def _attribute_type(name: str) -> pl.DataType:
    return _NUMERIC_ATTRIBUTES.get(name, pl.String())


_NUMERIC_ATTRIBUTES: dict[str, pl.DataType] = {"bout_start_s": pl.Float64()}


def check_times(
    onset: float, offset: float | None, file: Path, row: int, columns: tuple[str, str]
) -> None:
    """Times must be finite, non-negative, and not reversed."""
    if onset < 0:
        raise InputError(f"negative onset {onset:g}", file=file, row=row, column=columns[0])
    if offset is not None and offset < onset:
        raise InputError(
            f"offset {offset:g} is before onset {onset:g} (reversed times)",
            file=file,
            row=row,
            column=columns[1],
        )


# A Bengalese finch syllable lasts 10-300 ms and even canary phrases a second or two; a
# median of more than this many "seconds" means the column holds another unit.
MAX_PLAUSIBLE_MEDIAN_DURATION_S = 5.0


def check_seconds_plausible(syllables: Sequence[Syllable], file: Path, onset_column: str) -> None:
    """Catch the DAS trap: columns named seconds that hold milliseconds.

    DAS exports `start_seconds,stop_seconds` in milliseconds, with rows not sorted by
    onset; read as seconds every syllable would last a minute. Raise and say how to fix
    it rather than silently mis-time the song.
    """
    durations = sorted(s.offset - s.onset for s in syllables if s.offset is not None)
    if not durations:
        return
    median = durations[len(durations) // 2]
    if median <= MAX_PLAUSIBLE_MEDIAN_DURATION_S:
        return
    onsets = [s.onset for s in syllables]
    unsorted = any(b < a for a, b in zip(onsets, onsets[1:], strict=False))
    also = "; rows are also not sorted by onset, as in DAS exports" if unsorted else ""
    raise InputError(
        f"column {onset_column!r} looks like milliseconds (median duration {median:.1f} "
        f"'seconds' per syllable{also}); pass --option time_unit=ms "
        "(or check_units=false if these really are seconds)",
        file=file,
        column=onset_column,
    )
