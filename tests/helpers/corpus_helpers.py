"""Small event tables for the corpus tests, and the lesion strings read with polars."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from seqlm.corpora_adapters.base import Ingested, RejectLog
from seqlm.events import EventTable


def ingested(
    frame: pl.DataFrame,
    attributes: tuple[str, ...] = (),
    rejects: RejectLog | None = None,
    rows_read: int | None = None,
    settings: dict | None = None,
) -> Ingested:
    rejects = rejects if rejects is not None else RejectLog()
    if rows_read is None:
        rows_read = frame.height + len(rejects)
    return Ingested(
        events=EventTable.from_frame(frame, attributes),
        rejects=rejects,
        rows_read=rows_read,
        adapter="test",
        settings=settings or {"source": "unit test"},
    )


def clinic_frame(n_subjects: int = 30, seed: int = 0) -> pl.DataFrame:
    """Subjects with a static row, labs with values and a few timed diagnoses."""
    import numpy as np

    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_subjects):
        subject = f"subject{s:03d}"
        rows.append((subject, f"site{s % 3}", None, "GENDER", f"GENDER//{'FM'[s % 2]}", None))
        t = 0.0
        for _ in range(int(rng.integers(3, 12))):
            t += float(rng.exponential(3600.0))
            code = f"LAB//{rng.integers(0, 4)}//mg"
            rows.append((subject, f"site{s % 3}", t, "LAB", code, float(rng.normal(10, 3))))
        if s % 4 == 0:
            rows.append((subject, f"site{s % 3}", t + 86400.0, "DX", "DX//I10", None))
    return pl.DataFrame(
        rows,
        schema={
            "entity": pl.String,
            "group": pl.String,
            "time": pl.Float64,
            "kind": pl.String,
            "code": pl.String,
            "value": pl.Float64,
        },
        orient="row",
    )


def lesion_frame(folder: Path) -> pl.DataFrame:
    """The Koparkar et al. strings: one entity per bout (a bout starts at `Y`), the bird
    as group and the lesion condition as an entity attribute."""
    parts = []
    for path in sorted(folder.glob("bird*_*lesion")):
        bird, condition = path.name.split("_")
        bouts = ["Y" + b for b in path.read_text().strip().split("Y") if b]
        for number, bout in enumerate(bouts):
            parts.append(
                pl.DataFrame(
                    {
                        "entity": f"{bird}_{condition}_{number:04d}",
                        "group": bird,
                        "condition": condition,
                        "kind": "syllable",
                        "code": list(bout),
                    }
                )
            )
    return pl.concat(parts)
