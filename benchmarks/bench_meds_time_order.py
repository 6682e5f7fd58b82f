"""Is the order of events that share a timestamp in a MEDS dataset learnable, and how
much next-event top-10 does knowing the set of a timestamp's events allow?

Read straight from the MEDS shards (events, not seqlm tokens), in the file's order:

- *pair consistency*: over the train split's timestamps with 2..`--max-group` events,
  each pair of distinct codes seen together is counted in its two orders; the share in
  the more common order, summed over pairs (0.5: no order; 1.0: a fixed order);
- *set oracle, random order*: on the evaluation split, a model told the events still due
  at each event's timestamp (itself and the later ones) ranks the most frequent codes
  first and knows nothing of their order; its expected top-10 with the order random
  (the due events its top-10 covers, over the due events); an event alone at its time
  is always found;
- *set oracle, train order*: the same oracle ranking the due codes by their mean place
  (0 first, 1 last) in the train split's timestamps; its top-10 on the file's order.

If the train order added much to the random order, the file's order would be worth a
model's learning; docs/training.md ("Where top-10 fails on the default tokens") reads it.

    python benchmarks/bench_meds_time_order.py MEDS_ROOT [--train-split train]
        [--eval-split held_out] [--max-group 60] [--json]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import polars as pl

TOP_K = 10


def read_split(root: Path, split: str) -> pl.DataFrame:
    """Timed events of one split in file order, with each event's place in its timestamp
    (`place`, from 1) and the timestamp's size (`size`)."""
    shards = sorted((root / "data" / split).glob("**/*.parquet"))
    if not shards:
        raise SystemExit(f"{root / 'data' / split}: no parquet shards")
    events = pl.concat([pl.read_parquet(p, columns=["subject_id", "time", "code"]) for p in shards])
    events = events.with_row_index("row").filter(pl.col("time").is_not_null())
    group = ["subject_id", "time"]
    return events.with_columns(
        place=pl.col("row").rank("ordinal").over(group), size=pl.len().over(group)
    )


def pair_consistency(train: pl.DataFrame, max_group: int) -> dict[str, Any]:
    events = train.filter((pl.col("size") > 1) & (pl.col("size") <= max_group))
    events = events.select("subject_id", "time", "code", "place")
    pairs = events.join(events, on=["subject_id", "time"]).filter(
        pl.col("code") < pl.col("code_right")
    )
    counted = pairs.group_by("code", "code_right").agg(
        first=(pl.col("place") < pl.col("place_right")).sum(), seen=pl.len()
    )
    common = pl.max_horizontal("first", pl.col("seen") - pl.col("first")).sum()
    totals = counted.select(common=common, seen=pl.col("seen").sum()).row(0, named=True)
    return {
        "code pairs": counted.height,
        "pair consistency": round(totals["common"] / max(totals["seen"], 1), 4),
    }


def mean_places(train: pl.DataFrame) -> dict[str, float]:
    shared = train.filter(pl.col("size") > 1)
    place = (pl.col("place") - 1) / (pl.col("size") - 1)
    return dict(shared.group_by("code").agg(place.mean()).iter_rows())


def set_oracles(evaluated: pl.DataFrame, places: dict[str, float]) -> dict[str, Any]:
    random_order = train_order = 0.0
    shared = evaluated.filter(pl.col("size") > 1).sort("subject_id", "time", "place")
    for codes in shared.group_by("subject_id", "time", maintain_order=True).agg("code")["code"]:
        for at in range(len(codes)):
            due = Counter(codes[at:])
            random_order += sum(n for _, n in due.most_common(TOP_K)) / (len(codes) - at)
            ranked = sorted(due, key=lambda code: places.get(code, 0.5))
            train_order += codes[at] in ranked[:TOP_K]
    alone = evaluated.height - shared.height
    return {
        "events": evaluated.height,
        "share at a shared time": round(shared.height / max(evaluated.height, 1), 4),
        "set oracle top-10, random order": round((random_order + alone) / evaluated.height, 4),
        "set oracle top-10, train order": round((train_order + alone) / evaluated.height, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="MEDS dataset root (with data/<split>/)")
    parser.add_argument("--train-split", default="train")
    parser.add_argument("--eval-split", default="held_out")
    parser.add_argument("--max-group", type=int, default=60, help="largest timestamp for pairs")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    started = time.process_time()
    train = read_split(args.root, args.train_split)
    row = {"dataset": str(args.root), **pair_consistency(train, args.max_group)}
    row |= set_oracles(read_split(args.root, args.eval_split), mean_places(train))
    row["cpu_s"] = round(time.process_time() - started, 1)
    if args.json:
        print(json.dumps(row))
        return
    for name, value in row.items():
        print(f"{name}: {value}")


if __name__ == "__main__":
    main()
