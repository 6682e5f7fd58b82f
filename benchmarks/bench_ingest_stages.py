"""CPU microseconds per row of each corpus-build stage, for one in-process MEDS ingest
(or, with `--adapter tabular`, one tabular ingest of `bench_ingest.py`'s generated files).

At `--workers 1` (the default) every stage runs in this process, so the CPU seconds
that the build's `StageClock` records per stage are the whole cost of the stage; what
is left outside the stages is the adapter's own passes and fixed costs (imports, the
vocabulary fit, writing the index and manifest). It reads the clock itself rather than
the manifest, so the same script measures an older tree as well:

    python benchmarks/bench_ingest_stages.py /tmp/meds-replicas/x20
    PYTHONPATH=/path/to/old/tree python benchmarks/bench_ingest_stages.py /tmp/meds-replicas/x20

(the replicas are written by `bench_ingest_meds.py --replicas DIR`). `--json` prints
the figures as one JSON object as well. `--adapter tabular DATA` reads a folder of CSV
or Parquet files with `bench_ingest.py`'s mapping; `--rows N` writes one first (N rows,
CSV unless `--format parquet`) into DATA, which must not exist.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import tempfile
import time
import warnings
from pathlib import Path


def profile(data: Path, workers: int, adapter: str = "meds") -> dict:
    """One `ingest(adapter, ...)` of `data`; CPU and wall seconds in all and per stage."""
    import seqlm
    import seqlm.corpus.stages as stages
    from seqlm.ingest import ingest

    clocks: list = []
    original = stages.StageClock.__init__

    def keep(self, *args, **kwargs) -> None:
        original(self, *args, **kwargs)
        clocks.append(self)

    stages.StageClock.__init__ = keep
    warnings.simplefilter("ignore")
    out = Path(tempfile.mkdtemp(prefix="bench_stages_")) / "corpus"
    try:
        start, cpu_start = time.perf_counter(), time.process_time()
        corpus = ingest(adapter, [data], out, _config(adapter), workers=workers)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    finally:
        shutil.rmtree(out.parent, ignore_errors=True)
        stages.StageClock.__init__ = original
    rows = int(corpus.manifest["counts"]["rows_read"])
    per_stage = dict(clocks[-1].cpu_seconds)
    per_stage["(outside the stages)"] = cpu - sum(per_stage.values())
    return {
        "seqlm": seqlm.__file__,
        "rows": rows,
        "workers": workers,
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "rows_per_cpu_s": round(rows / cpu),
        "peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "cpu_us_per_row": {k: round(v / rows * 1e6, 3) for k, v in per_stage.items()},
    }


def _config(adapter: str) -> dict | None:
    if adapter == "meds":
        return None
    from bench_ingest import MAPPING

    return {"adapter": MAPPING}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="a MEDS dataset folder (tabular: files)")
    parser.add_argument("--adapter", choices=["meds", "tabular"], default="meds")
    parser.add_argument("--rows", type=int, help="tabular: first write this many rows")
    parser.add_argument("--format", choices=["csv", "parquet"], default="csv")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.rows:
        from bench_ingest import generate_events

        generate_events(args.data, args.rows, args.format)
    result = profile(args.data, args.workers, args.adapter)
    print(
        f"{result['seqlm']}\n{result['rows']:,} rows, {result['wall_s']} s wall, "
        f"{result['cpu_s']} CPU s ({result['rows_per_cpu_s']:,} rows per CPU s; this "
        f"process only), peak {result['peak_mb']} MB"
    )
    print(f"{'stage':<30} {'CPU us/row':>10}")
    for stage, micros in result["cpu_us_per_row"].items():
        print(f"{stage:<30} {micros:>10.3f}")
    print(f"{'total':<30} {sum(result['cpu_us_per_row'].values()):>10.3f}")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
