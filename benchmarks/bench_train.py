"""Training throughput: seqlm's trainer against the hand-written reference loop.

    python benchmarks/bench_train.py                  # CPU: contexts 64 and 256, 3 repeats
    python benchmarks/bench_train.py --steps 100 --repeats 1 --contexts 64   # a smoke run
    python benchmarks/bench_train.py --json out.json
    python benchmarks/bench_train.py --long --json long.json   # dense mask vs block-wise

`--long` is a different benchmark (benchmarks/long_step.py): one training step at
contexts 1k-16k on packed MIMIC-IV demo subjects, dense document mask against
block-wise attention: peak memory and tokens/s, same model, same batch tokens, same
options (`--loss-impl`, `--checkpoint [blocks|sublayers]`, `--plain-mlp` apply to both).

Same shape (4 layers x 128 wide, 4 heads), same batch (12 rows), same token file (the
real pre-lesion finch corpus, built into a temporary folder unless `--corpus` names
one), same number of steps, in one run. `../shared/bench/reference_loop.py` draws random
windows from tokens.bin; seqlm trains through its full path: the packed, document-aware
loader, `Trainer` (fused AdamW, clipping, schedule), the GPT. Both count
tokens/s as steps x batch x context over the steps after the first `min(10, steps/5)`,
and every measurement runs in its own subprocess; runs are interleaved (reference,
seqlm, seqlm compiled, reference, ...) so that load from other processes falls on all of
them alike. The ratio is median seqlm / median reference; >= 1.0 means seqlm is at least
as fast. With CUDA available a GPU row (bf16 autocast in seqlm, fp32 reference) is added.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO.parent / "shared" / "bench" / "reference_loop.py"
FINCH = REPO.parent / "shared" / "data" / "birdsong" / "koparkar2024_mman_lesions"
SHAPE = {"layers": 4, "heads": 4, "dim": 128, "batch": 12}


def build_finch_corpus(folder: Path) -> Path:
    from seqlm.ingest import ingest

    files = sorted(FINCH.glob("bird*_prelesion"))
    if not files:
        raise SystemExit(f"finch data not found under {FINCH}")
    ingest("birdsong-strings", files, folder)
    return folder


def seqlm_worker(corpus: Path, context: int, steps: int, compile_model: bool, device: str) -> dict:
    """One seqlm measurement, in this process; returns the same fields as the reference."""
    import torch

    from seqlm.corpus import load_corpus
    from seqlm.corpus.loader import BatchLoader, LoaderConfig
    from seqlm.model import GPT, preset
    from seqlm.training.callbacks import TrainCallback
    from seqlm.training.config import TrainConfig
    from seqlm.training.distributed import DistContext, resolve_device
    from seqlm.training.trainer import Trainer

    timed_from = min(10, steps // 5)

    class StepClock(TrainCallback):
        name = "step_clock"

        def __init__(self) -> None:
            self.start = 0.0
            self.stop = 0.0

        def _now(self) -> float:
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            return time.perf_counter()

        def on_step_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
            if trainer.counters.step == timed_from:
                self.start = self._now()
            if trainer.counters.step == steps:
                self.stop = self._now()

    torch.manual_seed(0)
    corpus_data = load_corpus(corpus)
    config = preset(
        "micro",
        vocab_size=corpus_data.vocab_size,
        block_size=context,
        n_layer=SHAPE["layers"],
        n_head=SHAPE["heads"],
        n_embd=SHAPE["dim"],
    )
    model = GPT(config)
    train = TrainConfig(
        max_steps=steps,
        batch_size=SHAPE["batch"],
        lr=1e-3,
        warmup_steps=20,
        beta2=0.99,
        compile=compile_model,
        device=device,
        log_every=10,
    )
    loader = BatchLoader.from_corpus(
        corpus_data, "train", LoaderConfig(context=context, batch_size=SHAPE["batch"])
    )
    clock = StepClock()
    trainer = Trainer(
        model,
        train,
        loader,
        ctx=DistContext(device=resolve_device(device)),
        callbacks=[clock],
    )
    result = trainer.fit()
    seconds = clock.stop - clock.start
    timed = steps - timed_from
    return {
        "tokens_per_s": round(timed * SHAPE["batch"] * context / seconds, 1),
        "ms_per_step": round(1000 * seconds / timed, 2),
        "final_loss": round(result.train_loss or float("nan"), 4),
        "params": model.num_parameters(),
    }


def run_json(command: list[str], threads: int | None) -> dict:
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)  # torch's intra-op threads, in both loops
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(
    kind: str, corpus: Path, vocab: int, dtype: str, context: int, device: str, args
) -> dict:
    if kind == "reference":
        command = [
            sys.executable,
            str(REFERENCE),
            "--tokens",
            str(corpus / "tokens.bin"),
            "--dtype",
            dtype,
            "--vocab",
            str(vocab),
            "--layers",
            str(SHAPE["layers"]),
            "--heads",
            str(SHAPE["heads"]),
            "--dim",
            str(SHAPE["dim"]),
            "--block",
            str(context),
            "--batch",
            str(SHAPE["batch"]),
            "--steps",
            str(args.steps),
            "--device",
            device,
        ]
    else:
        command = [
            sys.executable,
            __file__,
            "--worker",
            "--corpus",
            str(corpus),
            "--contexts",
            str(context),
            "--steps",
            str(args.steps),
            "--device",
            device,
        ] + (["--compile"] if kind == "seqlm_compiled" else [])
    return run_json(command, args.threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, help="corpus folder (default: build finch)")
    parser.add_argument("--contexts", default="64,256")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--device", help="cpu or cuda (default: cpu, then cuda when a GPU is available)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="OMP_NUM_THREADS for every measurement (default: torch's own choice); "
        "1 avoids thread oversubscription on a machine busy with other work",
    )
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled rows")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--long",
        action="store_true",
        help="long-context mode: dense mask vs block-wise at --contexts (default "
        "1024,4096,8192,16384) on packed MIMIC demo subjects",
    )
    parser.add_argument(
        "--batch-tokens", type=int, default=16384, help="--long: tokens per step (rows x T)"
    )
    parser.add_argument(
        "--loss-impl", default="auto", help="--long: the model's loss_impl, in both modes"
    )
    parser.add_argument(
        "--checkpoint",
        nargs="?",
        const="blocks",
        default="none",
        choices=("none", "blocks", "sublayers"),
        help="--long: activation checkpointing in both modes: of whole blocks (the "
        "flag alone), or of each sublayer (sublayers)",
    )
    parser.add_argument(
        "--plain-mlp",
        action="store_true",
        help="--long: the model's own MLP instead of the lean one (gelu recomputed), in both modes",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--compile", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.long:
        main_long(args)
        return
    contexts = [int(c) for c in args.contexts.split(",")]

    if args.worker:
        device = args.device or "cpu"
        result = seqlm_worker(args.corpus, contexts[0], args.steps, args.compile, device)
        print(json.dumps(result))
        return

    with tempfile.TemporaryDirectory() as scratch:
        corpus = args.corpus or build_finch_corpus(Path(scratch) / "finch")
        manifest = json.loads((corpus / "manifest.json").read_text())
        vocab = int(manifest["vocabulary"]["size"])
        dtype = manifest["token_dtype"]
        kinds = ["reference", "seqlm"] + ([] if args.no_compile else ["seqlm_compiled"])
        if args.device:
            devices = [args.device]
        else:
            import torch

            devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        rows = []
        for device, context in [(d, c) for d in devices for c in contexts]:
            runs: dict[str, list[dict]] = {kind: [] for kind in kinds}
            for repeat in range(args.repeats):
                for kind in kinds:
                    result = measure(kind, corpus, vocab, dtype, context, device, args)
                    runs[kind].append(result)
                    print(
                        f"  {device} ctx {context} {kind} run {repeat + 1}: "
                        f"{result['tokens_per_s']:.0f} tokens/s",
                        file=sys.stderr,
                        flush=True,
                    )
            medians = {k: statistics.median(r["tokens_per_s"] for r in v) for k, v in runs.items()}
            row = {
                "device": device,
                "context": context,
                "batch": SHAPE["batch"],
                "steps": args.steps,
                "threads": args.threads,
                "repeats": args.repeats,
                **{f"{k}_tokens_per_s": v for k, v in medians.items()},
                "ratio": round(medians["seqlm"] / medians["reference"], 3),
                "all_runs": {k: [r["tokens_per_s"] for r in v] for k, v in runs.items()},
                "final_loss": {k: v[-1]["final_loss"] for k, v in runs.items()},
            }
            if "seqlm_compiled" in medians:
                row["ratio_compiled"] = round(medians["seqlm_compiled"] / medians["reference"], 3)
            rows.append(row)

    print(
        f"{'device':>6} {'ctx':>4} {'reference':>10} {'seqlm':>10} {'ratio':>6} "
        f"{'compiled':>10} {'ratio':>6}   (tokens/s, median of {args.repeats})"
    )
    for row in rows:
        compiled = row.get("seqlm_compiled_tokens_per_s")
        print(
            f"{row['device']:>6} {row['context']:>4} {row['reference_tokens_per_s']:>10.0f} "
            f"{row['seqlm_tokens_per_s']:>10.0f} {row['ratio']:>6.3f} "
            + (f"{compiled:>10.0f} {row['ratio_compiled']:>6.3f}" if compiled else "")
        )
    print(json.dumps(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


def main_long(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from long_step import build_mimic_corpus, print_long_table, run_long

    raw = args.contexts if args.contexts != "64,256" else "1024,4096,8192,16384"
    contexts = [int(c) for c in raw.split(",")]
    with tempfile.TemporaryDirectory() as scratch:
        corpus = args.corpus or build_mimic_corpus(Path(scratch) / "mimic")
        options = {
            "loss_impl": args.loss_impl,
            "checkpoint": args.checkpoint,
            "lean_mlp": not args.plain_mlp,
        }
        rows = run_long(corpus, contexts, args.repeats, args.batch_tokens, Path(scratch), options)
    print_long_table(rows)
    print(json.dumps(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
