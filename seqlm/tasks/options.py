"""Settings of a task run (`seqlm task`): which methods, and each method's knobs."""

from __future__ import annotations

from dataclasses import dataclass, field

from seqlm.errors import ConfigError

METHODS = ("zero-shot", "probe", "finetune", "baseline")
DEFAULT_C_GRID = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0)


@dataclass
class TaskOptions:
    """How a task is predicted and scored. Labels of train subjects fit, tuning subjects
    choose (regularisation, fine-tuning epoch), held_out subjects are reported."""

    methods: tuple[str, ...] = field(
        default=METHODS, metadata={"help": "Methods to run: zero-shot, probe, finetune, baseline."}
    )
    outcome_codes: tuple[str, ...] = field(
        default=(),
        metadata={
            "help": "Zero-shot: code patterns (shell-style, e.g. MEDS_DEATH or DIAGNOSIS//ICD//10//I21*) whose appearance in a trajectory counts as the outcome."
        },
    )
    horizon_s: float | None = field(
        default=None,
        metadata={
            "help": "Zero-shot: how far past the prediction time a trajectory counts, in seconds; None = the token budget only."
        },
    )
    samples: int = field(
        default=20, metadata={"help": "Zero-shot: trajectories sampled per label."}
    )
    max_new_tokens: int = field(
        default=256, metadata={"help": "Zero-shot: token budget of each trajectory."}
    )
    checkpoint: str = field(
        default="best", metadata={"help": "Which weights of the run: best or latest."}
    )
    c_grid: tuple[float, ...] = field(
        default=DEFAULT_C_GRID,
        metadata={
            "help": "Probe and baseline: inverse regularisation strengths tried; the best on tuning is kept."
        },
    )
    finetune_epochs: int = field(
        default=10,
        metadata={
            "help": "Fine-tune: passes over the train labels (the best epoch on tuning is kept)."
        },
    )
    finetune_lr: float = field(
        default=3e-4, metadata={"help": "Fine-tune: peak learning rate (AdamW, cosine decay)."}
    )
    finetune_batch: int = field(
        default=8, metadata={"help": "Fine-tune: labels per optimizer step."}
    )
    finetune_minutes: float = field(
        default=5.0, metadata={"help": "Fine-tune: wall-time budget in minutes."}
    )
    batch_size: int = field(
        default=16, metadata={"help": "Histories per forward pass (probe, fine-tune scoring)."}
    )
    resamples: int = field(
        default=1000, metadata={"help": "Bootstrap resamples (by subject) for the 95% intervals."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of sampling, fine-tuning and bootstrap."})
    device: str = field(default="cpu", metadata={"help": "cpu, cuda or auto."})

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ConfigError(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
        if "zero-shot" in self.methods and not self.outcome_codes:
            raise ConfigError("zero-shot needs --outcome-codes (code patterns of the outcome)")
        if self.samples < 1 or self.max_new_tokens < 1:
            raise ConfigError("samples and max_new_tokens must be at least 1")
        if self.horizon_s is not None and not self.horizon_s > 0:
            raise ConfigError(f"the horizon must be positive, got {self.horizon_s}")
        if not self.c_grid or min(self.c_grid) <= 0:
            raise ConfigError("c_grid needs positive values")
