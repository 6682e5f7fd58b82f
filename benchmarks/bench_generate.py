"""Batched trajectory sampling with the KV cache: trajectories/s and tokens/s on the CPU.

Samples `--tokens` new tokens (full distribution, no stop token, so every trajectory has
exactly that length) after a short prompt from a randomly initialised GPT of the chosen
preset, with `sample_trajectories`:

- "loop": `--loop` trajectories one after another, each its own batch-1 call (what a
  caller without batching does);
- "batch B": B trajectories in one call, for each B of `--batches` (default 1, 32, 64,
  128).

Each row runs `--repeats` times; the median wall time is reported (CPU process time
beside it, since a loaded machine stretches wall time), and the speedup of every row's
tokens/s over the batch-1 row. Also, as before, greedy decoding of one sample with and
without the cache, checked to agree token for token. Prints a table, or JSON rows with
`--json`.

    python benchmarks/bench_generate.py                 # micro preset, 64 tokens
    python benchmarks/bench_generate.py --preset small --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from seqlm.evaluation.generate import (
    GenerationOptions,
    SamplingOptions,
    generate,
    sample_trajectories,
)
from seqlm.model import GPT, preset


def _timed(run: Callable[[int], int], repeats: int) -> tuple[float, float, int]:
    """Median wall and CPU seconds of `run(repeat)`, and the tokens it returned."""
    wall, cpu, tokens = [], [], 0
    for repeat in range(repeats):
        began, began_cpu = time.perf_counter(), time.process_time()
        tokens = run(repeat)
        wall.append(time.perf_counter() - began)
        cpu.append(time.process_time() - began_cpu)
    return statistics.median(wall), statistics.median(cpu), tokens


def batch_rows(model: GPT, prompt: list[int], args: argparse.Namespace) -> list[dict]:
    """One row per mode: the batch-1 loop, then each batch size."""

    def sample(n: int, repeat: int) -> list[list[int]]:
        generator = torch.Generator().manual_seed(repeat)
        drawn = sample_trajectories(model, prompt, n, args.tokens, generator=generator)
        if any(len(t) != args.tokens for t in drawn):  # no stop ids: every row runs out
            raise AssertionError("a trajectory stopped early")
        return drawn

    modes: list[tuple[str, int, Callable[[int], int]]] = [
        ("loop", args.loop, lambda r: sum(len(sample(1, r)[0]) for _ in range(args.loop)))
    ]
    for size in args.batches:
        modes.append((f"batch {size}", size, lambda r, n=size: sum(map(len, sample(n, r)))))
    rows = []
    for mode, trajectories, run in modes:
        wall, cpu, tokens = _timed(run, args.repeats)
        rows.append(
            {
                "benchmark": "generate_batched",
                "mode": mode,
                "trajectories": trajectories,
                "tokens": tokens,
                "wall_s": round(wall, 4),
                "cpu_s": round(cpu, 4),
                "trajectories_per_s": round(trajectories / wall, 2),
                "tokens_per_s": round(tokens / wall, 1),
            }
        )
    base = next((r for r in rows if r["mode"] == "batch 1"), rows[0])["tokens_per_s"]
    for row in rows:
        row["speedup_vs_batch_1"] = round(row["tokens_per_s"] / base, 2)
    return rows


def cache_row(model: GPT, prompt: list[int], args: argparse.Namespace) -> dict:
    """Greedy decoding of one sample with and without the cache (they must agree)."""
    options = GenerationOptions(
        max_new_tokens=args.tokens, sampling=SamplingOptions(temperature=0), stop_at_eos=False
    )
    outputs: dict[str, np.ndarray] = {}
    seconds: dict[str, float] = {}
    for mode in ("cached", "uncached"):
        run_options = GenerationOptions(**{**vars(options), "use_cache": mode == "cached"})

        def run(_: int, run_options: GenerationOptions = run_options, mode: str = mode) -> int:
            outputs[mode] = generate(model, prompt, run_options).samples[0]
            return len(outputs[mode])

        seconds[mode] = _timed(run, args.repeats)[0]
    return {
        "benchmark": "generate_cache",
        "tokens": args.tokens,
        "cached_s": round(seconds["cached"], 4),
        "uncached_s": round(seconds["uncached"], 4),
        "speedup": round(seconds["uncached"] / seconds["cached"], 2),
        "identical_tokens": bool(np.array_equal(outputs["cached"], outputs["uncached"])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="micro", help="model size (tiny, micro, small)")
    parser.add_argument("--tokens", type=int, default=64, help="tokens per trajectory")
    parser.add_argument("--prompt", type=int, default=16, help="prompt length")
    parser.add_argument("--vocab", type=int, default=1000, help="vocabulary size")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32, 64, 128])
    parser.add_argument("--loop", type=int, default=32, help="trajectories of the batch-1 loop")
    parser.add_argument("--repeats", type=int, default=3, help="runs per row (median)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--json", action="store_true", help="JSON rows instead of a table")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    block = args.prompt + args.tokens
    model = GPT(preset(args.preset, vocab_size=args.vocab, block_size=block)).eval()
    prompt = [1, *range(5, 4 + args.prompt)]
    sample_trajectories(model, prompt, 2, 4)  # warm-up
    setting = {"preset": args.preset, "parameters": model.num_parameters(), "threads": args.threads}
    rows = [{**setting, **row} for row in batch_rows(model, prompt, args)]
    cache = {**setting, **cache_row(model, prompt, args)}
    if args.json:
        for row in [*rows, cache]:
            print(json.dumps(row))
        return
    print(f"{args.preset}, {setting['parameters']:,} parameters, {args.threads} thread(s), "
          f"{args.tokens} tokens per trajectory, median of {args.repeats}")  # fmt: skip
    print(
        f"{'mode':<11}{'traj.':>6}{'wall s':>9}{'cpu s':>9}{'traj/s':>9}{'tokens/s':>10}{'x b1':>7}"
    )
    for r in rows:
        print(
            f"{r['mode']:<11}{r['trajectories']:>6}{r['wall_s']:>9.3f}{r['cpu_s']:>9.3f}"
            f"{r['trajectories_per_s']:>9.1f}{r['tokens_per_s']:>10.1f}"
            f"{r['speedup_vs_batch_1']:>7.1f}"
        )
    print(
        f"greedy, one sample: cached {cache['cached_s']:.3f} s, uncached "
        f"{cache['uncached_s']:.3f} s ({cache['speedup']}x), "
        f"identical tokens: {cache['identical_tokens']}"
    )


if __name__ == "__main__":
    main()
