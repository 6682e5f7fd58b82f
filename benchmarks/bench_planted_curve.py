"""Planted long-range corpus: train one GPT and follow the planted answers checkpoint by
checkpoint (issue 13's 50-500 gaps; issue 19's 4,000-token gap at T = 8,192, which
`bench_planted_long.py` now learns with many pairs a sequence and a gap curriculum).

The overall tuning loss hides the planted dependency (1-2% of targets, 0.1% at a 4,000
gap); this prints, for every kept checkpoint, the cross-entropy and top-1 on the planted
answers of the tuning split (the symbol after each `Q`), split into the *first* answer of
a sequence (only the key, far back, decides it) and the *later* ones (an earlier
`Q answer` pair a few symbols back also tells them).

    python benchmarks/bench_planted_curve.py --min-gap 3990 --max-gap 4010 --sequences 240 \\
        --out /tmp/planted4k --name tiny --set model.block_size=8192 --set model.n_layer=1 \\
        --set model.n_embd=32 --set train.batch_size=1 --set train.max_steps=600 [--json]

Settings not given come from the recipe (`--budget`); checkpoints are kept every
`train.checkpoint_every` steps (all of them: `train.keep_last` is raised).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

from seqlm.datasets.planted import QUERY, long_range_sequences, write_strings


def planted_corpus(out: Path, count: int, seed: int, min_gap: int, max_gap: int) -> Path:
    """Generate and ingest the planted corpus once (reused when already there)."""
    from seqlm.ingest import ingest

    corpus = out / "corpus"
    if not (corpus / "manifest.json").is_file():
        sequences = long_range_sequences(count, seed=seed, min_gap=min_gap, max_gap=max_gap)
        raw = write_strings(out / "raw", "synth", sequences)
        ingest("birdsong-strings", [raw], corpus)
    return corpus


def planted_scores(run: Path, corpus, checkpoint: str, split: str = "tuning") -> dict:
    """CE and top-1 on the planted answers of `split`, first answer and later ones."""
    import torch

    from seqlm.evaluation.model_scorer import load_run_model

    model = load_run_model(run, checkpoint).model.eval()
    block = int(model.config.block_size)  # a short-context run: answers in its first block
    query = corpus.vocabulary.token_to_id[QUERY]
    rows = corpus.split(split)
    first, later = [], []  # (nll, hit)
    with torch.no_grad():
        for offset, length in zip(rows["offset"].to_list(), rows["length"].to_list(), strict=True):
            length = min(length, block)
            seq = torch.from_numpy(np.asarray(corpus.tokens[offset : offset + length], np.int64))
            logp = model(seq[None]).logits.float().log_softmax(-1)[0]
            at = (seq[:-1] == query).nonzero().flatten().tolist()
            for n, i in enumerate(at):
                answer = int(seq[i + 1])
                item = (-float(logp[i, answer]), int(logp[i].argmax()) == answer)
                (first if n == 0 else later).append(item)

    def summary(items: list[tuple[float, bool]]) -> dict:
        if not items:
            return {"n": 0}
        return {
            "n": len(items),
            "ce": float(np.mean([x[0] for x in items])),
            "top1": float(np.mean([x[1] for x in items])),
        }

    return {"first": summary(first), "later": summary(later)}


def _eval_losses(run: Path) -> dict[int, tuple[int, float]]:
    losses = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row.get("kind") == "eval":
            losses[int(row["step"])] = (int(row["tokens"]), float(row["loss"]))
    return losses


def checkpoint_rows(run: Path, corpus_path: Path, score) -> list[dict]:
    """One row per kept checkpoint: step, tokens, tuning loss, then `score(corpus,
    checkpoint_name)`'s planted scores and the CPU seconds they took."""
    from seqlm.corpus import load_corpus

    corpus = load_corpus(corpus_path)
    losses = _eval_losses(run)
    rows = []
    for folder in sorted((run / "checkpoints").glob("step_*")):
        step = int(folder.name.split("_")[1])
        tokens, loss = losses.get(step, (None, float("nan")))
        began = time.process_time()
        row = {"step": step, "tokens": tokens, "tuning_loss": loss}
        row.update(score(corpus, folder.name))
        row["score_cpu_s"] = round(time.process_time() - began, 1)
        rows.append(row)
    return rows


def curve(run: Path, corpus_path: Path, split: str = "tuning") -> list[dict]:
    """One row per kept checkpoint: step, tokens, tuning loss, planted scores."""
    return checkpoint_rows(
        run, corpus_path, lambda corpus, name: planted_scores(run, corpus, name, split)
    )


def train(
    corpus: Path, run: Path, budget: str | None, sets: list[str], init: Path | None = None
) -> dict:
    """Train `run` on `corpus` (from `init`'s weights when given) unless it exists."""
    import torch

    from seqlm.training.config import resolve_settings
    from seqlm.training.session import train_on_corpus

    torch.set_num_threads(1)
    began, began_cpu = time.perf_counter(), time.process_time()
    if not (run / "metrics.jsonl").is_file():
        overrides = ["train.cpu_threads=1", "train.keep_last=1000", *sets]
        settings = resolve_settings(None, overrides, None, budget=budget, recipe=True)
        train_on_corpus(corpus, run, settings, init=init)
    return {
        "train_s": round(time.perf_counter() - began, 1),
        "train_cpu_s": round(time.process_time() - began_cpu, 1),
    }


# How far below chance (log 4 nats) the planted answers must go to count as found: the
# curves that never move wander 1.39-1.50 with 300 answers, so 0.05 is above that noise.
LEFT_CHANCE_MARGIN = 0.05


def left_chance(rows: list[dict], answers: str, margin: float = LEFT_CHANCE_MARGIN) -> dict:
    """The first checkpoint from which `answers` ("first" or "later") stay more than
    `margin` nats below chance to the end, or None: separates a plateau that ended (the
    dependency found late) from a curve that never moved."""
    chance = math.log(4)
    found = None
    for row in rows:
        score = row[answers]
        below = score.get("n", 0) > 0 and score["ce"] < chance - margin
        if below and found is None:
            found = row
        elif not below:
            found = None
    if found is None:
        return {"answers": answers, "left_chance": None}
    return {"answers": answers, "left_chance": found["step"], "tokens": found["tokens"]}


def print_curve(rows: list[dict]) -> None:
    print("step | tokens | tuning loss | first answer CE (top-1) | later answers CE (top-1)")
    for r in rows:
        cells = [str(r["step"]), f"{r['tokens'] or 0:,}", f"{r['tuning_loss']:.4f}"]
        for key in ("first", "later"):
            s = r[key]
            cells.append(f"{s['ce']:.3f} ({s['top1']:.0%}, n={s['n']})" if s["n"] else "-")
        print(" | ".join(cells))
    print(f"(chance on the planted answers: log 4 = {math.log(4):.3f})")
    for answers in ("first", "later"):
        verdict = left_chance(rows, answers)
        where = verdict["left_chance"]
        print(
            f"{answers} answers: "
            + ("never left chance" if where is None else f"below chance from step {where}")
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=240)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-gap", type=int, default=3990)
    parser.add_argument("--max-gap", type=int, default=4010)
    parser.add_argument("--budget", default=None, help="recipe budget (2Mtok); optional")
    parser.add_argument("--set", dest="sets", action="append", default=[])
    parser.add_argument("--name", default="run", help="run folder under --out")
    parser.add_argument("--run", type=Path, default=None, help="score this run only")
    parser.add_argument(
        "--init", type=Path, default=None, help="start from this run's weights (seqlm train --init)"
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    corpus = planted_corpus(args.out, args.sequences, args.seed, args.min_gap, args.max_gap)
    run = args.run or args.out / args.name
    timing = {} if args.run else train(corpus, run, args.budget, args.sets, args.init)
    rows = curve(run, corpus)
    with open(args.out / "curve.jsonl", "a", encoding="utf-8") as log:
        log.write(json.dumps({"run": str(run), **timing, "curve": rows}) + "\n")
    if args.json:
        verdicts = [left_chance(rows, a) for a in ("first", "later")]
        print(
            json.dumps({"run": str(run), **timing, "curve": rows, "verdicts": verdicts}, indent=1)
        )
    else:
        print(f"{run} {timing}")
        print_curve(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
