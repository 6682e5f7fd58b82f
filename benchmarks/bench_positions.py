"""Trained runs compared on one corpus split, paired by sequence: the first run against
each other one, with the bootstrap `seqlm eval` uses for its baselines.

Made for issue 13, session 11 (ALiBi against the recipe's default positions at the same
plan, docs/training.md "ALiBi on small corpora"), but any GPT or LSTM runs of one
corpus's vocabulary compare: train nothing here, score each run's best weights on the
split's sequences (`seqlm.evaluation.model_scorer`, the windows `seqlm eval` scores),
and give first - other for cross-entropy and top-1 with a 95% interval that resamples
whole sequences (entities where one owns several; `seqlm.evaluation.paired`).

    python benchmarks/bench_positions.py --corpus B4 --run alibi=runs/B4_alibi \\
        --run default=runs/B4_rotary [--split held_out] [--checkpoint best] [--json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def parse_runs(items: list[str]) -> dict[str, Path]:
    """`name=path` items (a bare path is named by its folder), in the order given."""
    runs: dict[str, Path] = {}
    for item in items:
        name, _, path = item.partition("=") if "=" in item else (Path(item).name, "", item)
        if name in runs:
            raise SystemExit(f"bench_positions: run name {name!r} given twice")
        runs[name] = Path(path)
    if len(runs) < 2:
        raise SystemExit("bench_positions: give at least two --run NAME=PATH to compare")
    return runs


def score_runs(corpus, runs: dict[str, Path], split: str = "held_out", checkpoint: str = "best"):
    """Each run's `TokenScores` on `split` (conditioning tokens left out, as `seqlm eval`
    does), the split's index, and per run what was loaded (step, model settings)."""
    from seqlm.evaluation.baselines import split_sequences
    from seqlm.evaluation.model_scorer import check_run_matches_corpus, scorer_from_run

    index, sequences = split_sequences(corpus, split)
    context_only = corpus.vocabulary.condition_ids
    scores, loaded_info = {}, {}
    for name, run in runs.items():
        scorer, loaded = scorer_from_run(run, name=name, checkpoint=checkpoint, device="cpu")
        check_run_matches_corpus(loaded.config, corpus)
        began = time.process_time()
        scores[name] = scorer.score(sequences).without_tokens(context_only)
        model = loaded.config.get("model") or {}
        best = Path(run) / "best" / "state.json"
        loaded_info[name] = {
            "run": str(run),
            "step": loaded.step,
            "best_tuning_loss": json.loads(best.read_text())["loss"] if best.is_file() else None,
            "positions": model.get("positions"),
            "score_cpu_s": round(time.process_time() - began, 2),
        }
    return index, scores, loaded_info


def compare_runs(corpus, runs: dict[str, Path], split: str = "held_out", **options) -> dict:
    """The first run against each other run: {"runs": ..., "comparisons": [...]}, each
    comparison `PairedComparison.to_dict()` (model = the first run)."""
    from seqlm.evaluation.paired import ComparisonOptions, compare_with_baselines, resampling_units

    index, scores, info = score_runs(corpus, runs, split, options.get("checkpoint", "best"))
    units, unit = resampling_units(index)
    first = next(iter(runs))
    comparisons = compare_with_baselines(
        scores, first, units, unit=unit, options=options.get("comparison") or ComparisonOptions()
    )
    for name, s in scores.items():
        info[name]["cross_entropy"] = float(np.mean(-s.log_prob))
        info[name]["top1"] = float(np.mean(s.top_k_hit(1)))
    return {
        "corpus": str(corpus.path),
        "split": split,
        "targets": len(scores[first]),
        "runs": info,
        "comparisons": [c.to_dict() for c in comparisons],
    }


def print_result(result: dict) -> None:
    print(f"{result['corpus']} ({result['split']}, {result['targets']:,} targets)")
    for name, r in result["runs"].items():
        print(
            f"  {name}: {r['positions']} positions, step {r['step']}, "
            f"best tuning loss {r['best_tuning_loss'] or float('nan'):.4f}, "
            f"CE {r['cross_entropy']:.4f} nats, top-1 {r['top1']:.2%}  ({r['run']})"
        )
    for c in result["comparisons"]:
        print(f"  {c['model']} - {c['baseline']}: {c['sentence']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--run", dest="runs", action="append", default=[], help="NAME=PATH")
    parser.add_argument("--split", default="held_out")
    parser.add_argument("--checkpoint", default="best")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    import torch

    from seqlm.corpus import load_corpus

    torch.set_num_threads(1)
    runs = parse_runs(args.runs)
    result = compare_runs(load_corpus(args.corpus), runs, args.split, checkpoint=args.checkpoint)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print_result(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
