"""`clinical_info`: what `seqlm corpus info` adds for clinical (MEDS) corpora.

`corpus_info` already gives the general figures (counts, lengths, unknown and time-token
shares, the most frequent binned codes). Clinical corpora are judged on a few more, all
aggregates (no subject identifier, no code rarer than the vocabulary kept):

- tokens per subject, per split (mean, median, 95th percentile);
- the share of each kind's tokens that are its unknown (`LAB//[UNK]` among `LAB`
  tokens): how much the privacy threshold and the train-only vocabulary cost;
- the share of time-gap tokens and of the static prefix (demographics);
- the value-bin edges of the most frequent lab codes (kind `LAB` by default);
- what the adapter recorded: split source, codes missing from the dataset's metadata.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from seqlm.corpus.info import token_counts
from seqlm.corpus.store import Corpus, load_corpus
from seqlm.vocabularies.vocabulary import Vocabulary

TIME_KIND = "[TIME]"
VALUE_KIND = "[VALUE]"
# Static prefixes (demographics) are short; they are looked for in this many tokens, for
# this many sequences at a time.
PREFIX_WINDOW = 64
PREFIX_CHUNK = 65_536


@dataclass(frozen=True)
class SubjectTokens:
    split: str
    subjects: int
    mean: float
    median: float
    p95: float


@dataclass(frozen=True)
class KindShare:
    """One kind's share of all tokens, and the share of its tokens that are unknowns."""

    kind: str
    tokens: int
    share: float
    unknown_share: float


@dataclass(frozen=True)
class LabBins:
    code: str
    tokens: int
    edges: tuple[float, ...]
    centres: tuple[float, ...]


@dataclass(frozen=True)
class ClinicalInfo:
    tokens_per_subject: tuple[SubjectTokens, ...]
    kinds: tuple[KindShare, ...]
    unknown_share: float
    time_token_share: float
    static_prefix_share: float
    lab_bins: tuple[LabBins, ...]
    min_entities: int
    merged_tokens: int
    split_source: str | None
    codes_missing_from_metadata: int | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def token_kinds(vocab: Vocabulary) -> list[str | None]:
    """The kind of each id: a data token's code family, an unknown's kind, `[TIME]`,
    `[VALUE]`, or None for special tokens."""
    kinds: list[str | None] = []
    for token, role in zip(vocab.tokens, vocab.roles, strict=True):
        if role == "event":
            entry = vocab.data_tokens.get(token)
            code = entry.code if entry is not None else token
            kinds.append(code.split("//", 1)[0])
        elif role == "unknown":
            # `KIND//[UNK]` (kind with spaces restored, as data tokens' codes have them);
            # the plain `[UNK]` has no kind and counts as its own.
            # A code's text unknown (`LAB//x//[TEXT_UNK]`) counts with its code's family.
            info = vocab.token_info(token)
            family = info.code.split("//", 1)[0] if info.code is not None else None
            kinds.append(family or info.kind or token)
        elif role == "time":
            kinds.append(TIME_KIND)
        elif role == "value":
            kinds.append(VALUE_KIND)
        else:
            kinds.append(None)
    return kinds


def _tokens_per_subject(index: pl.DataFrame) -> tuple[SubjectTokens, ...]:
    rows = []
    for split in ("train", "tuning", "held_out", "all"):
        part = index if split == "all" else index.filter(pl.col("split") == split)
        if part.height == 0:
            continue
        lengths = part["length"].to_numpy()
        rows.append(
            SubjectTokens(
                split=split,
                subjects=part.height,
                mean=float(lengths.mean()),
                median=float(np.median(lengths)),
                p95=float(np.percentile(lengths, 95)),
            )
        )
    return tuple(rows)


def _static_prefix_tokens(corpus: Corpus, static_kinds: set[str], kinds: list) -> int:
    """Tokens of the static prefix (after `[BOS]`, kinds in `static_kinds`), all subjects.

    Vectorised over chunks of sequences; a prefix is counted up to `PREFIX_WINDOW` tokens.
    """
    is_static = np.array([k in static_kinds for k in kinds], dtype=bool)
    starts = corpus.index["offset"].to_numpy() + 1  # after [BOS]
    lengths = corpus.index["length"].to_numpy() - 2  # without [BOS] and [EOS]
    steps = np.arange(PREFIX_WINDOW)
    total = 0
    for chunk in range(0, len(starts), PREFIX_CHUNK):
        first, size = starts[chunk : chunk + PREFIX_CHUNK], lengths[chunk : chunk + PREFIX_CHUNK]
        inside = steps[None, :] < size[:, None]
        positions = np.where(inside, first[:, None] + steps[None, :], 0)
        flags = is_static[np.asarray(corpus.tokens[positions.ravel()]).reshape(positions.shape)]
        flags &= inside
        prefix = np.where(flags.all(axis=1), PREFIX_WINDOW, np.argmin(flags, axis=1))
        total += int(prefix.sum())
    return total


def clinical_info(
    corpus: Corpus | str | Path, lab_kind: str = "LAB", top: int = 10
) -> ClinicalInfo:
    """Clinical figures of a corpus (any adapter; the MEDS one records the most)."""
    if not isinstance(corpus, Corpus):
        corpus = load_corpus(corpus)
    vocab = corpus.vocabulary
    counts = token_counts(corpus)
    total = max(int(counts.sum()), 1)
    kinds = token_kinds(vocab)
    roles = np.array(vocab.roles)

    per_kind: dict[str, list[int]] = {}
    for token_id, kind in enumerate(kinds):
        if kind is None:
            continue
        entry = per_kind.setdefault(kind, [0, 0])
        entry[0] += int(counts[token_id])
        if roles[token_id] == "unknown":
            entry[1] += int(counts[token_id])
    kind_shares = tuple(
        KindShare(kind, n, n / total, unknown / n if n else 0.0)
        for kind, (n, unknown) in sorted(per_kind.items(), key=lambda kv: (-kv[1][0], kv[0]))
    )

    lab_counts: dict[str, int] = {}
    for token, entry in vocab.data_tokens.items():
        if entry.code in vocab.value_bins and entry.code.split("//", 1)[0] == lab_kind:
            lab_counts[entry.code] = lab_counts.get(entry.code, 0) + int(
                counts[vocab.token_to_id[token]]
            )
    frequent = sorted(lab_counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    lab_bins = tuple(
        LabBins(code, n, vocab.value_bins[code].edges, vocab.value_bins[code].centres)
        for code, n in frequent
    )

    settings = corpus.manifest.get("source", {}).get("settings", {})
    static_kinds = set(settings.get("static_kinds") or ("GENDER", "AGE"))
    return ClinicalInfo(
        tokens_per_subject=_tokens_per_subject(corpus.index),
        kinds=kind_shares,
        unknown_share=float(counts[roles == "unknown"].sum() / total),
        time_token_share=float(counts[roles == "time"].sum() / total),
        static_prefix_share=_static_prefix_tokens(corpus, static_kinds, kinds) / total,
        lab_bins=lab_bins,
        min_entities=vocab.scheme.min_entities,
        merged_tokens=vocab.merged_tokens,
        split_source=settings.get("split_source"),
        codes_missing_from_metadata=settings.get("codes_missing_from_metadata"),
    )
