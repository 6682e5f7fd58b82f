"""What `seqlm eval --sequence-history` costs as the scored tokens and the vocabulary
grow: the fit (one pass, every candidate setting) and the scoring, beside the base's
own cost of producing the same full rows, measured in the same run.

The base is a fixed random distribution per target position (no model), so the table
isolates the history's own work; sequences are generated with clinical structure (a
time-gap token every few events, labs with ten value tokens each). The history's work
per target is a copy of a vocabulary-wide row per setting memory, so its cost should
grow linearly with targets x vocabulary, like scoring itself.

    python benchmarks/bench_sequence_history.py [--targets 10000,100000]
        [--vocab 2000,8000] [--repeats 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from seqlm.evaluation.scores import prediction_targets
from seqlm.evaluation.sequence_history import (
    HistoryCodes,
    HistorySettings,
    SequenceHistoryScorer,
    fit_history,
)

SPECIALS = 4  # [PAD] [BOS] [EOS] [UNK]
VALUES = 10  # value tokens per lab


class RandomRows:
    """Full rows in target order: one random distribution reused for every target, so
    producing a row costs one copy (the floor any real base pays beyond its forward)."""

    name = "random rows"

    def __init__(self, vocab_size: int, chunk: int = 1024, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        row = rng.random(vocab_size)
        row[:2] = 0.0
        self.block = np.tile(row / row.sum(), (chunk, 1))
        self.vocab_size, self.chunk = vocab_size, chunk

    def probability_rows(self, sequences, progress=None):
        n = len(prediction_targets(sequences, self.vocab_size))
        for low in range(0, n, self.chunk):
            rows = np.arange(low, min(low + self.chunk, n))
            yield rows, self.block[: rows.size].copy()


def clinical_codes(vocab_size: int) -> HistoryCodes:
    """Ids 4..: 8 time-gap tokens, then labs of ten value tokens each."""
    time_ids = np.arange(SPECIALS, SPECIALS + 8)
    labs = (vocab_size - SPECIALS - 8) // VALUES
    code = np.zeros(vocab_size, dtype=np.int64)
    first = SPECIALS + 8
    code[first : first + labs * VALUES] = np.repeat(np.arange(1, labs + 1), VALUES)
    return HistoryCodes(code.copy(), code, time_ids)


def clinical_sequences(codes: HistoryCodes, targets: int, seed: int = 0) -> list[np.ndarray]:
    """Subjects of 5,000 tokens: draws of 5-20 labs (each with a persistent level)
    separated by a time-gap token."""
    rng = np.random.default_rng(seed)
    labs = int(codes.code.max())
    first = SPECIALS + codes.time_ids.size
    out, total = [], 0
    while total < targets:
        level = rng.integers(0, VALUES, size=labs + 1)
        tokens = [1]
        while len(tokens) < 5000:
            tokens.append(int(rng.choice(codes.time_ids)))
            for lab in rng.choice(np.arange(1, labs + 1), size=rng.integers(5, 21)):
                bin_ = int(np.clip(level[lab] + rng.integers(-1, 2), 0, VALUES - 1))
                tokens.append(first + (int(lab) - 1) * VALUES + bin_)
        tokens = tokens[: max(1, min(5000, targets - total))] + [2]  # [BOS] .. [EOS]
        out.append(np.asarray(tokens, dtype=np.int64))
        total += len(tokens) - 1
    return out


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(targets: int, vocab_size: int, repeats: int) -> dict[str, float]:
    codes = clinical_codes(vocab_size)
    sequences = clinical_sequences(codes, targets)
    source = RandomRows(vocab_size)
    n = len(prediction_targets(sequences, vocab_size))
    scorer = SequenceHistoryScorer(source, codes, HistorySettings(5.0, 0.5, 0.2))
    runs = {"rows": [], "fit": [], "score": []}
    for _ in range(repeats):
        runs["rows"].append(timed(lambda: sum(1 for _ in source.probability_rows(sequences))))
        runs["fit"].append(timed(lambda: fit_history(source, sequences, codes)))
        runs["score"].append(timed(lambda: scorer.score(sequences)))
    median = {k: statistics.median(v) for k, v in runs.items()}
    return {
        "targets": n,
        "vocab": vocab_size,
        "base_rows_s": round(median["rows"], 3),
        "fit_s": round(median["fit"], 3),
        "score_s": round(median["score"], 3),
        # the history's cost per cell of the rows (target x vocabulary id), nanoseconds
        "fit_ns_per_cell": round(1e9 * median["fit"] / (n * vocab_size), 3),
        "score_ns_per_cell": round(1e9 * median["score"] / (n * vocab_size), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", default="10000,100000")
    parser.add_argument("--vocab", default="2000,8000")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = [
        measure(int(t), int(v), args.repeats)
        for v in args.vocab.split(",")
        for t in args.targets.split(",")
    ]
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print("targets  vocab  base rows s   fit s  score s  fit ns/cell  score ns/cell")
    for r in rows:
        print(
            f"{r['targets']:>7}  {r['vocab']:>5}  {r['base_rows_s']:>11}  {r['fit_s']:>6}  "
            f"{r['score_s']:>7}  {r['fit_ns_per_cell']:>11}  {r['score_ns_per_cell']:>13}"
        )


if __name__ == "__main__":
    main()
