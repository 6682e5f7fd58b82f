"""Training cost in a reference unit, and a budget measured in it.

"No Train No Gain" (Kaddour et al. 2023) counts cost in *reference system time*: each
step is charged what a step of its shape costs on one fixed, quiet reference machine,
so a method that skips layers is charged for the layers it really runs, and the
comparison does not depend on other jobs sharing the machine. Here that reference is
a calibration table measured once on the current machine (`calibrate`): seconds per
token of a training step and of a forward pass, for every active depth 0..L. The
other unit is FLOPs, from the model's own count with L replaced by the active depth.

`CostMeter` is a callback that charges each step and replaces the trainer's budget by
a `CostBudget`, so the learning rate decays to zero exactly at the end of the budget in
the chosen unit. Methods that change what a step runs (fewer layers, forward-only
passes) report their work with `CostMeter.charge`; whatever a step did not report is
charged as a full-depth training pass. Wall-clock stays in the trainer's counters.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from seqlm.errors import ConfigError, CorpusError
from seqlm.model.config import GPTConfig
from seqlm.model.flops import flops_per_token
from seqlm.model.gpt import GPT
from seqlm.progress import ensure_progress
from seqlm.training.callbacks import TrainCallback
from seqlm.training.efficient.block_hooks import selected_blocks

if TYPE_CHECKING:
    from seqlm.corpus.loader import StepBatches
    from seqlm.progress import Progress
    from seqlm.training.budget import Counters
    from seqlm.training.trainer import Trainer

CostUnit = Literal["flops", "reference_s"]
COST_UNITS = ("flops", "reference_s")
PassKind = Literal["train", "forward"]


@dataclass(frozen=True)
class CalibrationTable:
    """Seconds per token of a training step (forward, backward, optimizer) and of a
    forward pass, indexed by active depth 0..n_layer, measured at one batch shape."""

    n_layer: int
    n_embd: int
    context: int
    batch_size: int
    train_s_per_token: tuple[float, ...]
    forward_s_per_token: tuple[float, ...]
    device: str = "cpu"

    def __post_init__(self) -> None:
        for name in ("train_s_per_token", "forward_s_per_token"):
            values = getattr(self, name)
            if len(values) != self.n_layer + 1 or any(v <= 0 for v in values):
                raise ConfigError(
                    f"calibration {name} needs {self.n_layer + 1} positive entries, got {values}"
                )

    def seconds(self, kind: PassKind, depth: int, tokens: float) -> float:
        if not 0 <= depth <= self.n_layer:
            raise ConfigError(f"depth {depth} outside the calibrated 0..{self.n_layer}")
        table = self.train_s_per_token if kind == "train" else self.forward_s_per_token
        return table[depth] * tokens

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CalibrationTable:
        try:
            return cls(
                n_layer=int(data["n_layer"]),
                n_embd=int(data["n_embd"]),
                context=int(data["context"]),
                batch_size=int(data["batch_size"]),
                train_s_per_token=tuple(float(v) for v in data["train_s_per_token"]),
                forward_s_per_token=tuple(float(v) for v in data["forward_s_per_token"]),
                device=str(data.get("device", "cpu")),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise CorpusError(f"calibration table not understood: {err}") from None

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> CalibrationTable:
        try:
            return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError) as err:
            raise CorpusError(f"{path}: cannot read calibration table: {err}") from None


def _median_seconds(run: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def calibrate(
    config: GPTConfig,
    batch_size: int,
    *,
    repeats: int = 5,
    warmup: int = 2,
    device: str = "cpu",
    progress: Progress | None = None,
) -> CalibrationTable:
    """Measure a training step and a forward pass at every active depth 0..n_layer on
    random tokens of shape (batch_size, block_size); median of `repeats` after `warmup`.

    Depth d runs the first d blocks (the others skipped), which is what layer dropping
    and a shallow stacked model execute."""

    if repeats < 1 or warmup < 0:
        raise ConfigError(
            f"calibration needs repeats >= 1 and warmup >= 0, got {repeats}, {warmup}"
        )
    bar = ensure_progress(progress)
    torch.manual_seed(0)
    model = GPT(config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    tokens = batch_size * config.block_size
    idx = torch.randint(config.vocab_size, (batch_size, config.block_size), device=device)
    targets = torch.randint(config.vocab_size, (batch_size, config.block_size), device=device)
    train_s, forward_s = [], []
    bar.start("calibrating depths", total=config.n_layer + 1)
    for depth in range(config.n_layer + 1):
        active = [i < depth for i in range(config.n_layer)]

        def train_step(active: list[bool] = active) -> None:
            with selected_blocks(model, active):
                out = model(idx, targets, return_logits=False)
            out.loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        @torch.no_grad()
        def forward(active: list[bool] = active) -> None:
            with selected_blocks(model, active):
                model(idx, targets, return_logits=False)

        for _ in range(warmup):
            train_step()
            forward()
        train_s.append(_median_seconds(train_step, repeats) / tokens)
        forward_s.append(_median_seconds(forward, repeats) / tokens)
        bar.advance(1)
    bar.finish()
    return CalibrationTable(
        n_layer=config.n_layer,
        n_embd=config.n_embd,
        context=config.block_size,
        batch_size=batch_size,
        train_s_per_token=tuple(train_s),
        forward_s_per_token=tuple(forward_s),
        device=str(device),
    )


@dataclass(frozen=True)
class CostModel:
    """What a pass over `tokens` tokens at an active depth costs, in `unit`."""

    unit: CostUnit
    config: GPTConfig
    table: CalibrationTable | None = None

    def __post_init__(self) -> None:
        if self.unit not in COST_UNITS:
            raise ConfigError(f"cost unit must be one of {COST_UNITS}, got {self.unit!r}")
        if self.unit == "reference_s":
            if self.table is None:
                raise ConfigError("a budget in reference time needs a calibration table")
            if self.table.n_layer != self.config.n_layer:
                raise ConfigError(
                    f"the calibration table covers {self.table.n_layer} layers, "
                    f"the model has {self.config.n_layer}; run `seqlm calibrate` for it"
                )

    def cost(self, kind: PassKind, depth: int, tokens: float) -> float:
        if self.unit == "reference_s":
            assert self.table is not None
            return self.table.seconds(kind, depth, tokens)
        per_token = self._flops_per_token(depth)
        # A forward pass is a third of forward + backward (6N: 2N forward, 4N backward).
        return per_token * tokens * (1.0 if kind == "train" else 1.0 / 3.0)

    def _flops_per_token(self, depth: int) -> float:
        # FLOPs are linear in depth (6N + 12 L C T, N linear in L): extrapolate from
        # one and two layers, which also gives depth 0 (embeddings and head only).
        one, two = (
            float(
                flops_per_token(
                    dataclasses.replace(self.config, n_layer=n, layer_spans=None),
                    self.config.block_size,
                )
            )
            for n in (1, 2)
        )
        return one + (depth - 1) * (two - one)


@dataclass
class CostBudget:
    """A budget in cost units; duck-types `seqlm.training.budget.Budget` so that the
    trainer's loop, schedule and progress bar follow it. `meter.used` is the cost so far."""

    limit: float
    meter: CostMeter

    def __post_init__(self) -> None:
        if self.limit <= 0:
            raise ConfigError(f"budget must be positive, got {self.limit}")

    uses_wall_clock = False

    def fractions(self, counters: Counters) -> dict[str, float]:
        return {self.meter.unit: self.meter.used / self.limit}

    def progress(self, counters: Counters) -> float:
        return min(1.0, self.meter.used / self.limit)

    def exhausted(self, counters: Counters) -> bool:
        return self.progress(counters) >= 1.0

    def bar_total(self) -> tuple[str, float]:
        return self.meter.unit, float(self.limit)

    def bar_position(self, counters: Counters) -> float:
        return float(self.meter.used)


class CostMeter(TrainCallback):
    """Charges every step in a cost unit and, when `limit` is given, makes it the run's
    budget. Keeps the held-out curve as (cost, wall-clock, loss) at each evaluation.

    Put it first in the callback list; method callbacks find it by `find_meter`."""

    name = "cost"

    def __init__(self, cost_model: CostModel, limit: float | None = None) -> None:
        self.cost_model = cost_model
        self.limit = limit
        self.used = 0.0
        self.curve: list[tuple[float, float, int, float]] = []  # cost, elapsed, step, loss
        self._step_charge = 0.0
        self._step_tokens_charged = 0.0

    @property
    def unit(self) -> str:
        return self.cost_model.unit

    def charge(self, kind: PassKind, depth: int, tokens: float, *, covers: float = 0.0) -> None:
        """A method reports a pass this process ran in the current step; `covers` is how
        many of the step's tokens the method has now accounted for (charge a micro-batch
        once with covers=its tokens, further passes over it with covers=0)."""
        self._step_charge += self.cost_model.cost(kind, depth, tokens)
        self._step_tokens_charged += covers

    def on_train_start(self, trainer: Trainer) -> None:
        if self.limit is not None:
            trainer.budget = CostBudget(self.limit, self)

    def on_step_start(self, trainer: Trainer, batches: StepBatches) -> None:
        self._step_charge = 0.0
        self._step_tokens_charged = 0.0
        self._step_local_tokens = float(sum(b.n_tokens for b in batches.micro))

    def on_step_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        # Tokens that no method reported ran a plain full-depth training pass.
        unreported = max(0.0, self._step_local_tokens - self._step_tokens_charged)
        depth = len(trainer.module.blocks) if hasattr(trainer.module, "blocks") else 0
        charge = self._step_charge + self.cost_model.cost("train", depth, unreported)
        # Every process must see the same total (the budget decides when all stop).
        self.used += trainer.ctx.sum([charge])[0]
        if metrics:
            metrics[f"cost_{self.unit}"] = self.used

    def on_evaluate(self, trainer: Trainer, eval_loss: float) -> None:
        step = trainer.counters.step
        if self.curve and self.curve[-1][2] == step:
            return
        self.curve.append((self.used, trainer.counters.elapsed_s, step, float(eval_loss)))

    def state_dict(self) -> dict[str, Any]:
        return {"used": self.used, "curve": [list(point) for point in self.curve]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.used = float(state.get("used", 0.0))
        self.curve = [
            (float(c), float(e), int(s), float(v)) for c, e, s, v in state.get("curve", [])
        ]


def find_meter(trainer: Trainer) -> CostMeter | None:
    """The run's CostMeter, if it has one."""
    for callback in trainer.callbacks.callbacks:
        if isinstance(callback, CostMeter):
            return callback
    return None
