"""Ingest time and peak memory of the `meds` adapter on the MIMIC-IV demo, in one run.

Two datasets:

- `demo`: `../shared/data/clinical/mimic-iv-demo-meds` as it is (916,166 rows, 100
  subjects);
- `x20`: a 20x replica written by this script (not timed): every shard copied 20 times
  with subject ids offset per copy, and `subject_splits.parquet` to match (18.3M rows,
  2,000 subjects), to show that the ingest's memory stays flat as the data grows.

For each, in a fresh child process per run (so each peak is its own), it times:

- `floor`: polars reading the same shards and nothing else: `scan_parquet` of the five
  MEDS columns the adapter uses (`subject_id, time, code, numeric_value, text_value`)
  collected in memory. The time any reader needs; its memory is the whole table.
- `adapter`: `read_meds` plus a streaming aggregate over every event column (the
  adapter's passes: splits, codes, birth/age, and the final scan), no corpus. The
  EventTable's final sort is not run: polars drops it before an aggregate.
- `corpus`: `seqlm.ingest.ingest("meds", ...)` with the clinical defaults, i.e.
  `seqlm ingest meds DIR --out OUT` without the CLI: adapter, entity pass, vocabulary
  fitting on train, token writing.

Peak memory is the child's VmHWM; `base_mb` is its peak after imports, before the work.
Output: one JSON line per (dataset, mode), then a table.

    python benchmarks/bench_ingest_meds.py                  # demo and x20, 1 run each
    python benchmarks/bench_ingest_meds.py --datasets demo --repeats 3
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ingest import peak_rss_mb  # noqa: E402  (the shared VmHWM reader)

DEMO = Path(__file__).resolve().parents[2] / "shared" / "data" / "clinical" / "mimic-iv-demo-meds"
MEDS_COLUMNS = ["subject_id", "time", "code", "numeric_value", "text_value"]
# Subject ids of copy k are offset by k * SUBJECT_OFFSET (demo ids are 8 digits).
SUBJECT_OFFSET = 100_000_000


def replicate(source: Path, target: Path, copies: int) -> int:
    """Write `copies` copies of a MEDS dataset with disjoint subject ids; rows written."""
    rows = 0
    for shard in sorted((source / "data").rglob("*.parquet")):
        frame = pl.read_parquet(shard)
        folder = target / shard.parent.relative_to(source)
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(copies):
            copy = frame.with_columns(pl.col("subject_id") + k * SUBJECT_OFFSET)
            copy.write_parquet(folder / f"{shard.stem}-{k:03d}.parquet")
            rows += copy.height
    metadata = target / "metadata"
    metadata.mkdir(parents=True, exist_ok=True)
    for file in (source / "metadata").iterdir():
        if file.name != "subject_splits.parquet":
            shutil.copy(file, metadata / file.name)
    splits = source / "metadata" / "subject_splits.parquet"
    if splits.is_file():
        table = pl.read_parquet(splits)
        pl.concat(
            [table.with_columns(pl.col("subject_id") + k * SUBJECT_OFFSET) for k in range(copies)]
        ).write_parquet(metadata / "subject_splits.parquet")
    return rows


def child_run(mode: str, data: Path, out: Path) -> dict[str, float]:
    """One measured run, in this (child) process."""
    from seqlm.corpora_adapters.meds import MedsMetadataWarning, MedsOptions, read_meds
    from seqlm.ingest import ingest

    warnings.simplefilter("ignore", MedsMetadataWarning)
    base_mb = peak_rss_mb()
    start = time.perf_counter()
    if mode == "floor":
        frame = pl.scan_parquet(data / "data" / "**" / "*.parquet").select(MEDS_COLUMNS).collect()
        events = frame.height
    elif mode == "adapter":
        ingested = read_meds([data], MedsOptions())
        # Every event column is consumed by an aggregate that streams in flat memory
        # (`n_unique` on strings does not: it holds the values).
        summary = ingested.events.frame.select(
            pl.len(),
            pl.col("entity").str.len_bytes().sum(),
            pl.col("code").str.len_bytes().sum(),
            pl.col("time").max(),
            pl.col("value").sum(),
            pl.col("split").is_null().sum(),
        ).collect(engine="streaming")
        events = int(summary["len"][0])
    else:
        corpus = ingest("meds", [data], out)
        events = int(corpus.manifest["counts"]["events"])
    seconds = time.perf_counter() - start
    return {"events": events, "seconds": seconds, "peak_mb": peak_rss_mb(), "base_mb": base_mb}


def measure(mode: str, data: Path, work: Path) -> dict[str, float]:
    """`child_run` in a fresh interpreter (spawned), so its peak memory is its own."""
    out = work / f"out-{mode}"
    shutil.rmtree(out, ignore_errors=True)
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        result = pool.apply(child_run, (mode, data, out))
    shutil.rmtree(out, ignore_errors=True)
    return result


def run_meds_benchmark(
    datasets: list[str], modes: list[str], repeats: int, work_parent: Path | None = None
) -> list[dict]:
    """Measure each (dataset, mode); print a JSON line per result; return the rows."""
    if not DEMO.is_dir():
        raise SystemExit(f"MIMIC demo not found at {DEMO}")
    work = Path(tempfile.mkdtemp(prefix="bench_meds_", dir=work_parent))
    rows = []
    try:
        for name in datasets:
            data = DEMO
            if name == "x20":
                data = work / "x20"
                replicate(DEMO, data, 20)
            for mode in modes:
                runs = [measure(mode, data, work) for _ in range(repeats)]
                seconds = statistics.median(r["seconds"] for r in runs)
                row = {
                    "dataset": name,
                    "mode": mode,
                    "events": int(runs[0]["events"]),
                    "repeats": repeats,
                    "seconds": round(seconds, 2),
                    "rows_per_s": round(runs[0]["events"] / seconds),
                    "peak_mb": round(statistics.median(r["peak_mb"] for r in runs)),
                    "base_mb": round(statistics.median(r["base_mb"] for r in runs)),
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows


def print_table(rows: list[dict]) -> None:
    print(f"\n{'dataset':<8} {'mode':<8} {'rows':>11} {'seconds':>8} {'rows/s':>10} {'peak MB':>8}")
    for r in rows:
        print(
            f"{r['dataset']:<8} {r['mode']:<8} {r['events']:>11,} {r['seconds']:>8.2f} "
            f"{r['rows_per_s']:>10,} {r['peak_mb']:>8}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["demo", "x20"])
    parser.add_argument("--modes", nargs="+", default=["floor", "adapter", "corpus"])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: temp)")
    args = parser.parse_args()
    print_table(run_meds_benchmark(args.datasets, args.modes, args.repeats, args.work))


if __name__ == "__main__":
    main()
