"""Measured training speed, for a budget in wall-clock minutes.

A minute budget must become a number of tokens before the recipe can choose a shape,
an evaluation interval and a learning-rate schedule. Assuming a device speed (the
recipe used to assume 1.2e10 FLOP/s on a CPU) fails on a loaded machine: a finch run
planned for 7.27M tokens read 965k, with a shape, dropout and evaluation interval set
for the 7.27M (docs/training.md, "Budgets in minutes"). So the recipe times the real
trainer instead: a few optimizer steps of the candidate shape on the corpus's own
batches, one evaluation of the tuning batches it will use and one checkpoint, on the
threads the run will use. Nothing here touches the run folder or the global random
state the run is seeded from afterwards.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from seqlm.corpus.loader import BatchLoader, LoaderConfig
from seqlm.model.config import GPTConfig
from seqlm.model.gpt import GPT
from seqlm.model.token_parts import sized_for_vocabulary
from seqlm.training.checkpoint import RunFolder
from seqlm.training.config import TrainConfig
from seqlm.training.flops import flops_per_token
from seqlm.training.trainer import Trainer

WARMUP_STEPS = 2  # first steps pay for allocation and (on a GPU) kernel selection
MIN_TIMED_STEPS = 3
MAX_TIMED_STEPS = 12
# Time at least this much training (or MAX_TIMED_STEPS steps). The mean step time, not
# the median, is used: on a shared machine the stalls are part of what a long run pays
# (the median of 6 steps planned 2.07M tokens for a 10-minute finch run that read 1.60M).
MIN_TIMED_SECONDS = 3.0


@dataclass(frozen=True)
class Throughput:
    """What timing a shape on this machine gave (recorded in recipe.json)."""

    n_layer: int = field(metadata={"help": "blocks of the timed model"})
    n_embd: int = field(metadata={"help": "width of the timed model"})
    context: int = field(metadata={"help": "context of the timed model"})
    rows: int = field(metadata={"help": "rows a step"})
    threads: int = field(metadata={"help": "torch threads while timing"})
    timed_steps: int = field(metadata={"help": "optimizer steps timed after the warm-up"})
    step_s: float = field(metadata={"help": "mean wall seconds of one optimizer step"})
    step_cpu_s: float = field(metadata={"help": "mean process CPU seconds of one step"})
    tokens_per_step: float = field(metadata={"help": "mean tokens read a timed step"})
    eval_batch_s: float = field(metadata={"help": "wall seconds of one tuning batch"})
    checkpoint_s: float = field(metadata={"help": "wall seconds of one checkpoint write"})
    flops_per_token: float = field(metadata={"help": "training FLOPs a token of this shape"})
    spent_s: float = field(metadata={"help": "wall seconds the whole measurement took"})

    @property
    def tokens_per_s(self) -> float:
        """Training tokens a wall second, steps alone (no evaluation or checkpoints)."""
        return self.tokens_per_step / max(self.step_s, 1e-9)

    @property
    def flops_per_s(self) -> float:
        return self.tokens_per_s * self.flops_per_token

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        for key in ("step_s", "step_cpu_s", "eval_batch_s", "checkpoint_s", "spent_s"):
            record[key] = round(record[key], 5)
        record["tokens_per_s"] = round(self.tokens_per_s, 1)
        record["flops_per_s"] = float(f"{self.flops_per_s:.4g}")
        return record


def _timed(function) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    function()
    return time.perf_counter() - wall, time.process_time() - cpu


def _loaders(corpus: Any, train: TrainConfig, context: int) -> tuple[BatchLoader, BatchLoader]:
    def loader(split: str, shuffle: bool) -> BatchLoader:
        config = LoaderConfig(
            context=context,
            batch_size=train.batch_size,
            packing=train.packing,
            seed=train.seed,
            shuffle=shuffle,
        )
        return BatchLoader.from_corpus(corpus, split, config)

    tuning = train.eval_split if corpus.split(train.eval_split).height else train.train_split
    return loader(train.train_split, True), loader(tuning, False)


def measure_throughput(
    corpus: Any, model: dict[str, Any], train: TrainConfig, threads: int = 0
) -> Throughput:
    """Time the trainer on `corpus` with the model table `model` (GPTConfig fields
    without the vocabulary) and `train` (batch_size, device, precision...)."""
    started = time.perf_counter()
    previous_threads = torch.get_num_threads()
    rng = torch.get_rng_state()
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        table, parts = sized_for_vocabulary(
            {**model, "vocab_size": int(corpus.vocab_size)}, corpus.vocabulary
        )
        gpt = GPT(GPTConfig.from_dict(table))
        if parts is not None:  # a part model is timed with its parts, as it will train
            gpt.set_token_parts(parts)
        context = int(model["block_size"])
        settings = TrainConfig.from_dict(
            {**train.to_dict(), "max_steps": WARMUP_STEPS + MAX_TIMED_STEPS, "max_tokens": None}
            | {"max_minutes": None, "eval_batches": 1, "keep_last": 1, "tensorboard": False}
        )
        train_data, eval_data = _loaders(corpus, settings, context)
        with tempfile.TemporaryDirectory(prefix="seqlm-throughput-") as scratch:
            # ctx None: one process on the device train.device resolves to
            trainer = Trainer(gpt, settings, train_data, eval_data, run=RunFolder(scratch))
            timing = _time_trainer(trainer)
            record = Throughput(
                n_layer=int(model["n_layer"]),
                n_embd=int(model["n_embd"]),
                context=context,
                rows=settings.batch_size,
                threads=torch.get_num_threads(),
                flops_per_token=flops_per_token(gpt, context),
                spent_s=time.perf_counter() - started,
                **timing,
            )
    finally:
        torch.set_num_threads(previous_threads)
        torch.set_rng_state(rng)
    return record


def _time_trainer(trainer: Trainer) -> dict[str, Any]:
    for _ in range(WARMUP_STEPS):
        trainer.train_step()
    walls: list[float] = []
    cpus: list[float] = []
    tokens_before = trainer.counters.tokens
    while len(walls) < MAX_TIMED_STEPS and (
        len(walls) < MIN_TIMED_STEPS or sum(walls) < MIN_TIMED_SECONDS
    ):
        wall, cpu = _timed(trainer.train_step)
        walls.append(wall)
        cpus.append(cpu)
    eval_wall, _ = _timed(trainer.evaluate)
    save_wall, _ = _timed(trainer.save_checkpoint)
    return {
        "timed_steps": len(walls),
        "step_s": statistics.fmean(walls),
        "step_cpu_s": sum(cpus) / len(cpus),
        "tokens_per_step": (trainer.counters.tokens - tokens_before) / len(walls),
        "eval_batch_s": eval_wall,
        "checkpoint_s": save_wall,
    }
