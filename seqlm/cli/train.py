"""`seqlm train` and `seqlm runs show`.

`seqlm.training` is imported inside the functions: it imports torch, which `seqlm --help`
and every other command should not wait for.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from seqlm.cli.progress_bar import RichProgress
from seqlm.outputs import claim_output


def _torchrun(nproc: int, args: list[str]) -> int:
    """Run this same command as `nproc` processes under torchrun; returns its exit code."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "seqlm.train",
        *args,
    ]
    return subprocess.call(command)


def train_command(
    corpus: Annotated[Path, typer.Argument(help="Corpus folder (from `seqlm ingest`).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder to write.")],
    preset: Annotated[
        str | None, typer.Option("--preset", "-p", help="Model size: micro, small or base.")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="TOML file with [model] and [train] tables (keys: seqlm config show).",
        ),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            "-s",
            help="table.key=value (TOML literal), e.g. model.layers=6 train.steps=500; "
            "`seqlm config show` lists every key.",
        ),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run in --out from its last checkpoint.")
    ] = False,
    nproc: Annotated[
        int, typer.Option("--nproc", help="Processes (DDP) on this machine, via torchrun.")
    ] = 1,
    budget: Annotated[
        str | None,
        typer.Option(
            "--budget",
            "-b",
            help="Training budget the recipe plans for: minutes (10m, 90s, 1h), tokens "
            "(2Mtok) or FLOPs (1e15flops). Default 10m when no preset is given.",
        ),
    ] = None,
    init: Annotated[
        Path | None,
        typer.Option("--init", help="Start from this run's weights (fine-tune a pooled model)."),
    ] = None,
) -> None:
    """Train a GPT on a corpus and write a run folder (weights, metrics, checkpoints)."""
    from seqlm.training.train_run import TrainRequest, train_run

    request = TrainRequest(
        preset=preset,
        config=config,
        sets=tuple(set_ or ()),
        budget=budget,
        resume=resume,
        init=init,
    )
    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        raise typer.Exit(_torchrun(nproc, _torchrun_args(corpus, out, request)))
    is_main = int(os.environ.get("RANK", "0")) == 0
    progress = RichProgress() if is_main else None
    try:
        result = train_run(corpus, out, request, progress)
    finally:
        if progress is not None:
            progress.finish()
    if is_main:
        _print_result(out, result)


def _torchrun_args(corpus: Path, out: Path, request: Any) -> list[str]:  # noqa: ANN401
    """This command's arguments again, for each torchrun process (TrainRequest)."""
    args = [str(corpus), "--out", str(out)]
    args += ["--preset", request.preset] if request.preset else []
    args += ["--config", str(request.config)] if request.config else []
    for item in request.sets:
        args += ["--set", item]
    args += ["--resume"] if request.resume else []
    args += ["--budget", request.budget] if request.budget else []
    args += ["--init", str(request.init)] if request.init else []
    return args


def _print_result(out: Path, result: Any) -> None:  # noqa: ANN401 (TrainResult)
    console = Console()
    _print_choices(console, out)
    console.print(
        f"[bold green]run written[/] to {escape(str(out))}  (stopped: {result.stop_reason})"
    )
    console.print(f"  steps {result.step:,}   tokens {result.tokens:,}   {result.elapsed_s:.1f} s")
    if result.train_loss is not None:
        console.print(f"  train loss   {result.train_loss:.4f}")
    if result.eval_loss is not None:
        console.print(f"  tuning loss  {result.eval_loss:.4f}")
    if result.best_eval_loss is not None:
        console.print(f"  best tuning  {result.best_eval_loss:.4f} at step {result.best_step}")
    console.print(f"next: seqlm runs show {out}")


def _print_choices(console: Console, out: Path) -> None:
    """What the recipe chose and what --init did, from the run's config.json."""
    from seqlm.training.checkpoint import RunFolder
    from seqlm.training.transfer import InitReport

    config = RunFolder(out).read_config()
    recipe = config.get("recipe")
    if recipe and recipe.get("applied"):
        model = config["model"]
        console.print(
            f"recipe ({recipe['budget']}): {model['n_layer']} layers x {model['n_embd']}, "
            f"{model['n_head']} heads, context {model['block_size']}, dropout "
            f"{model['dropout']}; why: {out}/recipe.json"
        )
    if config.get("init"):
        console.print(InitReport(**config["init"]).describe())


def runs_show_command(
    run: Annotated[Path, typer.Argument(help="Run folder written by `seqlm train`.")],
    plot: Annotated[
        Path | None,
        typer.Option("--plot", help="Where to write the loss-curve PNG (default RUN/loss.png)."),
    ] = None,
) -> None:
    """Show a run's settings, final metrics and checkpoints, and plot its loss curves."""
    from seqlm.training.runs import plot_loss_curves, summarize_run

    summary = summarize_run(run)
    png_path = claim_output(plot or summary.path / "loss.png", "seqlm runs show", is_file=True)
    console = Console()
    config = summary.config
    console.print(f"[bold]{escape(str(summary.path))}[/]  preset {config.get('preset')}")
    model = config.get("model", {})
    shape = ", ".join(f"{k}={model[k]}" for k in sorted(model) if model[k] is not None)
    console.print(f"  model: {shape}")
    train = config.get("train", {})
    console.print("  train: " + ", ".join(f"{k}={train[k]}" for k in sorted(train)))
    corpus = config.get("corpus", {})
    console.print(f"  corpus: {corpus.get('path')} ({corpus.get('tokens', 0):,} tokens)")
    state = "finished" if summary.finished else "not finished"
    console.print(f"  {state}; latest checkpoint step {summary.step}, kept {summary.checkpoints}")
    if summary.final is not None:
        final = summary.final
        for key in ("stop_reason", "step", "tokens", "elapsed_s", "train_loss", "eval_loss"):
            if final.get(key) is not None:
                console.print(f"  {key:>14}: {final[key]}")
    if summary.best is not None:
        console.print(
            f"  best tuning loss {summary.best.get('loss')} at step {summary.best['step']}"
        )
    png = plot_loss_curves(summary, png_path)
    console.print(f"  loss curves: {png}")


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)
    runs = typer.Typer(help="Inspect run folders.", no_args_is_help=True)
    runs.command("show")(runs_show_command)
    app.add_typer(runs, name="runs")
