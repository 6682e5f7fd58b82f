"""Ingest time and peak memory of the `meds` adapter on the MIMIC-IV demo, in one run.

Datasets:

- `demo`: `../shared/data/clinical/mimic-iv-demo-meds` as it is (916,166 rows, 100
  subjects);
- `x20`, `x100` (any `xN`): an N-fold replica written by this script (not timed): every
  shard copied N times with subject ids offset per copy, and `subject_splits.parquet` to
  match (x20: 18.3M rows, 2,000 subjects; x100: 91.6M rows, 10,000 subjects), to show
  that the ingest's time per row and memory stay flat as the data grows.

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

Peak memory (`tree_peak_mb`, the table's `peak MB`) is the largest resident memory of
the child and its worker processes together, sampled every 50 ms (all that the machine
had to hold at once); `peak_mb` (`sum MB`) is the child's VmHWM plus each worker's peak,
an upper bound, since the workers' peaks need not coincide. `base_mb` is the child's
peak after imports, before the work. `cpu_s` is CPU seconds of the child and its
workers (on a loaded machine the figure to compare; wall seconds grow with the load). Per row, each row
also gives `per_row_vs_1x` (time per row over the demo's, same mode) and, for the
corpus, `x_floor` (corpus seconds over the floor's on the same files). Output: one JSON
line per (dataset, mode), then a table.

    python benchmarks/bench_ingest_meds.py                  # demo and x20, 1 run each
    python benchmarks/bench_ingest_meds.py --datasets demo x20 x100 --modes floor corpus
    python benchmarks/bench_ingest_meds.py --datasets demo --repeats 3
    python benchmarks/bench_ingest_meds.py --datasets x100 --replicas /tmp/meds-replicas
    python benchmarks/bench_ingest_meds.py --datasets x20s90   # 204,460 subjects of <= 90 rows
    python benchmarks/bench_ingest_meds.py --datasets x20c     # each copy its own codes

A trailing `c` (`x20c`, `x20s90c`) gives every copy after the first codes of its own
(`//copy{k}` appended; `MEDS_*` codes kept, since birth and death have meanings): a
vocabulary about N times the demo's, as a full hospital's is (tens of thousands of
codes), so the per-code work (counts, subjects per code, value samples, bins) grows with
the rows instead of staying at the demo's few thousand codes.
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
import warnings
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from process_usage import TreePeak, cpu_seconds, peak_rss_mb  # noqa: E402  (shared with the tabular bench)

DEMO = Path(__file__).resolve().parents[2] / "shared" / "data" / "clinical" / "mimic-iv-demo-meds"
MEDS_COLUMNS = ["subject_id", "time", "code", "numeric_value", "text_value"]
# Subject ids of copy k are offset by k * SUBJECT_OFFSET (demo ids are 8 digits).
SUBJECT_OFFSET = 100_000_000
# A run r of subject s (`xNsK` datasets) becomes subject s * RUN_OFFSET + r.
RUN_OFFSET = 10_000


def replicate(
    source: Path,
    target: Path,
    copies: int,
    subject_rows: int | None = None,
    codes_per_copy: bool = False,
) -> int:
    """Write `copies` copies of a MEDS dataset with disjoint subject ids; rows written.

    With `subject_rows`, each subject's rows are cut into runs of that many (time order
    kept), each run a subject of its own: a dataset of many short records, as a full
    hospital export has (MIMIC-IV: 364,627 subjects; the demo's copies hold 100 each).
    With `codes_per_copy`, copy k > 0 appends `//copy{k}` to every code but `MEDS_*`."""
    rows = 0
    runs = []
    for shard in sorted((source / "data").rglob("*.parquet")):
        frame = pl.read_parquet(shard)
        folder = target / shard.parent.relative_to(source)
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(copies):
            copy = frame.with_columns(pl.col("subject_id") + k * SUBJECT_OFFSET)
            if codes_per_copy and k:
                own = pl.col("code").str.starts_with("MEDS_")
                renamed = pl.when(own).then(pl.col("code")).otherwise(pl.col("code") + f"//copy{k}")
                copy = copy.with_columns(renamed.cast(frame.schema["code"]).alias("code"))
            if subject_rows:
                run = pl.int_range(pl.len()).over("subject_id") // subject_rows
                copy = copy.with_columns(pl.col("subject_id") * RUN_OFFSET + run)
                runs.append(copy.select(pl.col("subject_id").unique()))
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
        table = pl.concat(
            [table.with_columns(pl.col("subject_id") + k * SUBJECT_OFFSET) for k in range(copies)]
        )
        if subject_rows:  # each run in its subject's split
            original = (pl.col("subject_id") // RUN_OFFSET).alias("original")
            table = (
                pl.concat(runs)
                .with_columns(original)
                .join(table.rename({"subject_id": "original"}), on="original")
                .select(table.columns)
                .sort("subject_id")
            )
        table.write_parquet(metadata / "subject_splits.parquet")
    return rows


def dataset_shape(name: str) -> tuple[int, int | None, bool]:
    """`x20` -> (20 copies, whole subjects, shared codes); `x20s90` -> (20, subjects cut
    into 90-row runs, shared codes); a trailing `c` (`x20c`) -> codes of each copy's own."""
    own_codes = name.endswith("c")
    copies, _, rows = name.removeprefix("x").removesuffix("c").partition("s")
    try:
        return int(copies), int(rows) if rows else None, own_codes
    except ValueError:
        raise SystemExit(
            f"dataset {name!r}: expected demo, xN, xNsK or either with a trailing c "
            "(e.g. x20, x20s90, x20c)"
        ) from None


def children_peak_mb() -> float:
    """Summed peak RSS of this process's finished children (the build's workers)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def child_run(mode: str, data: Path, out: Path, workers: int | None) -> dict[str, float]:
    """One measured run, in this (child) process."""
    from seqlm.corpora_adapters.meds import MedsMetadataWarning, MedsOptions, read_meds
    from seqlm.ingest import ingest

    warnings.simplefilter("ignore", MedsMetadataWarning)
    base_mb = peak_rss_mb()
    start = time.perf_counter()
    cpu_start = cpu_seconds()
    with TreePeak() as tree:
        if mode == "floor":
            frame = (
                pl.scan_parquet(data / "data" / "**" / "*.parquet").select(MEDS_COLUMNS).collect()
            )
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
            corpus = ingest("meds", [data], out, workers=workers)
            events = int(corpus.manifest["counts"]["events"])
    seconds = time.perf_counter() - start
    cpu = cpu_seconds() - cpu_start
    # Workers run at the same time as this process, so their peaks add up (an upper
    # bound: the peaks need not coincide). ru_maxrss of children is the largest child's.
    n_workers = corpus.manifest["build"]["workers"] if mode == "corpus" else 1
    workers_mb = children_peak_mb() * n_workers if n_workers > 1 else 0.0
    return {
        "events": events,
        "seconds": seconds,
        "cpu_s": cpu,
        "peak_mb": peak_rss_mb() + workers_mb,
        "tree_peak_mb": tree.peak_mb,
        "base_mb": base_mb,
    }


def measure(mode: str, data: Path, work: Path, workers: int | None) -> dict[str, float]:
    """`child_run` in a fresh interpreter, so its peak memory is its own (a subprocess,
    not a daemonic Pool worker: the corpus build starts worker processes of its own)."""
    out = work / f"out-{mode}"
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, __file__, "--child", mode, str(data), str(out), str(workers or 0)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"child run failed:\n{result.stderr}")
    shutil.rmtree(out, ignore_errors=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_meds_benchmark(
    datasets: list[str],
    modes: list[str],
    repeats: int,
    work_parent: Path | None = None,
    workers: int | None = None,
    replicas: Path | None = None,
) -> list[dict]:
    """Measure each (dataset, mode); print a JSON line per result; return the rows."""
    if not DEMO.is_dir():
        raise SystemExit(f"MIMIC demo not found at {DEMO}")
    if work_parent is not None:  # a scratch folder that does not exist yet is made
        work_parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench_meds_", dir=work_parent))
    rows = []
    try:
        for name in datasets:
            data = DEMO
            if name != "demo":
                data = (replicas or work) / name
                if not (replicas and (data / "metadata").is_dir()):
                    replicate(DEMO, data, *dataset_shape(name))
            for mode in modes:
                runs = [measure(mode, data, work, workers) for _ in range(repeats)]
                seconds = statistics.median(r["seconds"] for r in runs)
                row = {
                    "dataset": name,
                    "mode": mode,
                    "events": int(runs[0]["events"]),
                    "repeats": repeats,
                    "seconds": round(seconds, 2),
                    "rows_per_s": round(runs[0]["events"] / seconds),
                    "cpu_s": round(statistics.median(r["cpu_s"] for r in runs), 2),
                    "peak_mb": round(statistics.median(r["peak_mb"] for r in runs)),
                    "tree_peak_mb": round(statistics.median(r["tree_peak_mb"] for r in runs)),
                    "base_mb": round(statistics.median(r["base_mb"] for r in runs)),
                }
                add_ratios(row, rows)
                rows.append(row)
                print(json.dumps(row), flush=True)
            if data != DEMO and replicas is None:
                shutil.rmtree(data)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows


def add_ratios(row: dict, earlier: list[dict]) -> None:
    """Per-row time relative to the demo's (same mode), and corpus over floor."""
    for other in earlier:
        if other["dataset"] == "demo" and other["mode"] == row["mode"]:
            per_row = row["seconds"] / row["events"]
            row["per_row_vs_1x"] = round(per_row / (other["seconds"] / other["events"]), 2)
        same_files = other["dataset"] == row["dataset"] and other["mode"] == "floor"
        if same_files and row["mode"] == "corpus":
            row["x_floor"] = round(row["seconds"] / other["seconds"], 1)


def print_table(rows: list[dict]) -> None:
    print(
        f"\n{'dataset':<8} {'mode':<8} {'rows':>11} {'seconds':>8} {'rows/s':>10} "
        f"{'vs 1x/row':>9} {'x floor':>7} {'peak MB':>8} {'sum MB':>7} {'cpu s':>7} {'rows/cpu-s':>10}"
    )
    for r in rows:
        print(
            f"{r['dataset']:<8} {r['mode']:<8} {r['events']:>11,} {r['seconds']:>8.2f} "
            f"{r['rows_per_s']:>10,} {r.get('per_row_vs_1x', ''):>9} {r.get('x_floor', ''):>7} "
            f"{r['tree_peak_mb']:>8} {r['peak_mb']:>7} {r['cpu_s']:>7.1f} "
            f"{round(r['events'] / max(r['cpu_s'], 1e-9)):>10,}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["demo", "x20"])
    parser.add_argument("--modes", nargs="+", default=["floor", "adapter", "corpus"])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: temp)")
    parser.add_argument("--json", action="store_true", help="also print all rows as one JSON list")
    parser.add_argument("--workers", type=int, default=None, help="corpus build processes")
    parser.add_argument(
        "--replicas",
        type=Path,
        default=None,
        help="keep the xN replicas in this folder and reuse them on the next run",
    )
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, data, out, workers = args.child
        print(json.dumps(child_run(mode, Path(data), Path(out), int(workers) or None)))
        return
    rows = run_meds_benchmark(
        args.datasets, args.modes, args.repeats, args.work, args.workers, args.replicas
    )
    print_table(rows)
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
