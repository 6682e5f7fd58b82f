"""Ingest throughput and peak memory of the generic tabular adapter, at two sizes.

For each size (default 2.5M and 10M rows) the script writes a generated event table as
Parquet shards in a temporary folder (not timed): 100 events per entity, so 25k and
100k entities; 300 codes drawn with Zipf-like frequencies; a numeric value on 40% of
the rows; float seconds within each entity. Then it times, in a fresh child process per
run (so each run's peak RSS is its own):

- `corpus`: `seqlm.ingest.ingest("tabular", ...)`, i.e. `seqlm ingest tabular` without
  the CLI: the adapter's lazy scan, the streaming entity pass, splits, vocabulary
  fitting and token writing into a corpus folder;
- `adapter`: the adapter alone: `read_tabular` (which makes one checking pass over the
  files to count rows) and a streaming aggregate over every event column. The
  EventTable's final sort by (entity, time, order) is not run here: polars drops it
  before an aggregate, as it does before the corpus writer's entity pass.

Peak memory is the child's peak resident set (VmHWM); `base_mb` is its peak after imports and before
the ingest, so `peak_mb - base_mb` is what the ingest itself added. Each figure is the
median of `--repeats` runs. Output: one JSON line per (mode, size), then a table.

    python benchmarks/bench_ingest.py                      # 2.5M and 10M rows, 3 runs
    python benchmarks/bench_ingest.py --sizes 200000 800000 --repeats 1   # quick look
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

EVENTS_PER_ENTITY = 100
N_CODES = 300
ROWS_PER_SHARD = 500_000
MAPPING = {
    "entity": "subject",
    "time": "t_s",
    "time_unit": "s",
    "code": "code",
    "value": "value",
}


def generate_events(folder: Path, n_rows: int, seed: int = 0) -> None:
    """Write `n_rows` events as Parquet shards, entities contiguous and time-ordered."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    codes = np.array([f"EV//{i:03d}" for i in range(N_CODES)])
    weights = 1.0 / np.arange(1, N_CODES + 1)
    weights /= weights.sum()
    for shard, start in enumerate(range(0, n_rows, ROWS_PER_SHARD)):
        n = min(ROWS_PER_SHARD, n_rows - start)
        row = np.arange(start, start + n)
        entity = row // EVENTS_PER_ENTITY
        gaps = rng.exponential(60.0, n)
        frame = pl.DataFrame(
            {
                "subject": entity,
                "t_s": gaps,
                "code": codes[rng.choice(N_CODES, size=n, p=weights)],
                "value": np.where(rng.random(n) < 0.4, rng.normal(50, 10, n), np.nan),
            }
        ).with_columns(
            pl.format("s{}", pl.col("subject").cast(pl.String).str.zfill(7)).alias("subject"),
            # Time runs on within each entity (entities do not cross shard boundaries
            # because ROWS_PER_SHARD is a multiple of EVENTS_PER_ENTITY).
            pl.col("t_s").cum_sum().over("subject"),
            pl.when(pl.col("value").is_nan()).then(None).otherwise(pl.col("value")).alias("value"),
        )
        frame.write_parquet(folder / f"part-{shard:04d}.parquet")


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM). Not `ru_maxrss`: Linux carries that
    across fork+exec, so a child would inherit the parent's peak from data generation."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_run(mode: str, data: Path, out: Path) -> dict[str, float]:
    """One measured ingest, in this (child) process."""
    from seqlm.corpora_adapters.base import options_from_mapping
    from seqlm.corpora_adapters.tabular import TabularOptions, read_tabular
    from seqlm.ingest import ingest

    base_mb = peak_rss_mb()
    start = time.perf_counter()
    if mode == "corpus":
        corpus = ingest("tabular", [data], out, {"adapter": MAPPING})
        events = int(corpus.manifest["counts"]["events"])
    else:
        ingested = read_tabular([data], options_from_mapping(TabularOptions, MAPPING))
        # Every event column is read, by aggregates that stream. polars drops the
        # EventTable's final sort before an aggregate, so this is the adapter's
        # scan-and-parse alone. (Several `n_unique`s in one select do not stream in
        # polars 2.1: they would measure polars, not the adapter.)
        summary = ingested.events.frame.select(
            pl.len(),
            pl.col("entity", "code", "kind").str.len_bytes().sum(),
            pl.col("time").max(),
            pl.col("order").max(),
            pl.col("value").sum(),
        ).collect(engine="streaming")
        events = int(summary["len"][0])
    seconds = time.perf_counter() - start
    peak_mb = peak_rss_mb()
    return {"events": events, "seconds": seconds, "peak_mb": peak_mb, "base_mb": base_mb}


def measure(mode: str, data: Path, work: Path) -> dict[str, float]:
    out = work / f"out-{mode}"
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, __file__, "--child", mode, str(data), str(out)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"child run failed:\n{result.stderr}")
    shutil.rmtree(out, ignore_errors=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2_500_000, 10_000_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--modes", nargs="+", default=["corpus", "adapter"])
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: temp)")
    parser.add_argument("--child", nargs=3, metavar=("MODE", "DATA", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, data, out = args.child
        print(json.dumps(child_run(mode, Path(data), Path(out))))
        return

    work = Path(tempfile.mkdtemp(prefix="bench_ingest_", dir=args.work))
    rows = []
    try:
        for size in args.sizes:
            data = work / f"events-{size}"
            generate_events(data, size)
            for mode in args.modes:
                runs = [measure(mode, data, work) for _ in range(args.repeats)]
                seconds = statistics.median(r["seconds"] for r in runs)
                row = {
                    "mode": mode,
                    "rows": size,
                    "events": int(runs[0]["events"]),
                    "repeats": args.repeats,
                    "seconds": round(seconds, 2),
                    "events_per_s": round(runs[0]["events"] / seconds),
                    "peak_mb": round(statistics.median(r["peak_mb"] for r in runs)),
                    "base_mb": round(statistics.median(r["base_mb"] for r in runs)),
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
            shutil.rmtree(data)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"\n{'mode':<7} {'rows':>11} {'seconds':>8} {'events/s':>11} {'peak MB':>8} {'base MB':>8}"
    )
    for r in rows:
        print(
            f"{r['mode']:<7} {r['rows']:>11,} {r['seconds']:>8.2f} {r['events_per_s']:>11,} "
            f"{r['peak_mb']:>8} {r['base_mb']:>8}"
        )


# -- MEDS: the MIMIC-IV demo beside the polars read floor, and a 20x replica -------------
# `python benchmarks/bench_ingest.py --meds [--datasets demo x20 ...]` runs
# benchmarks/bench_ingest_meds.py: seconds and peak memory of the full `meds` ingest.


def main_meds(argv: list[str]) -> None:
    from bench_ingest_meds import main as meds_main

    sys.argv = [sys.argv[0], *argv]
    meds_main()


if __name__ == "__main__":
    if "--meds" in sys.argv[1:]:
        main_meds([a for a in sys.argv[1:] if a != "--meds"])
    else:
        main()
