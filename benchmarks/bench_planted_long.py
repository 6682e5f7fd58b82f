"""Planted 4,000-token gap at T = 8,192: many pairs a sequence, a gap curriculum.

Issue 19's test: a token deciding one 4,000 positions later, learned at T = 8,192.
The corpus is `seqlm.datasets.planted_multi` (`--pairs` key/query pairs a sequence,
each query `--min-gap`..`--max-gap` after its own key). One call is one phase: it
generates and ingests the corpus (reused when there), trains one GPT (optionally from
`--init`, a run of an earlier phase: the gap curriculum), and prints, for every kept
checkpoint, the cross-entropy and top-1 on the planted answers of the tuning split
against chance (log 4) and the same answers' CE under an n-gram fitted on the train
split, with the median distance from each query to its key.

    # phase 1: gaps 100-1,000 (4 sequences a row of 8,192)
    python benchmarks/bench_planted_long.py --out /tmp/p4k/short --min-gap 100 \\
        --max-gap 1000 --sequences 400 --name run --set train.max_steps=300 [--json]
    # phase 2: gaps 3,990-4,010 (one sequence a row), from phase 1's weights
    python benchmarks/bench_planted_long.py --out /tmp/p4k/long --min-gap 3990 \\
        --max-gap 4010 --sequences 160 --name run --init /tmp/p4k/short/run \\
        --set train.max_steps=300

`MODEL_SETS` (1 layer, 32 wide, 1 head, rotary, block 8,192, batch 1, no dropout or
weight decay, no early stopping) are applied first; `--set` adds to or overrides them.
With `--score-only RUN` it scores RUN's checkpoints on this phase's corpus (e.g. phase
1's run on the 4,000-gap corpus, before any training at that gap).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
from pathlib import Path

import numpy as np
from bench_planted_curve import checkpoint_rows
from bench_planted_curve import train as train_run

from seqlm.datasets.planted import write_strings
from seqlm.datasets.planted_multi import (
    KEY_BASE,
    QUERY_BASE,
    VALUES,
    multi_pair_sequences,
    planted_targets,
    query_symbols,
)

MODEL_SETS = [
    "model.block_size=8192",
    "model.n_layer=1",
    "model.n_embd=32",
    "model.n_head=1",
    "model.dropout=0",
    "model.positions=rotary",
    "train.batch_size=1",
    "train.lr=5e-3",
    "train.warmup_steps=20",
    "train.weight_decay=0",
    "train.eval_every=50",
    "train.checkpoint_every=50",
    "train.eval_batches=2",
    "train.early_stopping=0",
]


def widened_run(run: Path, block_size: int, dest: Path) -> Path:
    """A copy of `run` whose config says `block_size` (rotary models only).

    A rotary GPT has no weight that depends on the block size (the cos/sin tables are
    rebuilt from the config), so a model trained on short rows is the same model at
    8,192; scoring reads the block size from config.json, hence the copy. Training
    needs none: `--init RUN --set model.block_size=N` takes a rotary run to N.
    """
    if not (dest / "config.json").is_file():
        config = json.loads((run / "config.json").read_text())
        if config["model"]["positions"] != "rotary":
            raise SystemExit(f"{run}: only a rotary run can be widened to {block_size}")
        shutil.copytree(run, dest)
        config["model"]["block_size"] = block_size
        (dest / "config.json").write_text(json.dumps(config, indent=1))
    return dest


def build_corpus(out: Path, args: argparse.Namespace) -> Path:
    """Generate and ingest the multi-pair corpus once (reused when already there)."""
    from seqlm.ingest import ingest

    corpus = out / "corpus"
    if not (corpus / "manifest.json").is_file():
        sequences = multi_pair_sequences(
            args.sequences, args.seed, args.min_gap, args.max_gap, args.pairs, args.spread
        )
        raw = write_strings(out / "raw", "synth", sequences)
        ingest("birdsong-strings", [raw], corpus, workers=1)
    return corpus


def _sequences(corpus, split: str) -> list[np.ndarray]:
    rows = corpus.split(split)
    offsets, lengths = rows["offset"].to_list(), rows["length"].to_list()
    return [
        np.asarray(corpus.tokens[o : o + n], np.int64)
        for o, n in zip(offsets, lengths, strict=True)
    ]


def _queries(corpus, pairs: int) -> set[int]:
    ids = corpus.vocabulary.token_to_id
    return {ids[q] for q in query_symbols(pairs) if q in ids}


def planted_scores(run: Path, corpus, checkpoint: str, pairs: int, split: str = "tuning") -> dict:
    """CE and top-1 over the planted answers of `split`."""
    import torch

    from seqlm.evaluation.model_scorer import load_run_model

    model = load_run_model(run, checkpoint).model.eval()
    queries = _queries(corpus, pairs)
    nll, hits = [], []
    with torch.no_grad():
        for seq in _sequences(corpus, split):
            at = planted_targets(seq, queries)
            logp = model(torch.from_numpy(seq)[None]).logits.float().log_softmax(-1)[0]
            answers = torch.from_numpy(seq[at + 1])
            picked = logp[torch.from_numpy(at)]
            nll.extend((-picked.gather(1, answers[:, None])[:, 0]).tolist())
            hits.extend((picked.argmax(-1) == answers).tolist())
    return {"n": len(nll), "ce": float(np.mean(nll)), "top1": float(np.mean(hits))}


def _key_positions(seq: np.ndarray, tokens: tuple[str, ...], pairs: int) -> list[tuple[int, int]]:
    """(query position, its key's position) for every pair of one sequence."""
    keys, found = {}, []
    for i, t in enumerate(seq.tolist()):
        code = ord(tokens[t][0]) if len(tokens[t]) == 1 else 0
        if KEY_BASE <= code < QUERY_BASE:
            keys[(code - KEY_BASE) // VALUES] = i
        elif QUERY_BASE <= code < QUERY_BASE + pairs:
            found.append((i, keys[code - QUERY_BASE]))
    return found


def query_attention(run: Path, corpus, checkpoint: str, pairs: int, near: int = 100) -> list[dict]:
    """Per layer and head, over the tuning query rows: mean weight on the row's own key
    and mass within `near` positions of the key's distance, against uniform attention."""
    import torch

    from seqlm.analysis.attention_capture import capture_attention_inputs
    from seqlm.evaluation.model_scorer import load_run_model

    model = load_run_model(run, checkpoint).model.eval()
    tokens = corpus.vocabulary.tokens
    sums: dict[tuple[int, int], np.ndarray] = {}
    count = 0
    for seq in _sequences(corpus, "tuning"):
        found = _key_positions(seq, tokens, pairs)
        rows = torch.tensor([q for q, _ in found])
        keys = torch.tensor([k for _, k in found])
        captured = capture_attention_inputs(model, seq)
        for layer, inputs in captured.layers.items():
            q, k = inputs.q[0][:, rows].float(), inputs.k[0].float()  # (H, n, d), (H, T, d)
            scores = (q @ k.transpose(-1, -2)) * inputs.scale
            causal = torch.arange(k.shape[1])[None, :] > rows[:, None]
            weights = scores.masked_fill(causal, float("-inf")).softmax(-1)  # (H, n, T)
            lag = rows[:, None] - torch.arange(k.shape[1])[None, :]
            band = (lag - (rows - keys)[:, None]).abs() <= near
            on_key = weights.gather(-1, keys[None, :, None].expand(len(weights), -1, 1))[..., 0]
            for head in range(len(weights)):
                row = np.array(  # summed over query rows; divided by their count below
                    [
                        on_key[head].sum(),
                        (weights[head] * band).sum(),
                        (1.0 / (rows + 1)).sum(),
                        (band & ~causal).sum(-1).div(rows + 1).sum(),
                    ]
                )
                sums[(layer, head)] = sums.get((layer, head), 0) + row
        count += len(found)
    return [
        {
            "layer": layer,
            "head": head,
            "on_key": float(v[0] / count),
            "near_key": float(v[1] / count),
            "uniform_on_key": float(v[2] / count),
            "uniform_near_key": float(v[3] / count),
        }
        for (layer, head), v in sorted(sums.items())
    ]


def key_distances(corpus, pairs: int) -> dict:
    """Distance from each tuning query mark back to its key (the lookup's reach)."""
    tokens = corpus.vocabulary.tokens
    distances = []
    for seq in _sequences(corpus, "tuning"):
        text = [tokens[int(t)] for t in seq]
        keys = {
            (ord(s[0]) - 0x100) // 4: i for i, s in enumerate(text) if 0x100 <= ord(s[0]) < 0x180
        }
        for i, s in enumerate(text):
            if len(s) == 1 and 0x180 <= ord(s) < 0x180 + pairs:
                distances.append(i - keys[ord(s) - 0x180])
    return {
        "min": int(np.min(distances)),
        "median": float(np.median(distances)),
        "max": int(np.max(distances)),
    }


def ngram_planted(corpus, pairs: int, order: int, split: str = "tuning") -> dict:
    """CE of a Kneser-Ney n-gram fitted on the train split, on `split`'s planted answers."""
    from seqlm.evaluation.ngram import KneserNeyModel

    model = KneserNeyModel.fit(_sequences(corpus, "train"), corpus.vocab_size, order)
    queries = _queries(corpus, pairs)
    nll = []
    for seq in _sequences(corpus, split):
        for i in planted_targets(seq, queries).tolist():
            nll.append(-math.log(model.next_token_distribution(seq[: i + 1])[seq[i + 1]]))
    return {"order": order, "ce": float(np.mean(nll)), "n": len(nll)}


def curve(run: Path, corpus_path: Path, pairs: int) -> list[dict]:
    """One row per kept checkpoint: step, tokens, tuning loss, planted scores."""
    return checkpoint_rows(
        run, corpus_path, lambda corpus, name: planted_scores(run, corpus, name, pairs)
    )


def print_rows(rows: list[dict]) -> None:
    print("step | tokens | tuning loss | planted CE | planted top-1 | n")
    for r in rows:
        print(
            f"{r['step']} | {r['tokens'] or 0:,} | {r['tuning_loss']:.4f} | {r['ce']:.3f} | "
            f"{r['top1']:.0%} | {r['n']}"
        )
    print(f"(chance on the planted answers: log 4 = {math.log(4):.3f})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=160)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--min-gap", type=int, default=3990)
    parser.add_argument("--max-gap", type=int, default=4010)
    parser.add_argument("--spread", type=int, default=None, help="keys in the first N")
    parser.add_argument("--near", type=int, default=10, help="band around the key distance")
    parser.add_argument("--ngram-order", type=int, default=4)
    parser.add_argument("--init", type=Path, default=None, help="start from this run")
    parser.add_argument(
        "--widen",
        type=int,
        default=None,
        help="score --score-only RUN (or copy --init) at this block size; a rotary --init "
        "needs no copy: --set model.block_size=N changes it (seqlm.training.transfer)",
    )
    parser.add_argument("--set", dest="sets", action="append", default=[])
    parser.add_argument("--name", default="run", help="run folder under --out")
    parser.add_argument("--score-only", type=Path, default=None, help="score this run only")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    corpus = build_corpus(args.out, args)
    if args.widen is not None:
        for attr in ("init", "score_only"):
            given = getattr(args, attr)
            if given is not None:
                wide = args.out / f"{given.name}-{attr}-{args.widen}"
                setattr(args, attr, widened_run(given, args.widen, wide))
    run = args.score_only or args.out / args.name
    timing = {}
    if args.score_only is None:
        timing = train_run(corpus, run, None, [*MODEL_SETS, *args.sets], init=args.init)
    from seqlm.corpus import load_corpus

    result = {
        "run": str(run),
        **timing,
        "key_distance": key_distances(load_corpus(corpus), args.pairs),
        "ngram": ngram_planted(load_corpus(corpus), args.pairs, args.ngram_order),
        "chance": math.log(4),
        "curve": curve(run, corpus, args.pairs),
    }
    last = sorted((run / "checkpoints").glob("step_*"))[-1].name
    result["query_attention"] = {
        "checkpoint": last,
        "near": args.near,
        "heads": query_attention(run, load_corpus(corpus), last, args.pairs, args.near),
    }
    with open(args.out / "planted_long.jsonl", "a", encoding="utf-8") as log:
        log.write(json.dumps(result) + "\n")
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(f"{run} {timing} key distance {result['key_distance']} n-gram {result['ngram']}")
        print_rows(result["curve"])
        print(f"attention of the query rows at {last} (within {args.near} of the key's distance)")
        for h in result["query_attention"]["heads"]:
            print(
                f"layer {h['layer']} head {h['head']}: on the key {h['on_key']:.4f} "
                f"(uniform {h['uniform_on_key']:.5f}), near it {h['near_key']:.4f} "
                f"(uniform {h['uniform_near_key']:.4f})"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
