"""Ingest throughput and peak memory of the generic tabular adapter, CSV and Parquet.

For each format (default both) and size (default 1M, 10M and 100M rows) the script
writes a generated event table as shards of 500k rows in a temporary folder (not
timed): 100 events per entity; 300 codes drawn with Zipf-like frequencies; a numeric
value on 40% of the rows; float seconds within each entity. Then it times, in a fresh
child process per run (so each run's peak RSS is its own):

- `floor`: polars reading the same files and nothing else: a streaming aggregate over
  every column (the time any reader needs, in flat memory);
- `corpus`: `seqlm.ingest.ingest("tabular", ...)`, i.e. `seqlm ingest tabular` without
  the CLI: the adapter (one checking pass to count rows), the one-pass corpus build
  (partition, sort, count, encode, order) into a corpus folder;
- `adapter`: the adapter alone: `read_tabular` and a streaming aggregate over every
  event column.

Peak memory (`tree_peak_mb`, the table's `peak MB`) is the largest resident memory of
the child and its corpus workers together, sampled every 50 ms; `peak_mb` (`sum MB`) is
the child's VmHWM plus each worker's peak (an upper bound); `base_mb` is the child's
peak after imports. `cpu_s`: CPU seconds of the child and its workers. Each figure is the median of
`--repeats` runs. Per row, each result also gives `per_row_vs_1x` (time per row over the
smallest size's, same format and mode) and, for the corpus, `x_floor`. Output: one JSON
line per (format, mode, size), then a table.

    python benchmarks/bench_ingest.py --repeats 1          # 1M, 10M, 100M rows, CSV + Parquet
    python benchmarks/bench_ingest.py --sizes 200000 800000 --formats parquet   # quick look
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
from process_usage import TreePeak, cpu_seconds, peak_rss_mb

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


def generate_events(folder: Path, n_rows: int, fmt: str = "parquet", seed: int = 0) -> None:
    """Write `n_rows` events as CSV or Parquet shards, entities contiguous, time-ordered."""
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
        if fmt == "csv":
            frame.write_csv(folder / f"part-{shard:04d}.csv")
        else:
            frame.write_parquet(folder / f"part-{shard:04d}.parquet")


def read_floor(data: Path) -> int:
    """Every column of every file read by polars, reduced in a streaming aggregate."""
    files = sorted(data.iterdir())
    scan = pl.scan_csv(files) if files[0].suffix == ".csv" else pl.scan_parquet(files)
    summary = scan.select(
        pl.len(),
        pl.col("subject", "code").str.len_bytes().sum(),
        pl.col("t_s").max(),
        pl.col("value").sum(),
    ).collect(engine="streaming")
    return int(summary["len"][0])


def child_run(mode: str, data: Path, out: Path) -> dict[str, float]:
    # (MODE floor / corpus / adapter; the corpus's workers are this child's children.)
    """One measured ingest, in this (child) process."""
    from seqlm.config import options_from_mapping
    from seqlm.corpora_adapters.tabular import TabularOptions, read_tabular
    from seqlm.ingest import ingest

    base_mb = peak_rss_mb()
    start = time.perf_counter()
    cpu_start = cpu_seconds()
    workers = 1
    with TreePeak() as tree:
        if mode == "floor":
            events = read_floor(data)
        elif mode == "corpus":
            corpus = ingest("tabular", [data], out, {"adapter": MAPPING})
            events = int(corpus.manifest["counts"]["events"])
            workers = corpus.manifest["build"]["workers"]
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
    cpu = cpu_seconds() - cpu_start
    peak_mb = peak_rss_mb()
    if workers > 1:  # concurrent workers' peaks add up (ru_maxrss: the largest child's)
        peak_mb += workers * resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {
        "events": events,
        "seconds": seconds,
        "cpu_s": cpu,
        "peak_mb": peak_mb,
        "tree_peak_mb": tree.peak_mb,
        "base_mb": base_mb,
    }


def measure(mode: str, data: Path, work: Path) -> dict[str, float]:
    out = work / f"out-{mode}"
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, __file__, "--child", mode, str(data), str(out)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"child run failed:\n{result.stderr}")
    shutil.rmtree(out, ignore_errors=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def with_ratios(row: dict, earlier: list[dict]) -> dict:
    """Per-row time over the smallest size's (same format and mode); corpus over floor."""
    same = [r for r in earlier if r["format"] == row["format"] and r["mode"] == row["mode"]]
    if same:
        first = same[0]
        per_row = row["seconds"] / row["events"]
        row["per_row_vs_1x"] = round(per_row / (first["seconds"] / first["events"]), 2)
    for r in earlier:
        same_files = r["format"] == row["format"] and r["rows"] == row["rows"]
        if same_files and r["mode"] == "floor" and row["mode"] == "corpus":
            row["x_floor"] = round(row["seconds"] / r["seconds"], 1)
    return row


def run_sizes(args: argparse.Namespace, work: Path) -> list[dict]:
    rows: list[dict] = []
    for fmt in args.formats:
        for size in args.sizes:
            data = work / f"events-{fmt}-{size}"
            generate_events(data, size, fmt)
            for mode in args.modes:
                runs = [measure(mode, data, work) for _ in range(args.repeats)]
                seconds = statistics.median(r["seconds"] for r in runs)
                row = {
                    "format": fmt,
                    "mode": mode,
                    "rows": size,
                    "events": int(runs[0]["events"]),
                    "repeats": args.repeats,
                    "seconds": round(seconds, 2),
                    "rows_per_s": round(runs[0]["events"] / seconds),
                    "cpu_s": round(statistics.median(r["cpu_s"] for r in runs), 2),
                    "peak_mb": round(statistics.median(r["peak_mb"] for r in runs)),
                    "tree_peak_mb": round(statistics.median(r["tree_peak_mb"] for r in runs)),
                    "base_mb": round(statistics.median(r["base_mb"] for r in runs)),
                }
                rows.append(with_ratios(row, rows))
                print(json.dumps(row), flush=True)
            shutil.rmtree(data)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000, 100_000_000]
    )
    parser.add_argument("--formats", nargs="+", default=["csv", "parquet"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--modes", nargs="+", default=["floor", "corpus"])
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: temp)")
    parser.add_argument("--json", action="store_true", help="also print all rows as one JSON list")
    parser.add_argument("--child", nargs=3, metavar=("MODE", "DATA", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, data, out = args.child
        print(json.dumps(child_run(mode, Path(data), Path(out))))
        return

    if args.work is not None:  # a scratch folder that does not exist yet is made
        args.work.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench_ingest_", dir=args.work))
    try:
        rows = run_sizes(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(rows))
    print(
        f"\n{'format':<8} {'mode':<7} {'rows':>11} {'seconds':>8} {'rows/s':>11} "
        f"{'vs 1x/row':>9} {'x floor':>7} {'peak MB':>8} {'sum MB':>7} {'cpu s':>7} {'rows/cpu-s':>10}"
    )
    for r in rows:
        print(
            f"{r['format']:<8} {r['mode']:<7} {r['rows']:>11,} {r['seconds']:>8.2f} "
            f"{r['rows_per_s']:>11,} {r.get('per_row_vs_1x', ''):>9} "
            f"{r.get('x_floor', ''):>7} {r['tree_peak_mb']:>8} {r['peak_mb']:>7} "
            f"{r['cpu_s']:>7.1f} {round(r['events'] / max(r['cpu_s'], 1e-9)):>10,}"
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
