"""What an analysis of a trained run reads: the run's model beside its corpus, the index
rows and sequences it analyses, and the layers, heads and numbers chosen on the command
line (`0,2,5-7`, `8,32,128`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import torch

from seqlm.analysis.attention_capture import check_model_fits_corpus, load_analysis_model
from seqlm.corpus import load_corpus
from seqlm.corpus.store import Corpus
from seqlm.errors import ConfigError
from seqlm.model import GPT

# The interpretation gate of an analysis: given the opened corpus, check the run (and say
# so to the reader) and return the caption its figures carry ('' when none is needed).
CautionGate = Callable[[Corpus], str]


def no_caution(corpus: Corpus) -> str:
    """The gate that checks nothing: no caption."""
    return ""


def resolve_device(choice: str, *, strict: bool = False) -> str:
    """ "auto" -> cuda when available, else cpu; any other name as given, or, when
    `strict`, only cpu or cuda (a ConfigError naming --device otherwise)."""
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if strict and choice not in ("cpu", "cuda"):
        raise ConfigError(f"--device must be auto, cpu or cuda, not {choice!r}")
    return choice


def load_model_and_corpus(
    run: Path, corpus_path: Path, weights: str, device: str
) -> tuple[GPT, Corpus]:
    """The run's model (`weights`: auto, best or latest) on `device` and the corpus at
    `corpus_path`, checked to share one vocabulary."""
    model = load_analysis_model(run, which=weights, device=device)
    corpus = load_corpus(corpus_path)
    check_model_fits_corpus(model, corpus)
    return model, corpus


def select_index(
    index: pl.DataFrame,
    split: str,
    *,
    per_group: int | None = None,
    group_column: str | None = None,
    max_tokens: int | None = None,
    seed: int = 0,
) -> pl.DataFrame:
    """Index rows of `split` ("all" = every split): at most `per_group` sequences of each
    value of `group_column`, or sequences up to `max_tokens` tokens, drawn at random
    (seeded), returned in seq_id order."""
    rows = index if split == "all" else index.filter(pl.col("split") == split)
    if rows.height == 0:
        splits = sorted(str(s) for s in index["split"].unique().to_list())
        raise ConfigError(f"no sequences in split {split!r}; the corpus has {splits} (or all)")
    if group_column is not None and group_column not in rows.columns:
        raise ConfigError(f"no index column {group_column!r}; columns: {rows.columns}")
    rows = rows.sample(fraction=1.0, shuffle=True, seed=seed)
    if per_group is not None and group_column is not None:
        rows = rows.filter(pl.int_range(pl.len()).over(group_column) < per_group)
    elif per_group is not None:
        rows = rows.head(per_group)
    if max_tokens is not None:
        rows = rows.filter((pl.col("length").cum_sum() - pl.col("length")) < max_tokens)
    return rows.sort("seq_id")


def corpus_sequences(corpus: Corpus, rows: pl.DataFrame) -> list[np.ndarray]:
    """The token ids (int64) of the sequences of `rows`, in their order."""
    return [np.asarray(corpus.sequence(i), dtype=np.int64) for i in rows["seq_id"].to_list()]


def parse_indices(text: str | None, upper: int, name: str) -> list[int] | None:
    """'0,2,5-7' -> [0, 2, 5, 6, 7]; None or 'all' -> None. Each must be < upper."""
    if text is None or text.strip().lower() == "all":
        return None
    chosen: list[int] = []
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part:
                low, high = (int(x) for x in part.split("-", 1))
                chosen.extend(range(low, high + 1))
            else:
                chosen.append(int(part))
        except ValueError:
            raise ConfigError(f"--{name}: {part!r} is not a number or a range like 2-5") from None
    bad = [i for i in chosen if not 0 <= i < upper]
    if bad or not chosen:
        raise ConfigError(f"--{name}: {bad or text!r} out of range 0..{upper - 1}")
    return sorted(set(chosen))


def parse_numbers(text: str | None, kind: type, name: str) -> tuple | None:
    """'8,32,128' -> (8, 32, 128) of `kind`; None -> None."""
    if text is None:
        return None
    try:
        return tuple(kind(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ConfigError(f"--{name}: {text!r} is not a comma-separated list of numbers") from None
