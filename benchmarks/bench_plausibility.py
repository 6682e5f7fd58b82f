"""Plausibility of generated clinical trajectories, sampler variant by variant, beside the
real continuations of the same prompts (what `seqlm generate --check` prints, for
several samplers in one run).

Every held-out sequence of CORPUS gives up to `--per-sequence` prompts: its first
`--prompt-length` tokens, then every `--stride` tokens further (while `--max-tokens` real
tokens follow), so the real side is not only the first hours of each record. Each
variant draws `--n` samples of `--max-tokens` per prompt from RUN with the same seed, and
is measured by `seqlm.evaluation.plausibility_report.check_generations` against the real
continuations of the same prompts:

- `model alone`: what `seqlm generate` did before (only conditioning tokens banned);
- `no-conflict + paired`: static kinds (GENDER, AGE) never generated, no second value
  of a code at one time, a discharge only while its admission is open;
- `no-repeat + paired` (the default of `seqlm generate`): no second token of a code at
  one time at all (static kinds banned, paired discharges, as in every variant below);
- the last two with `--top-p` (0.95 unless given).

    python benchmarks/bench_plausibility.py RUN CORPUS            # table
    python benchmarks/bench_plausibility.py RUN CORPUS --json     # one JSON row per variant
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Variant:
    name: str
    static: bool
    repeats: str
    paired: bool
    top_p: float | None = None


def variants(top_p: float, names: str | None = None) -> list[Variant]:
    """The variants (module docstring); `names` keeps those whose position (0-based,
    comma-separated) is listed."""
    every = [
        Variant("model alone", False, "allow", False),
        Variant("static banned, no-conflict + paired", True, "no-conflict", True),
        Variant("no-repeat + paired (default)", True, "no-repeat", True),
        Variant(f"no-conflict + paired, top-p {top_p}", True, "no-conflict", True, top_p),
        Variant(f"no-repeat + paired, top-p {top_p}", True, "no-repeat", True, top_p),
    ]
    if names is None:
        return every
    return [every[int(number)] for number in names.split(",")]


def prompt_cuts(corpus, args: argparse.Namespace) -> list[tuple[int, int]]:
    """(seq_id, prompt length) of every prompt (module docstring)."""
    from seqlm.evaluation.plausibility_report import split_ids

    cuts = []
    for seq_id in split_ids(corpus, "held_out"):
        length = len(corpus.sequence(seq_id))
        for k in range(args.per_sequence):
            cut = args.prompt_length + k * args.stride
            if cut + args.max_tokens > length:
                break
            cuts.append((seq_id, cut))
    return cuts


def run_variant(loaded, corpus, variant: Variant, args: argparse.Namespace) -> dict:
    from seqlm.evaluation.generate import GenerationOptions, SamplingOptions, generate
    from seqlm.evaluation.plausibility_report import check_generations
    from seqlm.evaluation.plausibility_rules import static_token_ids
    from seqlm.evaluation.sampling_constraints import Grammar, SamplerConstraints
    from seqlm.export.meds import corpus_static_kinds

    vocab = corpus.vocabulary
    kinds = corpus_static_kinds(corpus.manifest)
    never = vocab.condition_ids
    if variant.static:
        never = np.union1d(never, static_token_ids(vocab, kinds))
    constraints = SamplerConstraints(repeats=variant.repeats, paired=variant.paired)
    grammar = Grammar.for_vocab(vocab, constraints) if constraints.active else None
    options = GenerationOptions(
        max_new_tokens=args.max_tokens,
        n_samples=args.n,
        sampling=SamplingOptions(top_p=variant.top_p),
        seed=args.seed,
    )
    began, cpu = time.perf_counter(), time.process_time()
    cuts = prompt_cuts(corpus, args)
    generations = [
        generate(loaded.model, corpus.sequence(i)[:cut], options, never_ids=never, grammar=grammar)
        for i, cut in cuts
    ]
    seconds, cpu_seconds = time.perf_counter() - began, time.process_time() - cpu
    report = check_generations(
        generations, corpus, kinds, real_cuts=cuts, max_tokens=args.max_tokens
    )
    return {
        "variant": variant.name,
        "sample_wall_s": round(seconds, 2),
        "sample_cpu_s": round(cpu_seconds, 2),
        "all_within_2x": report.all_within_2x,
        "time_gap_ks": report.gap_ks,
        "table": report.rows,
        "rows_measured": {
            "generated": report.generated.scored_rows,
            "real": report.real.scored_rows,
        },
    }


def print_table(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="plausibility, generated (real) per sampler variant", show_lines=False)
    table.add_column("measure")
    for row in rows:
        table.add_column(row["variant"], justify="right")
    measures = [m["label"] for m in rows[0]["table"]]

    def cell(value: float | None) -> str:
        return "-" if value is None else f"{value:.3g}"

    for number, label in enumerate(measures):
        cells = []
        for row in rows:
            entry = row["table"][number]
            mark = "" if entry["within_2x"] is not False else " !"
            cells.append(f"{cell(entry['generated'])} ({cell(entry['real'])}){mark}")
        table.add_row(label, *cells)
    table.add_row("time gap KS", *(cell(r["time_gap_ks"]) for r in rows))
    table.add_row("all within 2x", *(str(r["all_within_2x"]) for r in rows))
    table.add_row(
        "rows gen (real)",
        *(f"{r['rows_measured']['generated']} ({r['rows_measured']['real']})" for r in rows),
    )
    table.add_row("sampling cpu s", *(str(r["sample_cpu_s"]) for r in rows))
    Console(width=220).print(table)
    print("(real) is the real continuation of the same prompts; ! = not within 2x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--prompt-length", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-sequence", type=int, default=8)
    parser.add_argument("--stride", type=int, default=1024)
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument("--checkpoint", default="best")
    parser.add_argument("--variants", help="Positions of the variants to run, e.g. 0,1.")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    from seqlm.corpus import load_corpus
    from seqlm.evaluation.model_scorer import load_run_model

    torch.set_num_threads(1)
    loaded = load_run_model(args.run, args.checkpoint)
    corpus = load_corpus(args.corpus)
    rows = []
    for variant in variants(args.top_p, args.variants):
        rows.append(run_variant(loaded, corpus, variant, args))
        if args.json:
            print(json.dumps(rows[-1]), flush=True)
    if not args.json:
        print_table(rows)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory {peak:.0f} MiB")


if __name__ == "__main__":
    main()
