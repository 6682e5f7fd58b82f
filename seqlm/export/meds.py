"""Token sequences back to MEDS rows, so generated trajectories can be scored by MEDS tools.

`tokens_to_meds(tokens, vocab)` turns one sequence (ids or strings: a corpus sequence or
a model's generation) into MEDS rows `subject_id, time, code, numeric_value,
text_value`; `corpus_to_meds` does it for corpus sequences, starting each at its first
event's real time. `write_meds_dataset` writes rows as a MEDS folder, and
`meds_rows_to_tokens` reads such rows back through the `meds` adapter and the same
vocabulary: for a sequence the corpus wrote, tokens -> rows -> tokens is exact.

How tokens become rows:

- times: the first timed event is at `start`; each time-gap token adds the centre of
  its interval, except the last (open) token, which adds exactly its edge (the
  vocabulary writes a long gap as repeats of the last token plus a remainder token),
  so the rebuilt gap gives back the same time tokens. Events with no time token between
  them share a time.
- values: a fused `CODE//Q7` or a separate `VALUE//Q7` becomes the centre of bin 7 (the
  median of the train values in it), as float32 and nudged into the bin if rounding to
  float32 pushes it out.
- static prefix: leading tokens whose kind is static (`GENDER`, `AGE`, or the kinds the
  adapter saw with null time) become rows with null time. An `AGE//Qk` token becomes a
  `MEDS_BIRTH` row dated the bin's centre (in years) before the first timed event, in
  the AGE token's place among the static rows, unless `age_as_birth=False`.
- unknowns (`LAB//[UNK]`, `[UNK]`) are written as codes of that name; `[BOS]`, `[PAD]`,
  `[SEP]` are skipped and `[EOS]` ends the sequence. A `VALUE//Qk` token with no binned
  code before it is dropped (it stands for nothing).
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl

from seqlm.corpora_adapters.meds import (
    AGE_CODE,
    BIRTH_CODE,
    SECONDS_PER_YEAR,
    MedsMetadataWarning,
    MedsOptions,
    read_meds,
)
from seqlm.errors import InputError
from seqlm.export.meds_dataset import write_meds_folder
from seqlm.vocabularies.scheme import BOS_ID, EOS_ID, PAD_ID, SEP_ID, TEXT_UNK, UNK
from seqlm.vocabularies.vocabulary import TokenInfo, Vocabulary

DEFAULT_START = datetime(2000, 1, 1)
DEFAULT_STATIC_KINDS: tuple[str, ...] = ("GENDER", AGE_CODE)
MEDS_ROW_SCHEMA: dict[str, pl.DataType] = {
    "subject_id": pl.Int64(),
    "time": pl.Datetime("us"),
    "code": pl.String(),
    "numeric_value": pl.Float32(),
    "text_value": pl.String(),
}
_MICROSECONDS_PER_YEAR = SECONDS_PER_YEAR * 1e6


def float32_inside(value: float, low: float, high: float) -> float:
    """`value` as the nearest float32 in `[low, high)`, so it reads back into the same bin."""
    candidate = np.float32(value)
    for _ in range(8):
        if low <= float(candidate) < high:
            return float(candidate)
        toward = np.float32(np.inf) if float(candidate) < low else np.float32(-np.inf)
        candidate = np.nextafter(candidate, toward)
    return float(np.float32(value))


def time_token_microseconds(vocab: Vocabulary) -> dict[str, int]:
    """What each time-gap token adds to the clock: its interval's centre, or exactly the
    lower edge for the last edge's token (which the vocabulary repeats for long gaps)
    and for the open-ended long-gap token."""
    gaps = vocab.scheme.time_gap_tokens()
    if gaps is None:
        return {}
    added = {}
    open_ended = {gaps.tokens[len(gaps.edges) - 1], gaps.long_token}
    for token in gaps.tokens:
        if token not in vocab.token_to_id:  # a corpus older than the long-gap token
            continue
        low, high = gaps.interval(token)
        seconds = low if token in open_ended else (low + high) / 2
        added[token] = round(seconds * 1e6)
    return added


def _birth_microseconds(first_us: int, age: float, low: float, high: float) -> int:
    """A birth time whose age at `first_us` (as the adapter computes it) lies in the bin."""
    birth = first_us - round(age * _MICROSECONDS_PER_YEAR)
    for _ in range(16):
        years = (first_us - birth) / _MICROSECONDS_PER_YEAR
        if years < low:
            birth -= 1
        elif years >= high:
            birth += 1
        else:
            break
    return birth


class _SequenceWriter:
    """Walks one token sequence and collects its rows (times in microseconds)."""

    def __init__(
        self, vocab: Vocabulary, static_kinds: frozenset[str], gaps: Mapping[str, int]
    ) -> None:
        self.vocab = vocab
        self.static_kinds = static_kinds
        self.gaps = gaps
        self.rows: list[dict] = []  # code, time_us (None = static), value, text, bin range
        self.in_prefix = True
        self.clock: int | None = None
        self.pending = 0

    def add(self, info: TokenInfo, start_us: int, known_us: int | None = None) -> None:
        """One token; `known_us` is its event's real time when known (a prompt's tokens)."""
        if info.role == "time":
            self.in_prefix = False
            self.pending += self.gaps.get(info.token, 0)
        elif info.role == "value":
            self._add_separate_value(info.bin)
        elif info.role in ("event", "unknown"):
            self._add_event(info, start_us, known_us)

    def _add_event(self, info: TokenInfo, start_us: int, known_us: int | None) -> None:
        if info.role == "unknown" and info.code is not None:
            # A code's text unknown (`CODE//[TEXT_UNK]`): the code with a text the
            # vocabulary does not hold, which reads back as the same token.
            code, kind, text = info.code, info.code.split("//", 1)[0], TEXT_UNK
        elif info.role == "unknown":
            # The kind unescaped (`Height (Inches)//[UNK]`, not the token's `▁`), so the
            # row reads back as the same unknown.
            code = info.token if info.kind is None else f"{info.kind}//{UNK}"
            kind, text = info.kind, None
        else:
            code, text = info.code or info.token, info.text
            kind = code.split("//", 1)[0]
        static = self.in_prefix and kind in self.static_kinds
        time_us = None
        if not static:
            self.in_prefix = False
            if known_us is not None:  # a real time replaces the rebuilt one
                self.clock = known_us
            else:
                self.clock = (start_us if self.clock is None else self.clock) + self.pending
            self.pending = 0
            time_us = self.clock
        value = None
        # Only fused tokens carry a value; in separate mode it is the next VALUE token.
        fused = self.vocab.scheme.value_mode == "fused"
        if fused and info.bin_centre is not None and info.bin_range is not None:
            value = (info.bin_centre, *info.bin_range)
        self.rows.append({"code": code, "time": time_us, "value": value, "text": text})

    def _add_separate_value(self, bin_number: int | None) -> None:
        if not self.rows or bin_number is None:
            return
        row = self.rows[-1]
        bins = self.vocab.value_bins.get(row["code"])
        if bins is None or row["value"] is not None or not 1 <= bin_number <= bins.n_bins:
            return
        row["value"] = (bins.centres[bin_number - 1], *bins.interval(bin_number))

    def finish(self, subject_id: int, start_us: int, age_as_birth: bool) -> list[tuple]:
        first_us = self.clock if self.clock is not None else start_us
        first_timed = next((r["time"] for r in self.rows if r["time"] is not None), first_us)
        out = []
        for row in self.rows:
            code, time_us, value = row["code"], row["time"], row["value"]
            number = None
            if value is not None:
                centre, low, high = value
                number = float32_inside(centre, low, high)
            if age_as_birth and code == AGE_CODE and time_us is None and value is not None:
                centre, low, high = value
                code, number = BIRTH_CODE, None
                time_us = _birth_microseconds(first_timed, centre, low, high)
            out.append((subject_id, time_us, code, number, row["text"]))
        return out


def epoch_us(moment: datetime) -> int:
    """Microseconds since 1970-01-01 of a naive (UTC) datetime."""
    return (moment - datetime(1970, 1, 1)) // timedelta(microseconds=1)


class TrajectoryExporter:
    """Turns token sequences of one vocabulary into MEDS rows (caches per token id)."""

    def __init__(
        self,
        vocab: Vocabulary,
        static_kinds: Collection[str] = DEFAULT_STATIC_KINDS,
        age_as_birth: bool = True,
    ) -> None:
        self.vocab = vocab
        self.static_kinds = frozenset(static_kinds)
        self.age_as_birth = age_as_birth
        self._gaps = time_token_microseconds(vocab)
        self._infos: dict[int, TokenInfo] = {}

    def _ids(self, tokens: Sequence[str] | Sequence[int] | np.ndarray) -> np.ndarray:
        array = np.asarray(tokens)
        if array.size == 0:
            return np.empty(0, dtype=np.int64)
        if np.issubdtype(array.dtype, np.integer):
            self.vocab.decode(array[:1])  # raises InputError for ids outside the vocabulary
            if array.min() < 0 or array.max() >= len(self.vocab):
                raise InputError(f"token id outside 0..{len(self.vocab) - 1}")
            return array.astype(np.int64)
        return self.vocab.encode([str(t) for t in tokens])

    def _info(self, token_id: int) -> TokenInfo:
        info = self._infos.get(token_id)
        if info is None:
            info = self._infos[token_id] = self.vocab.token_info(token_id)
        return info

    def rows(
        self,
        tokens: Sequence[str] | Sequence[int] | np.ndarray,
        subject_id: int = 0,
        start: datetime = DEFAULT_START,
    ) -> list[tuple]:
        """(subject_id, time in epoch microseconds or None, code, value, text) tuples."""
        start_us = epoch_us(start)
        writer = _SequenceWriter(self.vocab, self.static_kinds, self._gaps)
        self._feed(writer, self._ids(tokens), start_us)
        return writer.finish(subject_id, start_us, self.age_as_birth)

    def continuation_rows(
        self,
        prompt: Sequence[int] | np.ndarray,
        sample: Sequence[int] | np.ndarray,
        subject_id: int,
        start: datetime = DEFAULT_START,
        prompt_times_us: Sequence[int] | np.ndarray | None = None,
    ) -> tuple[list[tuple], int]:
        """Rows of a prompt and its generated continuation, and the prediction time.

        With `prompt_times_us` (epoch microseconds, one per prompt token) the prompt's
        events keep those real times; the continuation's events follow the last prompt
        event by its time tokens. The prediction time (epoch microseconds) is the time of
        the last timed prompt event, or `start` when the prompt has none.
        """
        start_us = epoch_us(start)
        writer = _SequenceWriter(self.vocab, self.static_kinds, self._gaps)
        prompt_ids = self._ids(prompt)
        if prompt_times_us is not None and len(prompt_times_us) != prompt_ids.size:
            raise InputError(f"{len(prompt_times_us)} prompt times for {prompt_ids.size} tokens")
        going = self._feed(writer, prompt_ids, start_us, prompt_times_us)
        prediction_us = writer.clock if writer.clock is not None else start_us
        if going:
            self._feed(writer, self._ids(sample), start_us)
        return writer.finish(subject_id, start_us, self.age_as_birth), prediction_us

    def _feed(
        self,
        writer: _SequenceWriter,
        ids: np.ndarray,
        start_us: int,
        known_us: Sequence[int] | np.ndarray | None = None,
    ) -> bool:
        """Add tokens to `writer`; False when an `[EOS]` ended the sequence."""
        for position, token_id in enumerate(ids.tolist()):
            if token_id == EOS_ID:
                return False
            if token_id in (BOS_ID, PAD_ID, SEP_ID):
                continue
            known = None if known_us is None else int(known_us[position])
            writer.add(self._info(token_id), start_us, known)
        return True


def rows_frame(rows: list[tuple]) -> pl.DataFrame:
    """MEDS rows as tuples (time in epoch microseconds) to a frame of MEDS_ROW_SCHEMA."""
    frame = pl.DataFrame(rows, schema={**MEDS_ROW_SCHEMA, "time": pl.Int64()}, orient="row")
    return frame.with_columns(pl.col("time").cast(pl.Datetime("us")))


def tokens_to_meds(
    tokens: Sequence[str] | Sequence[int] | np.ndarray,
    vocab: Vocabulary,
    *,
    subject_id: int = 0,
    start: datetime = DEFAULT_START,
    static_kinds: Collection[str] = DEFAULT_STATIC_KINDS,
    age_as_birth: bool = True,
) -> pl.DataFrame:
    """MEDS rows (subject_id, time, code, numeric_value, text_value) of one sequence."""
    exporter = TrajectoryExporter(vocab, static_kinds, age_as_birth)
    return rows_frame(exporter.rows(tokens, subject_id, start))


def corpus_static_kinds(manifest: Mapping) -> tuple[str, ...]:
    """The static kinds a `meds` corpus recorded, else the defaults."""
    settings = manifest.get("source", {}).get("settings", {})
    kinds = settings.get("static_kinds")
    return tuple(kinds) if kinds else DEFAULT_STATIC_KINDS


def corpus_to_meds(
    corpus,
    seq_ids: Sequence[int] | None = None,
    *,
    subject_ids: Literal["entity", "seq_id"] = "entity",
    age_as_birth: bool = True,
) -> pl.DataFrame:
    """MEDS rows of corpus sequences (all by default), each starting at its first time.

    `subject_ids = "entity"` uses the corpus entity (a MEDS subject id, an integer);
    `"seq_id"` numbers the sequences instead.
    """
    index = corpus.index
    ids = range(index.height) if seq_ids is None else seq_ids
    static_kinds = corpus_static_kinds(corpus.manifest)
    exporter = TrajectoryExporter(corpus.vocabulary, static_kinds, age_as_birth)
    rows: list[tuple] = []
    for seq_id in ids:
        row = index.row(int(seq_id), named=True)
        first = row["first_time"]
        start = first if isinstance(first, datetime) else DEFAULT_START
        if subject_ids == "seq_id":
            subject = int(seq_id)
        else:
            try:
                subject = int(row["entity"])
            except (TypeError, ValueError):
                raise InputError(
                    f"entity of sequence {seq_id} is not an integer subject id; "
                    "use subject_ids='seq_id'",
                    column="entity",
                ) from None
        rows.extend(exporter.rows(corpus.sequence(int(seq_id)), subject, start))
    return rows_frame(rows)


def write_meds_dataset(
    rows: pl.DataFrame, folder: str | Path, split: str = "held_out", name: str = "seqlm export"
) -> Path:
    """Write MEDS rows as a MEDS 0.4 folder, every subject in `split`: `data/<split>/0.parquet`
    and `metadata/` (`seqlm.export.meds_dataset.write_meds_folder`)."""
    subjects = rows["subject_id"].unique().to_list()
    return write_meds_folder(
        rows, folder, dict.fromkeys(subjects, split), name=name, version="seqlm export"
    )


def meds_rows_to_tokens(
    rows: pl.DataFrame, vocab: Vocabulary, options: MedsOptions | None = None
) -> dict[int, list[str]]:
    """Read MEDS rows back through the `meds` adapter and `vocab`: tokens per subject.

    The inverse check of `tokens_to_meds`; `options` should be the ones the corpus was
    built with (the default options by default).
    """
    with tempfile.TemporaryDirectory() as temporary:
        root = write_meds_dataset(rows, Path(temporary) / "meds")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MedsMetadataWarning)
            ingested = read_meds([root], options or MedsOptions(split_source="none"))
        tokens = vocab.tokenize(ingested.events).collect()
    grouped = tokens.group_by("entity", maintain_order=True).agg(pl.col("token"))
    return {int(e): list(t) for e, t in grouped.iter_rows()}


__all__ = [
    "DEFAULT_START",
    "TrajectoryExporter",
    "DEFAULT_STATIC_KINDS",
    "MEDS_ROW_SCHEMA",
    "corpus_static_kinds",
    "corpus_to_meds",
    "float32_inside",
    "meds_rows_to_tokens",
    "rows_frame",
    "time_token_microseconds",
    "tokens_to_meds",
    "write_meds_dataset",
]
