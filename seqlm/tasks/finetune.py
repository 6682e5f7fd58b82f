"""Fine-tuning: a classification head on the model's state at prediction time, trained
together with the model on the train labels; the epoch kept is the best on tuning.

Why not `seqlm.training.Trainer`: its loop draws next-token batches from a corpus
`BatchLoader` and takes a per-token loss; a label batch (histories + one target each)
does not fit it without changing the trainer. This is a small loop built from the
trainer's parts instead: `build_adamw` (decay on matrices only), `Budget`/`Counters`
(step and wall-time limits, the trainer's meaning), `lr_multiplier` (warm-up then cosine
decay to zero at the end of the budget), gradient clipping at the trainer's default, and
`save_weights` (safetensors, atomic) for the kept checkpoint, written to
`OUT/finetune/model.safetensors` when an output folder is given.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import log_loss, roc_auc_score
from torch import nn

from seqlm.tasks.history import History
from seqlm.tasks.representation import last_hidden, padded_batch
from seqlm.training.budget import Budget, Counters
from seqlm.training.checkpoint import save_weights
from seqlm.training.config import TrainConfig
from seqlm.training.optim import build_adamw, set_learning_rate
from seqlm.training.schedule import lr_multiplier


class Classifier(nn.Module):
    """The language model's final state at the last history token -> one logit."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.body = model
        self.head = nn.Linear(int(model.config.n_embd), 1)  # type: ignore[union-attr]
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.context = int(model.config.block_size)  # type: ignore[union-attr]

    def forward(self, histories: Sequence[History]) -> torch.Tensor:
        device = self.head.weight.device
        ids, last = padded_batch(histories, self.context, device)
        return self.head(last_hidden(self.body, ids, last)).squeeze(-1)


@dataclass
class FinetuneResult:
    probabilities: np.ndarray  # for the histories asked to predict
    best_epoch: int
    chosen_by: str
    steps: int
    elapsed_s: float
    tuning: list[float] = field(default_factory=list)
    stop_reason: str = "epochs"


@torch.no_grad()
def _predict(classifier: Classifier, histories: Sequence[History], batch: int) -> np.ndarray:
    classifier.eval()
    out = [
        torch.sigmoid(classifier(histories[s : s + batch])).cpu().numpy()
        for s in range(0, len(histories), batch)
    ]
    return np.concatenate(out) if out else np.zeros(0)


def _tuning_score(probabilities: np.ndarray, labels: np.ndarray) -> tuple[float, str]:
    if len(np.unique(labels)) == 2:
        return float(roc_auc_score(labels, probabilities)), "tuning AUROC"
    if len(labels):
        return -float(log_loss(labels, probabilities, labels=[0, 1])), "tuning log loss"
    return 0.0, "no tuning labels: last epoch"


@dataclass
class FinetuneSettings:
    """The fine-tune's knobs (filled from `TaskOptions`)."""

    epochs: int = field(default=10, metadata={"help": "Passes over the train labels."})
    lr: float = field(default=3e-4, metadata={"help": "Peak learning rate (AdamW)."})
    batch: int = field(default=8, metadata={"help": "Labels per optimizer step."})
    minutes: float = field(default=5.0, metadata={"help": "Wall-time budget in minutes."})
    seed: int = field(default=0, metadata={"help": "Seed of the head and the label order."})


def finetune(
    model: nn.Module,
    train: tuple[Sequence[History], np.ndarray],
    tuning: tuple[Sequence[History], np.ndarray],
    predict: Sequence[History],
    settings: FinetuneSettings,
    out: Path | None = None,
) -> FinetuneResult:
    """Train head + model on `train`, keep the best epoch on `tuning`, predict `predict`.

    `model` is copied: the caller's weights are left as they are.
    """
    torch.manual_seed(settings.seed)
    device = next(model.parameters()).device
    classifier = Classifier(copy.deepcopy(model)).to(device)
    histories, labels = train
    config = TrainConfig(lr=settings.lr, weight_decay=0.1, grad_clip=1.0)
    optimizer = build_adamw(classifier, config)
    steps_per_epoch = -(-len(histories) // settings.batch)
    budget = Budget(steps=settings.epochs * steps_per_epoch, seconds=60.0 * settings.minutes)
    counters, began = Counters(), time.perf_counter()
    rng = np.random.default_rng(settings.seed)
    targets = torch.as_tensor(labels, dtype=torch.float32, device=device)
    scores, best_state, best_epoch, chosen_by = [], None, 0, ""
    stop_reason = "epochs"
    for epoch in range(1, settings.epochs + 1):
        classifier.train()
        order = rng.permutation(len(histories))
        for start in range(0, len(order), settings.batch):
            chosen = order[start : start + settings.batch]
            lr = settings.lr * lr_multiplier(
                counters.step, budget.progress(counters), steps_per_epoch, "cosine"
            )
            set_learning_rate(optimizer, lr)
            logits = classifier([histories[i] for i in chosen])
            loss = nn.functional.binary_cross_entropy_with_logits(
                logits, targets[torch.as_tensor(chosen, device=device)]
            )
            loss.backward()
            torch.nn.utils.clip_grad_norm_(classifier.parameters(), config.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            counters.advance(len(chosen), len(chosen))
            counters.elapsed_s = time.perf_counter() - began
        score, chosen_by = _tuning_score(_predict(classifier, tuning[0], settings.batch), tuning[1])
        scores.append(score)
        last_wins = chosen_by.startswith("no tuning")
        if best_state is None or last_wins or score > max(scores[:-1], default=-np.inf):
            best_state = copy.deepcopy(classifier.state_dict())
            best_epoch = epoch
        if budget.exhausted(counters):
            stop_reason = "budget" if epoch < settings.epochs else "epochs"
            break
    assert best_state is not None
    classifier.load_state_dict(best_state)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        save_weights(
            {k: v.detach().cpu() for k, v in best_state.items()}, out / "model.safetensors"
        )
    return FinetuneResult(
        probabilities=_predict(classifier, predict, settings.batch),
        best_epoch=best_epoch,
        chosen_by=chosen_by,
        steps=counters.step,
        elapsed_s=counters.elapsed_s,
        tuning=scores,
        stop_reason=stop_reason,
    )
