"""Window, positions and depth of the GPT against the LSTM at a fixed token budget.

The diagnostics behind the large-corpus rule's windows (docs/training.md, "Why the GPT
lagged the LSTM"): each variant is trained by the same trainer for the same tokens
(cosine to zero over the budget, 20 warmup steps, weight decay 0.1, no dropout, one
evaluation at the end on the whole tuning split in windows of the variant's context),
and the table gives its CPU seconds (process time: quote these on a shared machine)
and tuning loss. Variants are `NAME:KIND:LAYERSxWIDTH:CONTEXTxROWS[:rotary][:lr=X]`.

    python benchmarks/bench_recipe_windows.py --corpus CORPUS --tokens 300000 \\
        --out /tmp/bench_windows [--variant gpt-c64-rope:gpt:4x128:64x16:rotary] [--json]

With no --variant, the seven rows of docs/training.md run in turn (about 7 CPU minutes on
the MIMIC-IV demo at 300k tokens).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

DEFAULT_VARIANTS = (
    "gpt-c256:gpt:4x128:256x4",
    "gpt-c256-rope:gpt:4x128:256x4:rotary",
    "gpt-c64:gpt:4x128:64x16",
    "gpt-c64-rope:gpt:4x128:64x16:rotary",
    "gpt2-c64-rope:gpt:2x128:64x16:rotary",
    "lstm-c256:lstm:2x128:256x4",
    "lstm-c64:lstm:2x128:64x16",
)


@dataclass(frozen=True)
class Variant:
    name: str
    kind: str
    layers: int
    width: int
    context: int
    rows: int
    positions: str = "learned"
    lr: float = 3e-3

    @classmethod
    def parse(cls, text: str) -> Variant:
        name, kind, shape, window, *rest = text.split(":")
        layers, width = (int(x) for x in shape.split("x"))
        context, rows = (int(x) for x in window.split("x"))
        positions = "rotary" if "rotary" in rest else "learned"
        lrs = [float(r.split("=", 1)[1]) for r in rest if r.startswith("lr=")]
        return cls(name, kind, layers, width, context, rows, positions, *lrs)


def train_settings(variant: Variant, tokens: int) -> dict:
    return {
        "batch_size": variant.rows,
        "lr": variant.lr,
        "weight_decay": 0.1,
        "warmup_steps": 20,
        "max_tokens": tokens,
        "eval_every": 10**9,  # only the final evaluation
        "eval_batches": 0,  # the whole tuning split
        "checkpoint_every": 10**9,
        "early_stopping": 0,
        "log_every": 50,
        "cpu_threads": 1,
    }


def run_variant(corpus: str, out: Path, variant: Variant, tokens: int) -> dict:
    import torch

    from seqlm.corpus import load_corpus
    from seqlm.evaluation.lstm import LSTMConfig, train_lstm
    from seqlm.training.config import TrainConfig
    from seqlm.training.train_run import TrainRequest, train_run

    torch.set_num_threads(1)
    train = train_settings(variant, tokens)
    folder = out / variant.name
    start_cpu, start_wall = time.process_time(), time.perf_counter()
    if variant.kind == "lstm":
        config = LSTMConfig(
            vocab_size=load_corpus(corpus).vocab_size,
            n_layer=variant.layers,
            n_embd=variant.width,
            block_size=variant.context,
        )
        result = train_lstm(corpus, folder, config, TrainConfig.from_dict(train))
    else:
        sets = [
            f"model.n_layer={variant.layers}",
            f"model.n_embd={variant.width}",
            f"model.n_head={max(2, variant.width // 32)}",
            f"model.block_size={variant.context}",
            f'model.positions="{variant.positions}"',
            "model.dropout=0.0",
        ] + [f"train.{key}={json.dumps(value)}" for key, value in train.items()]
        result = train_run(corpus, folder, TrainRequest(sets=tuple(sets)))
    return {
        **variant.__dict__,
        "tokens": result.tokens,
        "cpu_s": round(time.process_time() - start_cpu, 1),
        "wall_s": round(time.perf_counter() - start_wall, 1),
        "tuning_loss": result.eval_loss,
    }


def _print(rows: list[dict]) -> None:
    header = f"{'variant':<16} {'model':<11} {'window':<9} {'positions':<9} {'lr':>7} "
    print(header + f"{'tokens':>9} {'CPU s':>7} {'tuning loss':>12}")
    for r in rows:
        model = f"{r['kind']} {r['layers']}x{r['width']}"
        window = f"{r['context']}x{r['rows']}"
        positions = r["positions"] if r["kind"] == "gpt" else "-"
        print(
            f"{r['name']:<16} {model:<11} {window:<9} {positions:<9} {r['lr']:>7.0e} "
            f"{r['tokens']:>9,} {r['cpu_s']:>7.1f} {r['tuning_loss']:>12.3f}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--tokens", type=int, default=300_000)
    parser.add_argument("--variant", action="append", help="NAME:KIND:LxW:CTXxROWS[:rotary]")
    parser.add_argument("--out", type=Path, default=Path("bench_recipe_windows_out"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    variants = [Variant.parse(text) for text in (args.variant or DEFAULT_VARIANTS)]
    rows = [run_variant(args.corpus, args.out, v, args.tokens) for v in variants]
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        _print(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
