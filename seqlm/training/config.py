"""Training settings: the `TrainConfig` dataclass and how a run's settings are resolved.

A run is configured by a model preset, an optional TOML file with `[model]` and
`[train]` tables, and `--set table.key=value` strings (values read as TOML literals,
never evaluated), applied in that order. Friendly aliases (`model.layers`,
`model.context`, `train.steps` ...) map to the dataclass fields.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from seqlm.config import check_fields, load_toml, options_from_mapping, parse_option_strings
from seqlm.errors import ConfigError
from seqlm.training.budget import Budget

# Friendly names for GPTConfig fields, as users write them on the command line.
MODEL_ALIASES: dict[str, str] = {
    "layers": "n_layer",
    "heads": "n_head",
    "width": "n_embd",
    "dim": "n_embd",
    "context": "block_size",
}
TRAIN_ALIASES: dict[str, str] = {
    "steps": "max_steps",
    "tokens": "max_tokens",
    "minutes": "max_minutes",
    "batch": "batch_size",
    "accum": "grad_accum",
}
DEFAULT_PRESET = "micro"
DEFAULT_CONTEXT = 128
DEFAULT_STEPS = 300


@dataclass
class TrainConfig:
    """Everything about a training run except the model's shape.

    The budget is any of `max_steps`, `max_tokens`, `max_minutes` (the first reached
    ends training; with none set, `DEFAULT_STEPS`). `batch_size` is rows per
    micro-batch per process: the global batch is batch_size x grad_accum x processes.
    """

    max_steps: int | None = field(
        default=None,
        metadata={
            "help": "Stop after this many optimizer steps (alias train.steps); default 300 when no budget is set."
        },
    )
    max_tokens: int | None = field(
        default=None,
        metadata={"help": "Stop after this many training tokens (alias train.tokens)."},
    )
    max_minutes: float | None = field(
        default=None,
        metadata={"help": "Stop after this many minutes of wall time (alias train.minutes)."},
    )
    batch_size: int = field(
        default=16,
        metadata={
            "help": "Rows per micro-batch per process (alias train.batch); global batch = batch_size x grad_accum x processes.",
            "min": 1,
        },
    )
    grad_accum: int = field(
        default=1,
        metadata={
            "help": "Micro-batches accumulated per optimizer step (alias train.accum).",
            "min": 1,
        },
    )
    packing: Literal["packed", "padded"] = field(
        default="packed",
        metadata={
            "help": "packed: sequences concatenated into full rows; padded: one sequence per row, padded."
        },
    )
    shuffle_simultaneous: bool = field(
        default=False,
        metadata={
            "help": "Train on events that share a timestamp in a new random order each epoch, "
            "for sources whose order within a timestamp is arbitrary; tuning and scoring keep "
            "the file's order (worse on the MIMIC-IV demo: docs/training.md)."
        },
    )
    lr: float = field(default=3e-3, metadata={"help": "Peak learning rate (AdamW).", "above": 0})
    warmup_steps: int = field(
        default=100, metadata={"help": "Steps of linear learning-rate warm-up from zero.", "min": 0}
    )
    decay: Literal["cosine", "linear"] = field(
        default="cosine",
        metadata={
            "help": "Learning-rate decay after warm-up: cosine or linear, reaching zero at the budget's end."
        },
    )
    weight_decay: float = field(
        default=0.1,
        metadata={
            "help": "AdamW weight decay on weight matrices and embeddings (not on norms or biases).",
            "min": 0,
        },
    )
    ema_decay: float = field(
        default=0.0,
        metadata={
            "help": "Weight averaging: an exponential moving average of the weights with this "
            "decay a step (it spans about 1 / (1 - decay) steps); the tuning loss, best/ and "
            "the run's model use the average. 0 = off.",
            "min": 0,
            "below": 1,
        },
    )
    beta1: float = field(
        default=0.9, metadata={"help": "AdamW first-moment decay.", "min": 0, "below": 1}
    )
    beta2: float = field(
        default=0.95, metadata={"help": "AdamW second-moment decay.", "min": 0, "below": 1}
    )
    grad_clip: float = field(
        default=1.0,
        metadata={
            "help": "Clip the gradient's global norm to this value; 0 = no clipping.",
            "min": 0,
        },
    )
    eval_every: int = field(
        default=100, metadata={"help": "Evaluate the tuning loss every this many steps.", "min": 1}
    )
    eval_batches: int = field(
        default=20,
        metadata={
            "help": "Micro-batches of the tuning split per evaluation; 0 = one pass over the split.",
            "min": 0,
        },
    )
    early_stopping: int = field(
        default=0,
        metadata={
            "help": "Stop after this many evaluations without improvement; 0 = never stop early.",
            "min": 0,
        },
    )
    early_stopping_min_delta: float = field(
        default=0.0,
        metadata={
            "help": "How much the tuning loss must fall to count as an improvement.",
            "min": 0,
        },
    )
    checkpoint_every: int = field(
        default=100,
        metadata={"help": "Write a resumable checkpoint every this many steps.", "min": 1},
    )
    keep_last: int = field(
        default=2, metadata={"help": "How many of the latest checkpoints to keep.", "min": 1}
    )
    log_every: int = field(
        default=10,
        metadata={"help": "Record the train loss every this many steps (metrics.jsonl).", "min": 1},
    )
    seed: int = field(
        default=0,
        metadata={"help": "Seed of initialisation, data order and dropout; same seed, same run."},
    )
    device: str = field(
        default="auto",
        metadata={
            "help": "auto (this process's CUDA device when there is one, else the CPU), or a torch device such as cpu or cuda:1."
        },
    )
    precision: Literal["auto", "fp32", "bf16"] = field(
        default="auto",
        metadata={"help": "auto (bf16 autocast on CUDA, fp32 elsewhere), fp32 or bf16."},
    )
    compile: bool = field(
        default=False,
        metadata={
            "help": "Compile the model with torch.compile (faster steps on GPU after a slow start)."
        },
    )
    # torch's intra-op CPU threads; 0 keeps torch's default. 1 is often fastest for small
    # models on a machine busy with other work (threads stall waiting on each other).
    cpu_threads: int = field(
        default=0,
        metadata={
            "help": "torch intra-op CPU threads; 0 keeps torch's default (1 is often fastest on a busy machine).",
            "min": 0,
        },
    )
    memory_checkpoint: Literal["auto", "none", "blocks", "sublayers"] = field(
        default="auto",
        metadata={
            "help": "Activation memory of long contexts: sublayers (each sublayer keeps only its "
            "input; fused CPU attention), blocks (whole blocks recomputed) or none; auto is "
            "sublayers on the CPU from context 2,048, else none. Exact; config.json records it."
        },
    )
    parallel: Literal["ddp", "fsdp"] = field(
        default="ddp",
        metadata={
            "help": "With several processes: ddp (replicated weights) or fsdp (sharded weights)."
        },
    )
    tensorboard: bool = field(
        default=False,
        metadata={"help": "Also write TensorBoard event files (needs the tensorboard extra)."},
    )
    train_split: str = field(default="train", metadata={"help": "Corpus split to train on."})
    eval_split: str = field(
        default="tuning", metadata={"help": "Corpus split the tuning loss is measured on."}
    )
    nonfinite_skips: int = field(
        default=0,
        metadata={
            "help": "steps with a non-finite loss or gradient skipped (no update) before "
            "training stops as diverged (exit 2)",
            "min": 0,
        },
    )

    def __post_init__(self) -> None:
        if self.max_steps is None and self.max_tokens is None and self.max_minutes is None:
            self.max_steps = DEFAULT_STEPS
        # Types, choices and bounds come from the fields (seqlm.config).
        check_fields(self, prefix="train.")
        self.budget()  # validates the limits

    def budget(self) -> Budget:
        seconds = None if self.max_minutes is None else 60.0 * self.max_minutes
        return Budget(steps=self.max_steps, tokens=self.max_tokens, seconds=seconds)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        return options_from_mapping(cls, dict(data), prefix="train.")


@dataclass
class RunSettings:
    """A run's settings before the corpus is known: preset, model overrides (GPTConfig
    field names), and the training config."""

    preset: str = field(default=DEFAULT_PRESET, metadata={"help": "model size preset"})
    model: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "GPTConfig fields set by the user"}
    )
    train: TrainConfig = field(
        default_factory=TrainConfig, metadata={"help": "training settings, defaults filled"}
    )
    train_explicit: tuple[str, ...] = field(
        default=(), metadata={"help": "TrainConfig fields the user set (the recipe keeps them)"}
    )
    use_recipe: bool = field(
        default=False,
        metadata={"help": "no preset given: choose the shape from the corpus and budget"},
    )
    budget: str | None = field(
        default=None, metadata={"help": "--budget: minutes (10m), tokens (2Mtok) or FLOPs"}
    )


def _apply_aliases(table: Mapping[str, Any], aliases: Mapping[str, str], where: str) -> dict:
    result: dict[str, Any] = {}
    for key, value in table.items():
        name = aliases.get(key, key)
        if name in result:
            raise ConfigError(f"{where}.{key} is given twice (as {name} and an alias of it)")
        result[name] = value
    return result


def _merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def resolve_settings(
    config_file: str | Path | None = None,
    sets: Sequence[str] = (),
    preset: str | None = None,
    *,
    budget: str | None = None,
    recipe: bool = False,
) -> RunSettings:
    """Merge a TOML file's `[model]`/`[train]` tables and `--set` strings into settings.

    `preset` (the `--preset` option) wins over `model.preset` in the file or the sets.
    With `recipe` and no preset anywhere, the run's shape and unset training values
    come from `seqlm.training.recipe` at training time (it needs the corpus).
    """
    raw: dict[str, Any] = load_toml(config_file) if config_file is not None else {}
    raw = _merge(raw, parse_option_strings(sets))
    unknown = sorted(set(raw) - {"model", "train"})
    if unknown:
        raise ConfigError(
            f"unknown config table(s) {', '.join(unknown)}; use [model] and [train] "
            "(on the command line: --set model.layers=6, --set train.lr=1e-3)"
        )
    for table in ("model", "train"):
        if not isinstance(raw.get(table, {}), Mapping):
            raise ConfigError(f"{table!r} must be a table of settings")
    model = _apply_aliases(raw.get("model", {}), MODEL_ALIASES, "model")
    given_preset = model.pop("preset", None)
    if preset is not None:
        given_preset = preset
    chosen_preset = str(given_preset) if given_preset is not None else DEFAULT_PRESET
    if "vocab_size" in model:
        raise ConfigError("model.vocab_size comes from the corpus's vocabulary; do not set it")
    train_table = _apply_aliases(raw.get("train", {}), TRAIN_ALIASES, "train")
    return RunSettings(
        preset=chosen_preset,
        model=model,
        train=options_from_mapping(TrainConfig, train_table, prefix="train."),
        train_explicit=tuple(sorted(train_table)),
        use_recipe=given_preset is None and recipe,
        budget=budget,
    )
