"""Generated trajectories as a MEDS dataset that ACES and MEDS tools read like any other.

Each sample becomes its own subject (new `subject_id`s 0, 1, ... in prompt, then sample,
order) whose rows are the prompt's history followed by the generated continuation:
ACES evaluates windows around a trigger (`input` from the start of the record, a `gap`,
a `target`), so the history the model was given must be there for the labels to mean
what they mean on real data. Times:

- the prompt's events keep their real times when the prompt is a corpus sequence's
  prefix: the corpus's first time plus the token's `times.bin` offset (float32 seconds,
  exact to the second for records up to 194 days; 64 s steps at 10 years). Without
  `times.bin`, or for prompts given as tokens, times are rebuilt from the time tokens
  from the sequence's first time (token prompts: `seqlm.export.meds.DEFAULT_START`);
- the prediction time is the time of the last timed prompt event (the start, when the
  prompt has none); the continuation's events follow it by its time tokens (interval
  centres, as `seqlm.export.meds` rebuilds times). An event generated with no time token
  before it shares the prediction time, so an ACES window ending inclusively at the
  prediction time counts it as history, as MEDS's time resolution says it must.

Values and codes come only from vocabulary tokens (bin centres; unknowns are written
under their token's name, `LAB//[UNK]`), so no code below the corpus's privacy threshold
can appear. The history is the tokenized one (its values are bin centres too).

`metadata/generated_subjects.parquet` maps each generated subject back: `prompt`,
`sample`, `prompt_seq_id`, `prompt_subject_id` (the real MEDS subject id; null for
prompts not taken from the corpus), `prediction_time`, `split` (the prompt subject's;
`held_out` for other prompts), `stop_reason`, `generated_seconds` (what the sample's time
tokens add up to, exactly as its MEDS times were rebuilt) and token counts.
`labels_at_prediction_times` keeps the ACES labels that sit at those prediction times.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

import numpy as np
import polars as pl

from seqlm.corpora_adapters.meds import BIRTH_CODE
from seqlm.corpus.store import Corpus
from seqlm.errors import InputError
from seqlm.export.meds import (
    DEFAULT_START,
    TrajectoryExporter,
    corpus_static_kinds,
    epoch_us,
    rows_frame,
    time_token_microseconds,
)
from seqlm.export.meds_dataset import METADATA_FOLDER, write_meds_folder

GENERATED_SUBJECTS_FILE = "generated_subjects.parquet"
OTHER_PROMPTS_SPLIT = "held_out"
MAPPING_SCHEMA: dict[str, pl.DataType] = {
    "subject_id": pl.Int64(),
    "prompt": pl.Int64(),
    "sample": pl.Int64(),
    "prompt_seq_id": pl.Int64(),
    "prompt_subject_id": pl.Int64(),
    "prediction_time": pl.Datetime("us"),
    "split": pl.String(),
    "stop_reason": pl.String(),
    "generated_seconds": pl.Float64(),
    "prompt_tokens": pl.Int64(),
    "generated_tokens": pl.Int64(),
}


class Generation(Protocol):
    """The samples of one prompt, as `seqlm.evaluation.generate.Generation` holds them
    (export sits below evaluation, so it names only the fields it reads)."""

    prompt: np.ndarray
    samples: list[np.ndarray]
    stop_reasons: list[str]


@dataclass(frozen=True)
class PromptOrigin:
    """Where a prompt came from: the corpus sequence it is a prefix of, or None."""

    seq_id: int | None = None


@dataclass(frozen=True)
class _PromptContext:
    start: datetime
    times_us: np.ndarray | None
    subject: int | None
    split: str


def _integer_entity(entity: object) -> int | None:
    try:
        return int(str(entity))
    except ValueError:
        return None


def _prompt_context(corpus: Corpus, origin: PromptOrigin, prompt: np.ndarray) -> _PromptContext:
    """The clock start, real token times, subject and split of one prompt."""
    if origin.seq_id is None:
        return _PromptContext(DEFAULT_START, None, None, OTHER_PROMPTS_SPLIT)
    seq_id = int(origin.seq_id)
    sequence = np.asarray(corpus.sequence(seq_id))
    if prompt.size > sequence.size or not np.array_equal(sequence[: prompt.size], prompt):
        raise InputError(f"the prompt is not a prefix of corpus sequence {seq_id}")
    row = corpus.index.row(seq_id, named=True)
    first = row["first_time"]
    start = first if isinstance(first, datetime) else DEFAULT_START
    times_us = None
    if corpus.times is not None and isinstance(first, datetime) and corpus.time_unit == "s":
        offsets = np.asarray(corpus.sequence_times(seq_id)[: prompt.size], dtype=np.float64)
        times_us = epoch_us(first) + np.round(offsets * 1e6).astype(np.int64)
    return _PromptContext(start, times_us, _integer_entity(row["entity"]), str(row["split"]))


def _gap_microseconds(corpus: Corpus) -> np.ndarray:
    """Microseconds each token id adds to the clock (0 for all but time tokens)."""
    vocab = corpus.vocabulary
    added = np.zeros(len(vocab), dtype=np.int64)
    for token, microseconds in time_token_microseconds(vocab).items():
        added[vocab.token_to_id[token]] = microseconds
    return added


def generated_meds(
    generations: Sequence[Generation], corpus: Corpus, origins: Sequence[PromptOrigin]
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """MEDS rows of every sample (prompt history + continuation) and the mapping table
    (`MAPPING_SCHEMA`), one subject per sample."""
    if len(origins) != len(generations):
        raise ValueError(f"{len(origins)} prompt origins for {len(generations)} prompts")
    exporter = TrajectoryExporter(corpus.vocabulary, corpus_static_kinds(corpus.manifest))
    gaps = _gap_microseconds(corpus)
    rows: list[tuple] = []
    mapping: list[dict[str, object]] = []
    for number, (generation, origin) in enumerate(zip(generations, origins, strict=True)):
        prompt = np.asarray(generation.prompt, dtype=np.int64)
        context = _prompt_context(corpus, origin, prompt)
        for sample_number, sample in enumerate(generation.samples):
            subject = len(mapping)
            found, prediction_us = exporter.continuation_rows(
                prompt, sample, subject, context.start, context.times_us
            )
            rows.extend(found)
            mapping.append(
                {
                    "subject_id": subject,
                    "prompt": number,
                    "sample": sample_number,
                    "prompt_seq_id": origin.seq_id,
                    "prompt_subject_id": context.subject,
                    "prediction_time": prediction_us,
                    "split": context.split,
                    "stop_reason": generation.stop_reasons[sample_number],
                    "generated_seconds": int(gaps[np.asarray(sample, dtype=np.int64)].sum()) / 1e6,
                    "prompt_tokens": int(prompt.size),
                    "generated_tokens": int(len(sample)),
                }
            )
    schema = {**MAPPING_SCHEMA, "prediction_time": pl.Int64()}
    table = pl.DataFrame(mapping, schema=schema, orient="row")
    table = table.with_columns(pl.col("prediction_time").cast(pl.Datetime("us")))
    return rows_frame(rows), table


def code_descriptions(corpus: Corpus) -> dict[str, str]:
    """Descriptions seqlm can give: unknown tokens and the birth row it dates."""
    vocab = corpus.vocabulary
    threshold = vocab.scheme.min_entities
    described = {
        token: f"seqlm unknown token: a code seen in fewer than {threshold} train subjects "
        "of the corpus (its real code is not kept)"
        for token, role in zip(vocab.tokens, vocab.roles, strict=True)
        if role == "unknown"
    }
    described[BIRTH_CODE] = "birth, dated from the AGE token's bin centre by seqlm"
    return described


def write_generated_meds(
    generations: Sequence[Generation],
    corpus: Corpus,
    origins: Sequence[PromptOrigin],
    folder: str | Path,
    *,
    name: str,
    version: str,
) -> Path:
    """Write the samples as a MEDS dataset at `folder` (data/, metadata/ and the mapping
    `metadata/generated_subjects.parquet`); returns the folder."""
    rows, mapping = generated_meds(generations, corpus, origins)
    splits = dict(zip(mapping["subject_id"].to_list(), mapping["split"].to_list(), strict=True))
    folder = write_meds_folder(
        rows, folder, splits, name=name, version=version, descriptions=code_descriptions(corpus)
    )
    mapping.write_parquet(folder / METADATA_FOLDER / GENERATED_SUBJECTS_FILE)
    return folder


def read_generated_subjects(folder: str | Path) -> pl.DataFrame:
    """The mapping table of a generated MEDS dataset."""
    path = Path(folder) / METADATA_FOLDER / GENERATED_SUBJECTS_FILE
    if not path.is_file():
        raise InputError("not a generated MEDS dataset (no mapping file)", file=path)
    return pl.read_parquet(path, glob=False)


def labels_at_prediction_times(labels: pl.DataFrame, folder: str | Path) -> pl.DataFrame:
    """The labels (MEDS label schema, e.g. from ACES) of generated subjects whose
    prediction time is their prompt's, joined with the mapping (prompt, sample,
    prompt_subject_id, ...). Labels at triggers inside the history or the continuation
    are left out."""
    mapping = read_generated_subjects(folder)
    keys = labels.with_columns(
        pl.col("subject_id").cast(pl.Int64), pl.col("prediction_time").cast(pl.Datetime("us"))
    )
    return keys.join(mapping, on=["subject_id", "prediction_time"], how="inner").sort("subject_id")


__all__ = [
    "GENERATED_SUBJECTS_FILE",
    "MAPPING_SCHEMA",
    "PromptOrigin",
    "code_descriptions",
    "generated_meds",
    "labels_at_prediction_times",
    "read_generated_subjects",
    "write_generated_meds",
]
