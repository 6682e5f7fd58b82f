"""The corpus builder as it was before the one-pass pipeline (issue 17), kept as the
reference that the new pipeline's output must equal byte for byte.

It re-scans the source once per bucket (entity-range filter), so its cost grows with
rows x buckets: fine for the test data, far too slow at scale. Only the tests use it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import polars as pl

from seqlm.corpora_adapters.base import Ingested
from seqlm.corpus.entities import entity_table
from seqlm.corpus.splits import SplitConfig, assign_splits
from seqlm.corpus.store import INDEX_FILE, TIMES_FILE, TOKENS_FILE
from seqlm.corpus.writer import _index_frame
from seqlm.vocabularies.event_tokens import sorted_events
from seqlm.vocabularies.fitting import VocabularyFitter
from seqlm.vocabularies.scheme import TokenScheme
from seqlm.vocabularies.vocabulary import Vocabulary


def reference_build(
    ingested: Ingested,
    out: Path,
    scheme: TokenScheme,
    splits: SplitConfig,
    rows_per_bucket: int = 500_000,
) -> Path:
    """Write tokens.bin, times.bin, index.parquet and the vocabulary files to `out`."""
    events = ingested.events.frame
    attributes = tuple(ingested.events.attributes)
    entities = entity_table(events, attributes)
    entities = entities.join(
        assign_splits(entities, splits), on="entity", how="left", maintain_order="left"
    )
    buckets = bucket_bounds(entities["n_events"], rows_per_bucket)
    out.mkdir(parents=True)
    work = out / "_work"
    work.mkdir()
    fitter = VocabularyFitter(scheme)
    train = pl.col("split") == "train"
    for b, (start, stop) in enumerate(buckets):
        rows = _bucket_events(events, entities[start:stop])
        rows.write_parquet(work / f"{b}.parquet")
        fitter.add_values(rows.filter(train))
    fitter.finish_values()
    for b in range(len(buckets)):
        fitter.add_tokens(pl.scan_parquet(work / f"{b}.parquet").filter(train).collect())
    vocab = Vocabulary.from_fitted(scheme, fitter.result())
    vocab.save(out)
    has_times = entities["first_time"].null_count() < entities.height
    lengths = []
    with open(out / TOKENS_FILE, "wb") as tokens, open(out / TIMES_FILE, "wb") as times:
        for b in range(len(buckets)):
            encoded = vocab.encode_events(pl.scan_parquet(work / f"{b}.parquet"))
            tokens.write(encoded.ids.astype(vocab.token_dtype).tobytes())
            times.write(encoded.times.astype(np.float32).tobytes())
            lengths.append(encoded.lengths)
    if not has_times:
        (out / TIMES_FILE).unlink()
    shutil.rmtree(work)
    _index_frame(entities, np.concatenate(lengths), attributes).write_parquet(out / INDEX_FILE)
    return out


def _bucket_events(events: pl.LazyFrame, entities: pl.DataFrame) -> pl.DataFrame:
    first, last = entities["entity"][0], entities["entity"][-1]
    in_range = (pl.col("entity") >= first) & (pl.col("entity") <= last)
    rows = sorted_events(events.filter(in_range)).collect(engine="streaming")
    return rows.drop("split").join(
        entities.select("entity", "split"), on="entity", how="left", maintain_order="left"
    )


def bucket_bounds(n_events: pl.Series, rows_per_bucket: int) -> list[tuple[int, int]]:
    """[start, stop) entity-row ranges of about `rows_per_bucket` events each."""
    bounds, start, rows = [], 0, 0
    for i, n in enumerate(n_events.to_list()):
        if rows and rows + n > rows_per_bucket:
            bounds.append((start, i))
            start, rows = i, 0
        rows += n
    bounds.append((start, len(n_events)))
    return bounds
