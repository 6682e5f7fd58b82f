"""A corpus folder and settings in, a run folder out: the library behind `seqlm train`.

Works the same in one process and under `torchrun` (each process calls
`train_on_corpus`; rank 0 writes). A resumed run takes every setting from the run's
config.json, so it continues exactly the run that was started.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

import seqlm
from seqlm.constants import TOKENIZER_FILE
from seqlm.corpus import load_corpus
from seqlm.corpus.loader import BatchLoader, LoaderConfig
from seqlm.corpus.window_time import announce_window_time
from seqlm.errors import ConfigError, CorpusError
from seqlm.model.config import GPTConfig, preset
from seqlm.model.gpt import GPT
from seqlm.model.token_parts import sized_for_vocabulary, token_part_map
from seqlm.outputs import check_run_output, output_lock
from seqlm.progress import Progress
from seqlm.training.callbacks import TrainCallback
from seqlm.training.checkpoint import RunFolder
from seqlm.training.config import DEFAULT_CONTEXT, RunSettings, TrainConfig
from seqlm.training.distributed import DistContext, init_distributed, shutdown
from seqlm.training.divergence import DivergenceWatch
from seqlm.training.recipe import apply_recipe
from seqlm.training.stopping import announce_stopping_rule
from seqlm.training.trainer import Trainer, TrainResult
from seqlm.training.transfer import init_model_config, load_init_weights

RECIPE_FILE = "recipe.json"


def build_gpt_config(settings: RunSettings, vocab_size: int) -> Any:
    """The GPTConfig for a preset, the corpus's vocabulary and the user's overrides."""

    overrides = dict(settings.model)
    block_size = int(overrides.pop("block_size", DEFAULT_CONTEXT))
    try:
        return preset(settings.preset, vocab_size=vocab_size, block_size=block_size, **overrides)
    except ConfigError:
        raise
    except (TypeError, ValueError, KeyError) as err:
        raise ConfigError(f"model settings: {err}") from None


def gpt_from_dict(model_config: dict[str, Any]) -> nn.Module:
    """A freshly initialised GPT for a config.json's `model` table."""

    try:
        return GPT(GPTConfig.from_dict(model_config))
    except (TypeError, ValueError, KeyError) as err:
        raise CorpusError(f"config.json: model settings not understood: {err}") from None


def corpus_identity(corpus: Any) -> dict[str, Any]:
    """What config.json records of the corpus, to check a resume uses the same one."""
    manifest = corpus.manifest or {}
    return {
        "path": str(Path(corpus.path).resolve()),
        "vocab_size": int(corpus.vocab_size),
        "tokens": int(len(corpus.tokens)),
        "sequences": int(corpus.index.height),
        "vocabulary_hash": (manifest.get("vocabulary") or {}).get("hash"),
    }


def make_loaders(
    corpus: Any, train: TrainConfig, context: int, ctx: DistContext
) -> tuple[BatchLoader, BatchLoader | None]:
    """Training batches (shuffled, seeded) and tuning batches (fixed order), sharded by
    rank. No tuning split means no evaluation, early stopping or best/."""
    common = {"rank": ctx.rank, "world_size": ctx.world_size}
    train_data = BatchLoader.from_corpus(
        corpus,
        train.train_split,
        LoaderConfig(
            context=context,
            batch_size=train.batch_size,
            packing=train.packing,
            seed=train.seed,
            shuffle_simultaneous=train.shuffle_simultaneous,
        ),
        accum_steps=train.grad_accum,
        **common,
    )
    if corpus.split(train.eval_split).height == 0:
        return train_data, None
    eval_data = BatchLoader.from_corpus(
        corpus,
        train.eval_split,
        LoaderConfig(
            context=context,
            batch_size=train.batch_size,
            packing=train.packing,
            seed=train.seed,
            shuffle=False,
        ),
        **common,
    )
    return train_data, eval_data


def _resolved_run_config(
    run: RunFolder,
    corpus: Any,
    settings: RunSettings | None,
    resume: bool,
    init: Path | None = None,
) -> tuple[dict[str, Any], TrainConfig]:
    if resume:
        if settings is not None:
            raise ConfigError(
                "a resumed run takes its settings from the run folder's config.json; "
                "drop --preset/--config/--set, or start a new run"
            )
        config = run.read_config()
        recorded = config.get("corpus", {})
        current = corpus_identity(corpus)
        for key in ("vocab_size", "tokens", "sequences", "vocabulary_hash"):
            if recorded.get(key) != current[key]:
                raise CorpusError(
                    f"{corpus.path}: not the corpus this run was trained on "
                    f"({key} {current[key]!r}, the run recorded {recorded.get(key)!r})"
                )
        try:
            train = TrainConfig.from_dict(config["train"])
        except KeyError:
            raise CorpusError(f"{run.config_path}: no [train] settings") from None
        return config, train
    settings = settings or RunSettings()
    device = "cuda" if settings.train.device.startswith("cuda") else "cpu"
    if settings.train.device == "auto" and torch.cuda.is_available():
        device = "cuda"
    user_model = dict(settings.model)
    settings, recipe = apply_recipe(settings, corpus, device, fine_tune=init is not None)
    if init is not None:
        if "dropout" in settings.model:
            user_model.setdefault("dropout", settings.model["dropout"])
        model_table = init_model_config(init, user_model, corpus.vocab_size)
        if recipe is not None:  # the shape is the init run's, not the recipe's
            recipe["model"] = {k: model_table[k] for k in recipe["model"]}
            recipe["reasons"]["n_layer/n_embd"] = f"the shape of the --init run {init}"
    else:
        model_table = build_gpt_config(settings, corpus.vocab_size).to_dict()
    # A part model's table sizes come from the corpus's vocabulary (config.json keeps them).
    model_table, parts = sized_for_vocabulary(model_table, corpus.vocabulary)
    if parts is not None:
        model_table = GPTConfig.from_dict(model_table).to_dict()
    config = {
        "seqlm_version": seqlm.__version__,
        "model_type": "gpt",
        "preset": "recipe" if recipe and recipe["applied"] else settings.preset,
        "model": model_table,
        "train": settings.train.to_dict(),
        "corpus": corpus_identity(corpus),
    }
    if recipe is not None:
        config["recipe"] = recipe
    return config, settings.train


def train_on_corpus(
    corpus_path: str | Path,
    out: str | Path,
    settings: RunSettings | None = None,
    *,
    resume: bool = False,
    progress: Progress | None = None,
    callbacks: Sequence[TrainCallback] = (),
    init: str | Path | None = None,
) -> TrainResult:
    """Train a GPT on a corpus folder, writing (or continuing) the run folder `out`.

    `init`: a run folder whose weights start this run (`seqlm.training.transfer`)."""

    # Under torchrun only rank 0 writes, so only it holds the run folder's lock.
    is_main = int(os.environ.get("RANK", "0")) == 0
    lock = output_lock(out, "seqlm train") if is_main else contextlib.nullcontext()
    with lock:
        if is_main:
            # The init run is an input too: --overwrite never replaces it.
            check_run_output(out, [corpus_path, *([init] if init is not None else [])])
        return _train_locked(corpus_path, out, settings, resume, progress, callbacks, init)


def _train_locked(
    corpus_path: str | Path,
    out: str | Path,
    settings: RunSettings | None,
    resume: bool,
    progress: Progress | None,
    callbacks: Sequence[TrainCallback],
    init: str | Path | None,
) -> TrainResult:

    run = RunFolder(out)
    corpus = load_corpus(Path(corpus_path))
    init = Path(init) if init is not None and not resume else None
    config, train = _resolved_run_config(run, corpus, settings, resume, init)
    if not resume:
        run.check_fresh()
    if train.cpu_threads > 0:
        torch.set_num_threads(train.cpu_threads)
    ctx = init_distributed(train.device)
    try:
        config["world_size"] = ctx.world_size
        if ctx.is_main:
            run.clean_temporaries()
            if not resume:
                run.write_config(config, tokenizer=Path(corpus.path) / TOKENIZER_FILE)
                if "recipe" in config:
                    run.write_json(RECIPE_FILE, config["recipe"])
                run.metrics_path.unlink(missing_ok=True)
        ctx.barrier()
        # Same seed on every process: identical initial weights without a broadcast.
        torch.manual_seed(train.seed)
        model = gpt_from_dict(config["model"])
        if config["model"].get("token_parts"):
            # The same map on a resume too (the checkpoint's buffer holds the same ids).
            model.set_token_parts(token_part_map(corpus.vocabulary))
        if init is not None:
            report = load_init_weights(model, init, list(corpus.vocabulary.tokens))
            config["init"] = report.to_dict()
            if ctx.is_main:
                run.write_config(config)
        train_data, eval_data = make_loaders(corpus, train, config["model"]["block_size"], ctx)
        if ctx.is_main:
            rule = announce_stopping_rule(train, has_tuning_split=eval_data is not None)
            coverage = announce_window_time(corpus, config["model"]["block_size"])
            if not resume:
                config["stopping"] = rule
                if coverage is not None:
                    config["window_time"] = coverage.to_dict()
                run.write_config(config)
        trainer = Trainer(
            model,
            train,
            train_data,
            eval_data,
            run=run,
            ctx=ctx,
            callbacks=[*callbacks, DivergenceWatch()],
            progress=progress,
        )
        checkpoint = run.latest_checkpoint() if resume else None
        if checkpoint is not None:
            trainer.resume(checkpoint)
        else:
            trainer.metrics.truncate_after(0)  # a resume killed before any checkpoint
        return trainer.fit()
    finally:
        shutdown(ctx)
