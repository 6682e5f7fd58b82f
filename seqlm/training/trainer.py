"""The training loop. It reads top to bottom: `fit` -> `train_step` -> `evaluate` ->
`save_checkpoint`, with callbacks (`seqlm.training.callbacks`) at fixed places.

The trainer takes any `nn.Module` whose forward is
`forward(idx, targets, *, doc_ids=None, position_ids=None) -> output with .loss`, the
loss being the mean over targets that are not -100 (the GPT's signature; an LSTM
baseline with the same signature trains the same way).

Losses are weighted by target tokens across micro-batches and processes: each
micro-batch's mean loss is scaled by its share of the step's targets over all processes,
so gradient accumulation and DDP give the gradient of the global per-token mean, and N
processes match one process with the same global batch.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from seqlm.corpus.loader import Batch, BatchLoader, DataPosition, StepBatches
from seqlm.progress import Progress, ensure_progress
from seqlm.training.budget import Counters
from seqlm.training.callbacks import CallbackList, TrainCallback
from seqlm.training.checkpoint import Checkpoint, RunFolder
from seqlm.training.config import TrainConfig
from seqlm.training.distributed import (
    DistContext,
    full_model_state,
    full_optimizer_state,
    gradient_sync,
    load_full_model_state,
    load_full_optimizer_state,
    resolve_device,
    wrap_model,
)
from seqlm.training.efficient.long_context_memory import (
    LEAN_MLP_MIN_CONTEXT,
    memory_checkpoint_choice,
    use_lean_mlp,
    use_memory_checkpoint,
)
from seqlm.training.flops import device_peak_flops, flops_per_token
from seqlm.training.metrics_log import MetricsLog
from seqlm.training.nonfinite import (
    NonFiniteGuard,
    TrainingDiverged,
    diverged,
    weights_are_finite,
)
from seqlm.training.optim import build_adamw, set_learning_rate
from seqlm.training.rng_state import capture_rng_state, restore_rng_state, step_seed
from seqlm.training.schedule import lr_multiplier
from seqlm.training.stopping import EarlyStopping
from seqlm.training.weight_average import WeightAverage


@dataclass
class TrainResult:
    """How a `fit` ended. Losses are per-token cross-entropy in nats."""

    step: int
    tokens: int
    elapsed_s: float
    stop_reason: str
    train_loss: float | None
    eval_loss: float | None
    best_eval_loss: float | None
    best_step: int | None


class Trainer:
    """Trains `model` on `train_data` under `config`, writing to `run` on rank 0.

    Build the model on the CPU with the seed already set (every process the same); the
    trainer moves it to the device, compiles it if asked, and wraps it for DDP/FSDP2.
    """

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig,
        train_data: BatchLoader,
        eval_data: BatchLoader | None = None,
        *,
        run: RunFolder | None = None,
        ctx: DistContext | None = None,
        callbacks: Sequence[TrainCallback] = (),
        progress: Progress | None = None,
    ) -> None:
        self.config = config
        self.ctx = ctx or DistContext(device=resolve_device(config.device))
        self.device = self.ctx.device
        self.train_data = train_data
        self.eval_data = eval_data
        self.run = run
        self.callbacks = CallbackList(callbacks)
        self.progress = ensure_progress(progress if self.ctx.is_main else None)
        self.module = model.to(self.device)  # the user's module, unwrapped
        self._attach_memory_savers(train_data.config.context)
        if config.compile:
            self.module.compile()  # in place: parameter names stay as they are
        self.model = wrap_model(self.module, self.ctx, config.parallel)
        self.optimizer = build_adamw(self.model, config)
        self.average = WeightAverage(self.module, config.ema_decay)  # train.ema_decay
        # Models that can skip materialising logits (a fused or chunked loss) are asked to.
        accepts = inspect.signature(self.module.forward).parameters
        self._loss_only = {"return_logits": False} if "return_logits" in accepts else {}
        self.budget = config.budget()
        self.counters = Counters()
        self.early_stopping = EarlyStopping()
        self.stop_reason: str | None = None
        self.last_eval_loss: float | None = None
        if run is not None and self.ctx.is_main:
            run.path.mkdir(parents=True, exist_ok=True)
        self.metrics = MetricsLog(
            run.metrics_path if run is not None else "metrics.jsonl",
            enabled=self.ctx.is_main and run is not None,
            tensorboard_dir=(run.path / "tensorboard") if run and config.tensorboard else None,
        )
        self._peak_flops = device_peak_flops(self.device)
        self._flops_per_token = flops_per_token(self.module, train_data.config.context)
        self._clock_start = 0.0
        self._elapsed_before = 0.0
        self._loss_since_log = torch.zeros((), device=self.device)
        self._steps_since_log = 0
        self._log_mark = (0, 0.0)  # (tokens, elapsed) at the last log
        self._last_saved_step = -1
        self._last_eval_step = -1
        self._last_train_loss: float | None = None
        # The fields of the progress line, kept so an evaluation can refresh the tuning loss
        # at once (the line otherwise shows the previous one until the next log step).
        self._shown: dict[str, str] = {}
        self.nonfinite = NonFiniteGuard(config.nonfinite_skips)

    def _attach_memory_savers(self, context: int) -> None:
        """Exact memory savers for long contexts (`seqlm.training.efficient.
        long_context_memory`): the lean MLP from `LEAN_MLP_MIN_CONTEXT`, and the
        checkpointing `train.memory_checkpoint` picks; recorded in config.json["memory"]."""
        lean = context >= LEAN_MLP_MIN_CONTEXT and use_lean_mlp(self.module)
        setting = self.config.memory_checkpoint
        choice = memory_checkpoint_choice(setting, context, self.device, self.config.compile)
        attached = use_memory_checkpoint(self.module, choice)
        self.memory = {
            "setting": setting,
            "checkpoint": choice if attached else "none",
            "lean_mlp": bool(lean),
        }
        run = self.run
        if run is not None and self.ctx.is_main and run.config_path.is_file():
            config = run.read_config()
            if config.get("memory") != self.memory:
                run.write_config({**config, "memory": self.memory})

    # -- the loop -----------------------------------------------------------------------
    def fit(self) -> TrainResult:
        self.callbacks.on_train_start(self)
        unit, total = self.budget.bar_total()
        self.progress.start(f"training ({unit})", total=total)
        self.progress.advance(self.budget.bar_position(self.counters))
        self._clock_start = time.perf_counter()
        self._elapsed_before = self.counters.elapsed_s
        self._log_mark = (self.counters.tokens, self.counters.elapsed_s)
        try:
            self._loop()
        except TrainingDiverged:
            # Nothing is saved after a divergence: the checkpoints on disk are finite.
            self.stop_reason = "diverged"
            self._write_final()
            self.progress.finish()
            self.metrics.close()
            raise
        self._write_final()
        self.average.copy_to_module()  # the run's model is the average (as saved)
        self.callbacks.on_train_end(self)
        self.progress.finish()
        self.metrics.close()
        return TrainResult(
            step=self.counters.step,
            tokens=self.counters.tokens,
            elapsed_s=self.counters.elapsed_s,
            stop_reason=self.stop_reason or "budget",
            train_loss=self._last_train_loss,
            eval_loss=self.last_eval_loss,
            best_eval_loss=self.early_stopping.best_loss,
            best_step=self.early_stopping.best_step,
        )

    def _loop(self) -> None:
        while self.stop_reason is None:
            if self.budget.exhausted(self.counters):
                self.stop_reason = "budget"
                break
            before = self.budget.bar_position(self.counters)
            self.train_step()
            self.progress.advance(self.budget.bar_position(self.counters) - before)
            step = self.counters.step
            if self.eval_data is not None and step % self.config.eval_every == 0:
                self.evaluate_and_track()
            if step % self.config.checkpoint_every == 0:
                self.save_checkpoint()
        if self.eval_data is not None and self._last_eval_step != self.counters.step:
            self.evaluate_and_track()
        if self._last_saved_step != self.counters.step:
            self.save_checkpoint()

    def _write_final(self) -> None:
        self.metrics.write(
            {
                "kind": "final",
                "step": self.counters.step,
                "tokens": self.counters.tokens,
                "elapsed_s": round(self.counters.elapsed_s, 3),
                "stop_reason": self.stop_reason,
                "train_loss": self._last_train_loss,
                "eval_loss": self.last_eval_loss,
                "best_eval_loss": self.early_stopping.best_loss,
                "best_step": self.early_stopping.best_step,
            }
        )

    def train_step(self) -> None:
        """One optimizer step over `grad_accum` micro-batches on every process."""
        counters = self.counters
        # Randomness inside the step (dropout) is a function of (seed, rank, step), so a
        # resumed run replays it exactly on every process.
        torch.manual_seed(step_seed(self.config.seed, self.ctx.rank, counters.step))
        progress = self.budget.progress(counters)
        lr = self.config.lr * lr_multiplier(
            counters.step, progress, self.config.warmup_steps, self.config.decay
        )
        set_learning_rate(self.optimizer, lr)
        batches = self.train_data.next_step()
        self.callbacks.on_step_start(self, batches)

        step_loss = self._accumulate_gradients(batches)
        grad_norm = None
        if self.config.grad_clip > 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(
                self.model.parameters(), self.config.grad_clip
            )
        finite = self._step_is_finite(step_loss, grad_norm)
        if finite:
            self.optimizer.step()
            self.average.update(counters.step + 1)
        else:  # no update; raises once the skip budget is spent
            self.nonfinite.record_skip(
                counters.step + 1, float(step_loss.item()), self.last_checkpoint_note()
            )
        self.optimizer.zero_grad(set_to_none=True)

        counters.advance(batches.global_tokens, batches.global_targets)
        counters.elapsed_s = self._elapsed()
        if finite:
            self._loss_since_log += step_loss
            self._steps_since_log += 1
        metrics: dict[str, float] = {}
        if counters.step % self.config.log_every == 0:
            metrics = self._log_training(lr, grad_norm)
        self.callbacks.on_step_end(self, metrics)

    def _step_is_finite(self, loss: torch.Tensor, grad_norm: torch.Tensor | None) -> bool:
        """Whether every process's loss and gradient norm are finite (all agree)."""
        bad = 0.0 if self.nonfinite.step_is_finite(loss, grad_norm) else 1.0
        return self.ctx.sum([bad])[0] == 0

    def last_checkpoint_note(self) -> str:
        """Where the last (finite) checkpoint is, for a divergence message."""
        if self.run is None or self._last_saved_step < 0:
            return "no checkpoint was written"
        return f"the last checkpoint (finite) is step {self._last_saved_step} in {self.run.path}"

    def _accumulate_gradients(self, batches: StepBatches) -> torch.Tensor:
        """Forward and backward over this process's micro-batches; returns this
        process's share of the step's mean loss (summed over processes: the mean)."""
        weight = self.ctx.world_size / batches.global_targets
        total = torch.zeros((), device=self.device)
        last = len(batches.micro) - 1
        for i, cpu_batch in enumerate(batches.micro):
            batch = cpu_batch.to(self.device, non_blocking=True)
            with gradient_sync(self.model, enabled=i == last):
                with self._autocast():
                    loss = self.callbacks.compute_loss(self, batch)
                    if loss is None:
                        loss = self.forward_loss(batch)
                # DDP/FSDP average gradients over processes; the world size in `weight`
                # turns that average back into a sum over all the step's targets.
                share = loss.float() * (batch.n_targets * weight)
                share.backward()
            total += share.detach()
        return total / self.ctx.world_size

    def forward_loss(self, batch: Batch) -> torch.Tensor:
        """The model's mean loss over the batch's targets."""
        output = self.model(
            batch.idx,
            batch.targets,
            doc_ids=batch.doc_ids,
            position_ids=batch.position_ids,
            **self._loss_only,
        )
        return output.loss

    def _autocast(self) -> contextlib.AbstractContextManager:
        precision = self.config.precision
        if precision == "auto":
            precision = "bf16" if self.device.type == "cuda" else "fp32"
        if precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _elapsed(self) -> float:
        elapsed = self._elapsed_before + time.perf_counter() - self._clock_start
        if self.budget.uses_wall_clock:
            elapsed = self.ctx.from_main(elapsed)  # every process stops at the same step
        return elapsed

    def _log_training(self, lr: float, grad_norm: torch.Tensor | None) -> dict[str, float]:
        counters = self.counters
        loss_sum = self.ctx.sum([float(self._loss_since_log.item())])[0]
        loss = loss_sum / max(self._steps_since_log, 1)  # skipped steps are not averaged
        self._loss_since_log.zero_()
        self._steps_since_log = 0
        tokens_before, elapsed_before = self._log_mark
        seconds = max(counters.elapsed_s - elapsed_before, 1e-9)
        tokens_per_s = (counters.tokens - tokens_before) / seconds
        self._log_mark = (counters.tokens, counters.elapsed_s)
        record: dict[str, Any] = {
            "kind": "train",
            "step": counters.step,
            "tokens": counters.tokens,
            "elapsed_s": round(counters.elapsed_s, 3),
            "loss": loss,
            "lr": lr,
            "tokens_per_s": round(tokens_per_s, 1),
        }
        if grad_norm is not None:
            if hasattr(grad_norm, "full_tensor"):  # FSDP2 returns a DTensor
                grad_norm = grad_norm.full_tensor()
            record["grad_norm"] = float(grad_norm.item())
        shown = {"loss": f"{loss:.4f}", "tok/s": f"{tokens_per_s:,.0f}"}
        if self._peak_flops is not None:
            mfu = self._flops_per_token * tokens_per_s / (self._peak_flops * self.ctx.world_size)
            record["mfu"] = round(mfu, 4)
            shown["mfu"] = f"{100 * mfu:.1f}%"
        if self.last_eval_loss is not None:
            shown["tuning"] = f"{self.last_eval_loss:.4f}"
        self._shown = shown
        self.progress.update(**shown)
        self.metrics.write(record)
        self._last_train_loss = loss
        return {k: v for k, v in record.items() if isinstance(v, float | int)}

    # -- evaluation ---------------------------------------------------------------------

    def eval_steps(self) -> int:
        """Evaluation steps: `eval_batches`, or one pass over the split when it is 0."""
        assert self.eval_data is not None
        if self.config.eval_batches > 0:
            return self.config.eval_batches
        rows = self.eval_data.epoch_rows(0)
        return max(1, -(-rows // self.eval_data.rows_per_step))

    @torch.no_grad()
    def evaluate(self) -> float:
        """Mean per-token loss on the tuning split; the same batches every time (with
        the averaged weights under `train.ema_decay`)."""
        with self.average.applied():
            return self._evaluate()

    def _evaluate(self) -> float:
        assert self.eval_data is not None
        self.model.eval()
        self.eval_data.seek(DataPosition())
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        targets = 0
        for _ in range(self.eval_steps()):
            for cpu_batch in self.eval_data.next_step().micro:
                batch = cpu_batch.to(self.device, non_blocking=True)
                with self._autocast():
                    loss = self.forward_loss(batch)
                loss_sum += loss.double() * batch.n_targets
                targets += batch.n_targets
        self.model.train()
        total, count = self.ctx.sum([float(loss_sum.item()), float(targets)])
        return total / count

    def evaluate_and_track(self) -> float:
        """Evaluate, log, keep best/ up to date, and decide on early stopping."""
        loss = self.evaluate()
        step = self.counters.step
        if not math.isfinite(loss):  # never a best/ (or any checkpoint) at NaN
            raise diverged("the tuning loss is", step, loss, self.last_checkpoint_note())
        self.last_eval_loss = loss
        self._last_eval_step = step
        self._shown["tuning"] = f"{loss:.4f}"
        self.progress.update(**self._shown)
        record = {"kind": "eval", "step": step, "tokens": self.counters.tokens, "loss": loss}
        self.metrics.write(record)
        tracker = self.early_stopping
        if (
            tracker.best_loss is None
            or loss < tracker.best_loss - self.config.early_stopping_min_delta
        ):
            tracker.best_loss, tracker.best_step, tracker.evals_since_best = loss, step, 0
            self._save_best(loss)
        else:
            tracker.evals_since_best += 1
            if 0 < self.config.early_stopping <= tracker.evals_since_best:
                self.stop_reason = "early_stopping"
        self.callbacks.on_evaluate(self, loss)
        return loss

    # -- checkpoints --------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything besides weights and optimizer that exact resume needs."""
        return {
            "step": self.counters.step,
            "tokens": self.counters.tokens,
            "counters": self.counters.to_dict(),
            "data_position": self.train_data.position.to_dict(),
            "rng": capture_rng_state(),
            "early_stopping": self.early_stopping.to_dict(),
            "last_eval_loss": self.last_eval_loss,
            "last_eval_step": self._last_eval_step,
            "last_train_loss": self._last_train_loss,
            "stop_reason": self.stop_reason,
            "world_size": self.ctx.world_size,
            "callbacks": self.callbacks.state_dict(),
            "nonfinite_skipped": self.nonfinite.skipped,
        }

    def save_checkpoint(self) -> None:
        """Every process takes part (FSDP2 gathers the shards); rank 0 writes."""
        if self.run is None:
            return
        if not weights_are_finite(self.module.parameters()):
            step = self.counters.step
            raise diverged("the weights are", step, None, self.last_checkpoint_note())
        model_state, raw_state = self.average.states(lambda: full_model_state(self.model))
        optimizer_state = full_optimizer_state(self.model, self.optimizer)
        if self.ctx.is_main:
            self.run.save_checkpoint(
                self.counters.step,
                model_state,
                optimizer_state,
                self.state_dict(),
                keep_last=self.config.keep_last,
                raw_state=raw_state,
            )
        self._last_saved_step = self.counters.step
        self.ctx.barrier()

    def _save_best(self, loss: float) -> None:
        if self.run is None:
            return
        model_state, _ = self.average.states(lambda: full_model_state(self.model))
        if self.ctx.is_main:
            state = {"step": self.counters.step, "tokens": self.counters.tokens, "loss": loss}
            self.run.save_best(model_state, state)
        self.ctx.barrier()

    def resume(self, checkpoint: Checkpoint) -> None:
        """Restore weights, optimizer, counters, RNG, data position and callback state,
        so the next step is exactly the one an uninterrupted run would take."""
        assert self.run is not None
        load_full_model_state(self.model, self.run.load_training_weights(checkpoint))
        run = self.run
        self.average.load(
            lambda: load_full_model_state(self.model, run.load_checkpoint_weights(checkpoint))
        )
        load_full_optimizer_state(self.model, self.optimizer, self.run.load_optimizer(checkpoint))
        state = checkpoint.state
        self.counters = Counters.from_dict(state["counters"])
        self.train_data.seek(DataPosition.from_dict(state["data_position"]))
        restore_rng_state(state["rng"])
        self.early_stopping = EarlyStopping.from_dict(state.get("early_stopping", {}))
        self.last_eval_loss = state.get("last_eval_loss")
        self._last_train_loss = state.get("last_train_loss")
        self._last_eval_step = int(state.get("last_eval_step", -1))
        self.stop_reason = state.get("stop_reason")
        self.callbacks.load_state_dict(state.get("callbacks", {}))
        self.nonfinite.skipped = int(state.get("nonfinite_skipped", 0))
        self._last_saved_step = self.counters.step
        self.metrics.truncate_after(self.counters.step)
