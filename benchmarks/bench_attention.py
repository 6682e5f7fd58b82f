"""Streaming attention statistics vs materialising every map: time and peak memory.

For each context length (default 512 and 2,048) the script builds a corpus of random
symbol sequences, each exactly one context long, with times (so the elapsed-time pass
runs too), and a random GPT of that context (default 4 layers x 4 heads, width 128; the
weights do not change the cost). Then, in a fresh child process per run, it computes
the same per-head statistics two ways, one sequence per forward:

- `streaming`: `seqlm.analysis.corpus_stats.corpus_attention_statistics`, i.e. what
  `seqlm attention stats` runs: captured q/k per layer, weights formed a chunk of
  queries at a time (the kernel's chunked path on CPU);
- `materialised`: the obvious alternative: every layer's full softmax map
  (layers x heads x T x T, as `output_attentions=True` would return) is formed and
  kept, then the distance histogram, mean distance and entropy are read off the maps.

Peak memory is the child's peak resident set (VmHWM); `base_mb` is its peak after
imports, model and corpus loading, so `peak_mb - base_mb` is what the statistics added.
Each (mode, context) runs `--repeats` times (fresh child each time); the figures are the
medians. Output: one JSON line per (mode, context), then a table.

    python benchmarks/bench_attention.py                     # 512 and 2048, 8 sequences, median of 3
    python benchmarks/bench_attention.py --contexts 256 --sequences 4   # quick look
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

SYMBOLS = [f"s{i:02d}" for i in range(40)]


def peak_mb() -> float:
    """This process's peak resident set (VmHWM) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def build_corpus(folder: Path, context: int, sequences: int) -> None:
    """`sequences` held-out sequences of context - 2 symbols (+ BOS/EOS = one context)."""
    from seqlm.corpora_adapters.base import Ingested, RejectLog
    from seqlm.corpus import build_corpus as write_corpus
    from seqlm.corpus.splits import SplitConfig
    from seqlm.events import EventTable
    from seqlm.vocabularies import TokenScheme

    rng = np.random.default_rng(0)
    frames = []
    for number in range(sequences + 1):  # entity 0 is the train split (fits the vocabulary)
        length = len(SYMBOLS) if number == 0 else context - 2
        codes = SYMBOLS if number == 0 else list(rng.choice(SYMBOLS, length))
        frames.append(
            pl.DataFrame(
                {
                    "entity": f"e{number:04d}",
                    "time": np.cumsum(rng.exponential(0.1, length)),
                    "order": np.arange(length),
                    "kind": "sym",
                    "code": codes,
                    "split": "train" if number == 0 else "held_out",
                }
            )
        )
    frame = pl.concat(frames)
    ingested = Ingested(EventTable.from_frame(frame, ()), RejectLog(), frame.height, "bench", {})
    write_corpus(ingested, folder, TokenScheme(), SplitConfig())


def materialised_statistics(model, corpus, edges: tuple[int, ...], time_edges) -> dict:
    """Full maps of every layer kept at once per sequence, and the same statistics as the
    streaming path read off them: mass by distance bin, mean distance, entropy, mass
    beyond 8/32/128, sink mass, mass by elapsed-time bin and mean elapsed time."""
    import torch

    from seqlm.analysis.attention_capture import capture_attention_inputs
    from seqlm.analysis.corpus_stats import EXCLUDED_TOKEN_IDS

    time_edges = torch.tensor(time_edges, dtype=torch.float64)
    totals: dict[int, torch.Tensor] = {}
    for seq_id in corpus.split("held_out")["seq_id"].to_list():
        ids = torch.from_numpy(np.asarray(corpus.sequence(seq_id), dtype=np.int64))[None]
        times = torch.from_numpy(np.asarray(corpus.sequence_times(seq_id), dtype=np.float64))
        inputs = capture_attention_inputs(model, ids)
        data = ~torch.isin(ids[0], torch.tensor(EXCLUDED_TOKEN_IDS))
        maps, sinks = [], []
        for captured in inputs.layers.values():  # every layer's (1, H, T, T) map is held
            scores = (captured.q @ captured.k.transpose(-1, -2)) * captured.scale
            full = scores.masked_fill(~captured.mask, -torch.inf).softmax(-1)
            sinks.append((full * ~data).sum(-1))
            maps.append(full * data / (full * data).sum(-1, keepdim=True))
        length = ids.shape[1]
        distance = torch.arange(length)[:, None] - torch.arange(length)[None, :]
        bins = (torch.bucketize(distance, torch.tensor(edges), right=True) - 1).clamp(min=0)
        elapsed = (times[:, None] - times[None, :]).clamp(min=0).float()
        time_bins = (torch.bucketize(elapsed.double(), time_edges, right=True) - 1).clamp(min=0)
        for layer, weights in enumerate(maps):
            weights = weights[0][:, data].nan_to_num(0.0)  # data queries: (H, Q, T)
            heads = weights.shape[0]
            flat = weights.reshape(heads, -1)
            histogram = torch.zeros(heads, len(edges)).index_add_(1, bins[data].reshape(-1), flat)
            by_time = torch.zeros(heads, len(time_edges)).index_add_(
                1, time_bins[data].reshape(-1), flat
            )
            mean = (weights * distance[data].clamp(min=0)).sum((1, 2))
            mean_elapsed = (weights * elapsed[data]).sum((1, 2))
            entropy = -(weights * weights.clamp(min=1e-30).log()).sum((1, 2))
            beyond = [(weights * (distance[data] > k)).sum((1, 2)) for k in (8, 32, 128)]
            sink = sinks[layer][0][:, data].sum(-1)
            sums = torch.cat(
                [histogram.reshape(-1), by_time.reshape(-1), mean, mean_elapsed, entropy, sink]
                + beyond
            )
            totals[layer] = sums if layer not in totals else totals[layer] + sums
    return {"checksum": float(sum(t.sum() for t in totals.values()))}


def child(args: argparse.Namespace) -> None:
    import torch

    from seqlm.analysis.corpus_stats import AttentionStatsOptions, corpus_attention_statistics
    from seqlm.corpus import load_corpus
    from seqlm.model import GPT, GPTConfig

    torch.set_num_threads(args.threads)
    corpus = load_corpus(args.corpus)
    torch.manual_seed(0)
    model = GPT(
        GPTConfig(
            vocab_size=corpus.vocab_size,
            n_layer=args.layers,
            n_head=args.heads,
            n_embd=args.width,
            block_size=args.context,
        )
    ).eval()
    base = peak_mb()
    start = time.perf_counter()
    if args.child == "streaming":
        options = AttentionStatsOptions(batch_tokens=args.context)  # one sequence a forward
        stats = corpus_attention_statistics(model, corpus, options)
        detail = {"queries": stats.queries, "time_bins": len(stats.time_edges or ())}
    else:
        from seqlm.analysis.corpus_stats import (
            corpus_windows,
            data_time_edges,
            select_sequences,
        )
        from seqlm.analysis.stats_bins import distance_bin_edges

        windows = corpus_windows(corpus, select_sequences(corpus, "held_out", None), args.context)
        detail = materialised_statistics(
            model, corpus, distance_bin_edges(args.context), data_time_edges(corpus, windows)
        )
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "base_mb": base, "peak_mb": peak_mb(), **detail}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contexts", type=int, nargs="+", default=[512, 2048])
    parser.add_argument("--sequences", type=int, default=8)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="runs per row; medians kept")
    parser.add_argument("--child", choices=["streaming", "materialised"], help=argparse.SUPPRESS)
    parser.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--context", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_attention_") as tmp:
        for context in args.contexts:
            corpus = Path(tmp) / f"corpus_{context}"
            build_corpus(corpus, context, args.sequences)
            for mode in ("streaming", "materialised"):
                command = [
                    sys.executable, __file__, "--child", mode, "--corpus", str(corpus),
                    "--context", str(context), "--layers", str(args.layers),
                    "--heads", str(args.heads), "--width", str(args.width),
                    "--threads", str(args.threads),
                ]  # fmt: skip
                runs = []
                for _ in range(args.repeats):
                    result = subprocess.run(command, capture_output=True, text=True, check=True)
                    runs.append(json.loads(result.stdout.strip().splitlines()[-1]))
                medians = {
                    key: float(np.median([run[key] for run in runs]))
                    for key in ("seconds", "base_mb", "peak_mb")
                }
                record = {
                    "mode": mode,
                    "context": context,
                    "sequences": args.sequences,
                    "layers": args.layers,
                    "heads": args.heads,
                    "repeats": args.repeats,
                    **runs[-1],
                    **medians,
                    "seconds_all": [round(run["seconds"], 3) for run in runs],
                }
                print(json.dumps(record), flush=True)
                rows.append(record)
    print(f"\n{'mode':<13}{'context':>8}{'seconds':>10}{'added MB':>10}{'peak MB':>10}")
    for r in rows:
        added = r["peak_mb"] - r["base_mb"]
        print(
            f"{r['mode']:<13}{r['context']:>8}{r['seconds']:>10.2f}{added:>10.0f}{r['peak_mb']:>10.0f}"
        )


if __name__ == "__main__":
    main()
