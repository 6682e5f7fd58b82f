"""Everything `seqlm corpus info` shows, gathered in one call: the corpus summary, the
clinical figures of a MEDS corpus, and counts by chosen index columns."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import polars as pl

from seqlm.corpus.breakdown import counts_by
from seqlm.corpus.clinical_info import ClinicalInfo, clinical_info
from seqlm.corpus.info import WINDOW_CONTEXTS, CorpusInfo, corpus_info
from seqlm.corpus.merge_checks import describe_merge_checks
from seqlm.vocabularies.text_values import FATE_WORDS


@dataclass
class CorpusReport:
    """`info` for every corpus; `clinical` for a MEDS one; `breakdown` (one row per
    combination of the `by` columns) when columns were asked for."""

    info: CorpusInfo
    clinical: ClinicalInfo | None
    breakdown: pl.DataFrame | None
    by: tuple[str, ...]

    def merge_check_lines(self) -> list[str]:
        """`warning: ...` / `note: ...` lines when entities or codes look merged."""
        return describe_merge_checks(self.info.merge_checks)

    def value_lines(self) -> list[str]:
        """What became of the text and numeric values, one line each (none for corpora
        written before they were counted)."""
        return value_lines(self.info.values)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: the summary's fields, plus `clinical` and `counts_by` when present."""
        payload = asdict(self.info)
        if self.clinical is not None:
            payload["clinical"] = self.clinical.to_dict()
        if self.breakdown is not None:
            payload["counts_by"] = self.breakdown.to_dicts()
        return payload


def corpus_report(
    corpus: str | Path,
    by: Sequence[str] = (),
    top: int = 20,
    contexts: tuple[int, ...] = WINDOW_CONTEXTS,
) -> CorpusReport:
    """The report of the corpus folder `corpus`, with its `top` most frequent tokens and
    the record time windows of each of `contexts` tokens cover."""
    info = corpus_info(corpus, top=top, contexts=contexts)
    clinical = clinical_info(corpus) if info.adapter == "meds" else None
    breakdown = counts_by(corpus, by) if by else None
    return CorpusReport(info, clinical, breakdown, tuple(by))


def value_lines(values: dict[str, int]) -> list[str]:
    """`values` (manifest) in words: every text row used or counted by reason."""
    if not values:
        return []
    parts = [
        f"{values.get(key, 0):,} {words}"
        for key, words in FATE_WORDS.items()
        if values.get(key, 0) or key in ("text_in_token", "text_as_number")
    ]
    lines = [f"text values: {values.get('text_rows', 0):,} rows: " + "; ".join(parts)]
    numeric = values.get("numeric_rows", 0)
    lines.append(
        f"numeric values: {numeric:,} rows: {values.get('numeric_binned', 0):,} in value bins, "
        f"{values.get('numeric_not_binned', 0):,} not used (code without value bins, or "
        "scheme.value_mode = ignore)"
    )
    return lines
