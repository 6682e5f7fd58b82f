"""The training recipe against the n-gram and the LSTM, on generated and real corpora.

For each corpus: train the recipe's GPT (`seqlm train CORPUS --budget B`, no shape
given), train the LSTM baseline with the same settings and budget, fit the n-grams, and
score the held-out split. Printed per corpus: perplexity of each model, the model's
cross-entropy difference to each baseline with a 95% bootstrap interval resampled by
sequence (paired: the same resampled sequences for both), and for planted long-range
corpora the cross-entropy on the planted targets (the symbol after each `Q`).

    python benchmarks/bench_recipe.py --corpus planted-long --corpus planted-local \\
        --seeds 0 1 --budget 1Mtok --out /tmp/bench_recipe [--json]
    python benchmarks/bench_recipe.py --corpus ../shared/data/...corpus-folder --budget 3Mtok

Budgets in tokens make the figures independent of machine load; one torch thread.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from seqlm.datasets.planted import (
    QUERY,
    decisive_mask,
    local_sequences,
    long_range_sequences,
    write_strings,
)

BOOTSTRAP = 1000


def _generated(kind: str, seed: int, work: Path, count: int, gaps: tuple[int, int]) -> Path:
    from seqlm.ingest import ingest

    folder = work / f"{kind}-{seed}"
    corpus = folder / "corpus"
    if (corpus / "manifest.json").is_file():
        return corpus
    if kind == "planted-long":
        sequences = long_range_sequences(count, seed=seed, min_gap=gaps[0], max_gap=gaps[1])
    else:
        sequences = local_sequences(count, seed=seed)
    raw = write_strings(folder / "raw", "synth", sequences)
    ingest("birdsong-strings", [raw], corpus)
    return corpus


def paired_ci(model: np.ndarray, other: np.ndarray, sequence: np.ndarray, seed: int = 0):
    """Mean per-token CE difference (model - other) and its 95% bootstrap interval,
    resampling whole sequences."""
    ids, owner = np.unique(sequence, return_inverse=True)
    diff_sum = np.bincount(owner, weights=model - other, minlength=ids.size)
    count = np.bincount(owner, minlength=ids.size).astype(np.float64)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, ids.size, size=(BOOTSTRAP, ids.size))
    means = diff_sum[draws].sum(axis=1) / count[draws].sum(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(diff_sum.sum() / count.sum()), float(low), float(high)


def run_one(
    corpus_path: Path,
    out: Path,
    budget: str,
    lstm: bool = True,
    sets: tuple[str, ...] = (),
    init: Path | None = None,
    lstm_sets: tuple[str, ...] = (),
) -> dict:
    """Train (or reuse) `out/run`, from `init`'s weights when given (a warm-up run: its
    tokens are not counted here), and score it against the baselines; `lstm_sets`
    (`train.max_tokens=N`) override the LSTM's training settings."""
    import torch

    from seqlm.corpus import load_corpus
    from seqlm.evaluation.report import EvalOptions, evaluate_run
    from seqlm.training.config import resolve_settings
    from seqlm.training.session import train_on_corpus

    torch.set_num_threads(1)
    run = out / "run"
    began, began_cpu = time.perf_counter(), time.process_time()
    if not (run / "best").is_dir():
        overrides = ["train.cpu_threads=1", *sets]
        settings = resolve_settings(None, overrides, None, budget=budget, recipe=True)
        train_on_corpus(corpus_path, run, settings, init=init)
    train_s = time.perf_counter() - began
    train_cpu_s = time.process_time() - began_cpu  # the machine is shared: CPU time too
    corpus = load_corpus(corpus_path)
    evaluation = evaluate_run(
        run,
        corpus,
        EvalOptions(
            split="held_out",
            baselines=("ngram", "lstm") if lstm else ("ngram",),
            device="cpu",
            lstm_train=_train_overrides(lstm_sets),
        ),
    )
    scores = evaluation.scores
    model = scores["model"]
    ngram_name = next(n for n in scores if n.startswith("best n-gram"))
    lstm_name = next((n for n in scores if "lstm" in n.lower()), None)
    config = json.loads((run / "config.json").read_text())
    row: dict = {
        "corpus": str(corpus_path),
        "budget": budget,
        "sets": list(sets),
        "init": str(init) if init else None,
        "lstm_sets": list(lstm_sets),
        "shape": {k: config["model"][k] for k in ("n_layer", "n_embd", "n_head", "block_size")},
        "dropout": config["model"]["dropout"],
        "train_s": round(train_s, 1),
        "train_cpu_s": round(train_cpu_s, 1),
        "targets": len(model),
    }
    query = corpus.vocabulary.token_to_id.get(QUERY)
    planted = decisive_mask(model.previous, query) if query is not None else None
    compared = [("ngram", ngram_name)] + ([("lstm", lstm_name)] if lstm_name else [])
    for label, name in [("model", "model"), *compared]:
        s = scores[name]
        row[f"{label}_ppl"] = float(np.exp(-s.log_prob.mean()))
        if planted is not None and planted.any():
            row[f"{label}_planted_ce"] = float(-s.log_prob[planted].mean())
    for label, name in compared:
        mean, low, high = paired_ci(-model.log_prob, -scores[name].log_prob, model.sequence)
        row[f"vs_{label}"] = {"ce_diff": mean, "ci95": [low, high]}
        if planted is not None and planted.any():  # the rest: filler, Q marks, ends
            rest = ~planted
            mean, low, high = paired_ci(
                -model.log_prob[rest], -scores[name].log_prob[rest], model.sequence[rest]
            )
            row[f"vs_{label}_unplanted"] = {"ce_diff": mean, "ci95": [low, high]}
    row["ngram_name"] = ngram_name
    return row


def _train_overrides(sets: tuple[str, ...]) -> dict:
    """`train.max_tokens=6000000` -> {"max_tokens": 6000000} (TOML literals)."""
    import tomllib

    out = {}
    for item in sets:
        key, _, value = item.partition("=")
        if not key.startswith("train."):
            raise SystemExit(f"--lstm-set takes train.KEY=VALUE, got {item!r}")
        out[key.removeprefix("train.")] = tomllib.loads(f"v = {value}")["v"]
    return out


def _sets_suffix(sets: list[str]) -> str:
    """Run-folder suffix naming the overrides, so each variant trains its own run."""
    return "".join("-" + item.replace("=", "") for item in sets)


def _print(rows: list[dict]) -> None:
    header = "corpus | shape (L x d, ctx, drop) | GPT ppl | n-gram ppl | LSTM ppl | "
    header += "CE GPT-ngram [95% CI] | CE GPT-LSTM [95% CI] | planted CE GPT/ngram/LSTM"
    print(header)
    for r in rows:
        s = r["shape"]
        planted = "/".join(
            f"{r[k]:.3f}" if k in r else "-"
            for k in ("model_planted_ce", "ngram_planted_ce", "lstm_planted_ce")
        )
        lstm = r.get("vs_lstm", {"ce_diff": float("nan"), "ci95": [float("nan")] * 2})
        cells = [
            Path(r["corpus"]).parent.name or r["corpus"],
            f"{s['n_layer']}x{s['n_embd']}, {s['block_size']}, {r['dropout']}",
            f"{r['model_ppl']:.4f}",
            f"{r['ngram_ppl']:.4f}",
            f"{r.get('lstm_ppl', float('nan')):.4f}",
            "{:+.4f} [{:+.4f}, {:+.4f}]".format(r["vs_ngram"]["ce_diff"], *r["vs_ngram"]["ci95"]),
            "{:+.4f} [{:+.4f}, {:+.4f}]".format(lstm["ce_diff"], *lstm["ci95"]),
            planted,
        ]
        print(" | ".join(cells))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", action="append", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--budget", default="1Mtok")
    parser.add_argument("--sequences", type=int, default=600)
    parser.add_argument("--min-gap", type=int, default=50, help="planted-long: key to Q, least")
    parser.add_argument("--max-gap", type=int, default=500, help="planted-long: key to Q, most")
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        help="a setting that overrides the recipe (model.dropout=0.2), for sweeps; repeatable",
    )
    parser.add_argument("--no-lstm", action="store_true", help="skip the LSTM baseline (time)")
    parser.add_argument(
        "--init",
        default=None,
        help="generated corpora: start the GPT from this run folder under the corpus's "
        "folder (a context warm-up run, e.g. cw128/run from bench_planted_curve.py)",
    )
    parser.add_argument(
        "--lstm-set",
        dest="lstm_sets",
        action="append",
        default=[],
        help="train.KEY=VALUE for the LSTM baseline only (train.max_tokens=6000000: the "
        "tokens of the GPT's warm-up and main runs together); repeatable",
    )
    parser.add_argument("--out", type=Path, default=Path("bench_recipe_out"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rows = []
    args.out.mkdir(parents=True, exist_ok=True)
    for spec in args.corpus:
        generated = spec in ("planted-long", "planted-local")
        for seed in args.seeds if generated else [None]:
            if generated:
                gaps = (args.min_gap, args.max_gap)
                corpus = _generated(spec, seed, args.out, args.sequences, gaps)
                out = corpus.parent / f"budget-{args.budget}{_sets_suffix(args.sets)}"
                if args.init:
                    init = corpus.parent / args.init
                    out = out.with_name(f"{out.name}-init-{Path(args.init).parts[0]}")
            else:
                corpus = Path(spec)
                out = args.out / f"{corpus.name}-budget-{args.budget}{_sets_suffix(args.sets)}"
            row = run_one(
                corpus,
                out,
                args.budget,
                not args.no_lstm,
                tuple(args.sets),
                init if generated and args.init else None,
                tuple(args.lstm_sets),
            )
            rows.append(row)
            with open(args.out / "rows.jsonl", "a", encoding="utf-8") as log:
                log.write(json.dumps(rows[-1]) + "\n")  # each row as soon as it is measured
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        _print(rows)
    return 0


def chain_excess(corpus_path: str, run: str, seed: int = 0) -> dict:
    """Where a run loses on a planted-local corpus: on the held-out filler-to-filler
    targets, the generating chain's CE, the model's CE, and the model's probability mass
    on successors the chain never takes.

        python -c "from bench_recipe import chain_excess; print(chain_excess(CORPUS, RUN))"
    """
    import torch

    from seqlm.corpus import load_corpus
    from seqlm.datasets.planted import FILLER, _chain
    from seqlm.evaluation.model_scorer import load_run_model

    corpus = load_corpus(corpus_path)
    model = load_run_model(run).model.eval()
    chain = _chain(seed)
    vocab = corpus.vocabulary.token_to_id
    symbol_ids = np.array([vocab.get(c, -1) for c in FILLER])  # -1: never in the corpus
    state_of = {int(i): k for k, i in enumerate(symbol_ids) if i >= 0}
    true_ce, model_ce, leaked = [], [], []
    held = corpus.split("held_out")
    for offset, length in zip(held["offset"].to_list(), held["length"].to_list(), strict=True):
        seq = np.asarray(corpus.tokens[offset : offset + length], dtype=np.int64)
        with torch.no_grad():
            probs = torch.softmax(model(torch.from_numpy(seq[None, :])).logits[0], -1).numpy()
        for t in range(length - 1):
            a, b = state_of.get(int(seq[t])), state_of.get(int(seq[t + 1]))
            if a is None or b is None:
                continue
            possible = symbol_ids[(chain[a] > 0) & (symbol_ids >= 0)]
            true_ce.append(-np.log(chain[a, b]))
            model_ce.append(-np.log(probs[t, seq[t + 1]]))
            leaked.append(1.0 - probs[t, possible].sum())
    return {
        "targets": len(true_ce),
        "chain_ce": float(np.mean(true_ce)),
        "model_ce": float(np.mean(model_ce)),
        "mass_on_impossible": float(np.mean(leaked)),
    }


if __name__ == "__main__":
    raise SystemExit(main())


def lesion_ci(corpus_path: str, runs: dict[str, str], seed: int = 0) -> dict:
    """Held-out pre-lesion CE of the model(s) against the per-bird n-grams, with the paired
    95% bootstrap interval by sequence: `runs` is {"all": POOLED_RUN} or {bird: RUN}.

        python -c "from bench_recipe import lesion_ci; print(lesion_ci(CORPUS, RUNS))"
    """
    import dataclasses

    import numpy as np

    from seqlm.corpus import load_corpus
    from seqlm.evaluation.model_scorer import scorer_from_run
    from seqlm.evaluation.scores import TokenScores
    from seqlm.studies.lesion import (
        LesionOptions,
        _evaluation_rows,
        _per_group_ngram,
        _sequences,
    )

    corpus = load_corpus(corpus_path)
    options = LesionOptions(device="cpu")
    groups = sorted(str(g) for g in corpus.index["group"].unique().to_list())
    index = _evaluation_rows(corpus, options, groups).filter(
        __import__("polars").col("condition") == "pre"
    )
    sequences = _sequences(corpus, index)
    ngram = _per_group_ngram(corpus, index, sequences, options, {})
    parts = []
    labels = index["group"].cast(str).to_numpy()
    for key, run in runs.items():
        members = np.arange(len(sequences)) if key == "all" else np.flatnonzero(labels == key)
        scorer, _ = scorer_from_run(run, name="model", device="cpu")
        scored = scorer.score([sequences[i] for i in members])
        parts.append(dataclasses.replace(scored, sequence=members[scored.sequence]))
    model = TokenScores.concat(parts)
    order = np.lexsort((model.position, model.sequence))
    model = TokenScores(
        **{f.name: getattr(model, f.name)[order] for f in dataclasses.fields(model)}
    )
    drop = corpus.vocabulary.condition_ids
    model, ngram = model.without_tokens(drop), ngram.without_tokens(drop)
    result = {}
    for group in ["all", *groups]:
        keep = np.ones(len(model), bool) if group == "all" else labels[model.sequence] == group
        mean, low, high = paired_ci(
            -model.log_prob[keep], -ngram.log_prob[keep], model.sequence[keep], seed
        )
        result[group] = {
            "model_ppl": float(np.exp(-model.log_prob[keep].mean())),
            "per_bird_ngram_ppl": float(np.exp(-ngram.log_prob[keep].mean())),
            "ce_diff": mean,
            "ci95": [low, high],
        }
    return result
