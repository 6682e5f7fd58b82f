"""Where a model's top-10 fails on a clinical corpus: held-out top-10 by token kind, and
how much of the miss is the order of events that share a timestamp.

For a run (GPT or LSTM) and the best Kneser-Ney n-gram (order chosen on the tuning
split, as `seqlm eval` does), each held-out target is put in one kind (time gap; code
alone; code + value bin; code + text value; other: a rare code or text folded into an
`[UNK]` token; special) and the table gives each kind's share of the targets and its
top-10 accuracy. The *order-free* column counts a target as found when the top-10 holds
any token still due at the target's timestamp (the target or a later token with the
same time; time-gap tokens only for a time-gap target): what a model that knew the set
of events at a time, but not the file's order among them, could reach at most. The
*set oracle* row is such a model made exact: it is told the tokens still due at the
target's timestamp (with their counts) and ranks the most frequent of them first (ties
in a fixed random order), so its top-10 is what knowing the set, and nothing of the
order, reaches; where 10 or fewer distinct tokens are due it always hits. The
*code-set oracle* is told only the codes still due (a lab's code, not its value bin or
text): it scores each token as the due share of its code times the token's share of
that code in the train split (ties to the token more frequent in train), what knowing
which tests a draw holds, but not their results, reaches.

    python benchmarks/bench_topk_by_kind.py --run RUN --corpus CORPUS [--json]

`--ngram-only CORPUS ...` prints the best n-gram's held-out perplexity, top-1 and top-10
for each corpus (e.g. the same MEDS data ingested twice, `seqlm ingest meds MEDS --out
FILE` and `seqlm ingest meds MEDS --out CODE --within-time-order code`: the events of a
timestamp in the file's order and in code order; docs/formats.md, "Events that share a
timestamp"). Each row names the corpus's within-time order.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seqlm.corpus import load_corpus
from seqlm.corpus.within_time_order import corpus_within_time_order
from seqlm.evaluation.baselines import select_ngram_order
from seqlm.evaluation.model_scorer import load_run_model
from seqlm.evaluation.ngram import KneserNeyModel, count_ngrams
from seqlm.evaluation.scores import PredictionTargets, prediction_targets

TOP_K = 10
TIME_GAP = "time gap"
KINDS = (TIME_GAP, "code", "code + value bin", "code + text", "other ([UNK])", "special")


def split_sequences(corpus: Any, split: str) -> list[np.ndarray]:
    ids = corpus.split(split)["seq_id"].to_list()
    return [np.asarray(corpus.sequence(i)).astype(np.int64) for i in ids]


def token_kinds(corpus_path: Path) -> np.ndarray:
    """One kind per vocabulary id, from the tokenizer and the scheme's data tokens."""
    vocab = json.loads((corpus_path / "tokenizer.json").read_text())["model"]["vocab"]
    data_tokens = json.loads((corpus_path / "scheme.json").read_text())["data_tokens"]
    kinds = np.empty(len(vocab), dtype=object)
    for name, token_id in vocab.items():
        parts = data_tokens.get(name)
        if name.startswith("[TIME//"):
            kinds[token_id] = TIME_GAP
        elif parts is None:
            kinds[token_id] = "special" if name.startswith("[") else "other ([UNK])"
        elif parts[1] is not None and parts[1] != "[TEXT_UNK]":
            kinds[token_id] = "code + text"
        else:
            kinds[token_id] = "code + value bin" if parts[2] is not None else "code"
    return kinds


@torch.no_grad()
def model_top_k(run: Path, sequences: list[np.ndarray]) -> np.ndarray:
    """The run's top-k ids per target, in windows of its context with stride context/2
    (every target after the first window sees at least half a window, as `seqlm eval`)."""
    loaded = load_run_model(run)
    model, context = loaded.model, int(loaded.config["model"]["block_size"])
    parts = []
    for sequence in sequences:
        start, done = 0, 1
        while done < len(sequence):
            stop = min(start + context, len(sequence))
            hidden = model.hidden_states(torch.as_tensor(sequence[start:stop])[None])
            new = np.arange(max(done, start + 1), stop)
            logits = model.head_logits(hidden[0, new - start - 1])
            parts.append(torch.topk(logits, TOP_K, dim=-1).indices.numpy())
            done, start = stop, stop - context // 2
    return np.concatenate(parts)


def best_ngram(corpus: Any) -> KneserNeyModel:
    counts = count_ngrams(split_sequences(corpus, "train"), corpus.vocab_size, 8)
    order = select_ngram_order(counts, split_sequences(corpus, "tuning")).best_order
    return KneserNeyModel(counts, order, name=f"{order}-gram KN")


def ngram_top_k(model: KneserNeyModel, targets: PredictionTargets) -> np.ndarray:
    context_ids = model._context_ids(model._preceding(targets))
    top = np.zeros((len(targets), TOP_K), dtype=np.int64)
    for low in range(0, len(targets), 1000):
        rows = model._dense_rows(context_ids[low : low + 1000])
        top[low : low + 1000] = np.argsort(-rows, axis=1)[:, :TOP_K]
    return top


def due_at_time(
    targets: PredictionTargets, times: np.ndarray, kinds: np.ndarray
) -> list[list[int]]:
    """Per target: the ids still due at its timestamp (itself and later same-time ids),
    one entry per due token, so a token due twice is listed twice."""
    due, flat = [], targets.flat_tokens
    ends = targets.sequence_start + np.bincount(targets.sequence)[targets.sequence] + 1
    for j, at in enumerate(targets.flat_index):
        stop = at
        while stop < ends[j] and times[stop] == times[at]:
            stop += 1
        ids = flat[at:stop].tolist()
        if kinds[flat[at]] != TIME_GAP:
            ids = [i for i in ids if kinds[i] != TIME_GAP]
        due.append(ids)
    return due


def set_oracle_top_k(due: list[list[int]], vocab_size: int, seed: int = 0) -> np.ndarray:
    """Per target, the top-10 of a model told the due tokens but not their order: the
    most frequent due ids first, ties in one fixed random order of the vocabulary (so no
    id order, which may follow the file's, breaks them); -1 fills unused places."""
    tie_rank = np.random.default_rng(seed).permutation(vocab_size)
    top = np.full((len(due), TOP_K), -1, dtype=np.int64)
    for j, ids in enumerate(due):
        counted = Counter(ids)
        ranked = sorted(counted, key=lambda i: (-counted[i], tie_rank[i]))[:TOP_K]
        top[j, : len(ranked)] = ranked
    return top


def token_codes(corpus_path: Path) -> np.ndarray:
    """The code of every vocabulary id (a data token's code; any other token is its own)."""
    vocab = json.loads((corpus_path / "tokenizer.json").read_text())["model"]["vocab"]
    data_tokens = json.loads((corpus_path / "scheme.json").read_text())["data_tokens"]
    codes = np.empty(len(vocab), dtype=object)
    for name, token_id in vocab.items():
        codes[token_id] = data_tokens[name][0] if name in data_tokens else name
    return codes


def code_set_oracle_top_k(
    due: list[list[int]], codes: np.ndarray, train_counts: np.ndarray
) -> np.ndarray:
    """Per target, the top-10 of a model told the codes still due but not their values:
    token score = (due events of its code) x P(token | code) in train."""
    tokens_of: dict[Any, list[int]] = {}
    for token_id, code in enumerate(codes):
        tokens_of.setdefault(code, []).append(token_id)
    by_code: dict[Any, list[tuple[float, int]]] = {}
    for code, tokens in tokens_of.items():
        total = int(train_counts[tokens].sum())
        # P(token | code) in train; a code never seen in train: its tokens alike.
        shares = train_counts[tokens] / total if total else np.full(len(tokens), 1 / len(tokens))
        ranked = sorted(zip(shares.tolist(), tokens, strict=True), reverse=True)
        by_code[code] = ranked[:TOP_K]  # only a code's ten likeliest can reach a top-10
    top = np.full((len(due), TOP_K), -1, dtype=np.int64)
    for j, ids in enumerate(due):
        due_codes = Counter(codes[i] for i in ids)
        scored = [
            (n * share, token_id)
            for code, n in due_codes.items()
            for share, token_id in by_code[code]
        ]
        # Ties (common: a code with one token scores its due count) go to the token
        # more frequent in train.
        scored.sort(key=lambda item: (item[0], train_counts[item[1]], item[1]), reverse=True)
        ranked = [token_id for _, token_id in scored[:TOP_K]]
        top[j, : len(ranked)] = ranked
    return top


def kind_table(tops: dict[str, np.ndarray], targets, due, kinds) -> list[dict[str, Any]]:
    target_kind = kinds[targets.token]
    due_sets = [set(ids) for ids in due]
    rows = []
    for kind in ("all", *KINDS):
        chosen = np.ones(len(targets), bool) if kind == "all" else target_kind == kind
        if not chosen.any():
            continue
        row: dict[str, Any] = {"kind": kind, "targets": int(chosen.sum())}
        row["share"] = round(float(chosen.mean()), 4)
        for name, top in tops.items():
            hit = (top == targets.token[:, None]).any(axis=1)
            free = np.array(
                [bool(due_sets[j].intersection(top[j].tolist())) for j in range(len(due))]
            )
            row[f"{name} top-10"] = round(float(hit[chosen].mean()), 4)
            row[f"{name} order-free"] = round(float(free[chosen].mean()), 4)
        rows.append(row)
    return rows


def by_kind(run: Path, corpus_path: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    corpus = load_corpus(corpus_path)
    held_out = split_sequences(corpus, "held_out")
    targets = prediction_targets(held_out, corpus.vocab_size)
    ids = corpus.split("held_out")["seq_id"].to_list()
    times = np.concatenate([np.asarray(corpus.sequence_times(i)) for i in ids])
    kinds = token_kinds(corpus_path)
    ngram = best_ngram(corpus)
    due = due_at_time(targets, times, kinds)
    tops = {
        "model": model_top_k(run, held_out),
        "n-gram": ngram_top_k(ngram, targets),
        "set oracle": set_oracle_top_k(due, corpus.vocab_size),
    }
    train_counts = np.bincount(
        np.concatenate(split_sequences(corpus, "train")), minlength=corpus.vocab_size
    )
    tops["code-set oracle"] = code_set_oracle_top_k(due, token_codes(corpus_path), train_counts)
    shared = times[targets.flat_index] == times[targets.flat_index - 1]
    facts = {
        "within-time order": corpus_within_time_order(corpus.manifest),
        "n-gram": ngram.name,
        "same time as the token before": round(float(shared.mean()), 4),
    }
    return kind_table(tops, targets, due, kinds), facts


def ngram_only(corpus_path: Path) -> dict[str, Any]:
    corpus = load_corpus(corpus_path)
    model = best_ngram(corpus)
    scores = model.score(split_sequences(corpus, "held_out"))
    return {
        "corpus": str(corpus_path),
        "within-time order": corpus_within_time_order(corpus.manifest),
        "n-gram": model.name,
        "perplexity": round(float(np.exp(-scores.log_prob.mean())), 2),
        "top-1": round(float(scores.top_k_hit(1).mean()), 4),
        "top-10": round(float(scores.top_k_hit(TOP_K).mean()), 4),
    }


def _cell(column: str, value: Any) -> str:
    fraction = column == "share" or "top-" in column or "order-free" in column
    return f"{value:.1%}" if fraction else str(value)


def print_rows(rows: list[dict[str, Any]]) -> None:
    columns = list(rows[0])
    print(" | ".join(columns))
    for row in rows:
        print(" | ".join(_cell(c, row[c]) for c in columns))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path)
    parser.add_argument("--corpus", type=Path)
    parser.add_argument("--ngram-only", type=Path, nargs="+")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.process_time()
    if args.ngram_only:
        rows, facts = [ngram_only(path) for path in args.ngram_only], {}
    else:
        rows, facts = by_kind(args.run, args.corpus)
    facts["cpu_s"] = round(time.process_time() - started, 1)
    if args.json:
        print(json.dumps({"rows": rows, **facts}))
        return
    print_rows(rows)
    print(", ".join(f"{k}: {v}" for k, v in facts.items()))


if __name__ == "__main__":
    main()
