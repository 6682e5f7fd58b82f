"""The LSTM baseline (FinchGPT's comparison): a recurrent language model with the GPT's
forward signature, trained by the same trainer on the same split and budget.

`LSTMLanguageModel.forward(idx, targets=None, *, doc_ids=None, position_ids=None,
loss_mask=None) -> ModelOutput(logits, loss)` matches `GPT.forward`, so `Trainer`,
`ModelScorer` and generation (uncached) take it unchanged. Packed training rows hold
several sequences; a transformer keeps them apart with a document mask, and the LSTM
does the same by restarting its state at every document start: the row is cut into its
documents, which run as separate (padded) sequences and are put back in place.

`train_lstm(corpus, out, config, train)` writes an ordinary run folder whose
config.json says `"model_type": "lstm"`; `load_run_model` reads it back.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import seqlm
from seqlm.constants import TOKENIZER_FILE
from seqlm.corpus import load_corpus
from seqlm.errors import ConfigError, CorpusError
from seqlm.model.gpt import ModelOutput
from seqlm.model.loss import cross_entropy_from_logits
from seqlm.model.positions import document_positions
from seqlm.outputs import remove_output
from seqlm.progress import Progress
from seqlm.training.callbacks import TrainCallback
from seqlm.training.checkpoint import RunFolder
from seqlm.training.config import TrainConfig
from seqlm.training.distributed import DistContext, resolve_device
from seqlm.training.session import corpus_identity, make_loaders
from seqlm.training.trainer import Trainer, TrainResult

MODEL_TYPE = "lstm"


@dataclass
class LSTMConfig:
    """Shape of the LSTM. `block_size` is the context it is trained and scored with
    (windows of the loader), not a limit of the recurrence; hidden width = `n_embd`."""

    vocab_size: int
    n_layer: int = 2
    n_embd: int = 256
    block_size: int = 128
    dropout: float = 0.0
    tie_embeddings: bool = True

    def __post_init__(self) -> None:
        for name in ("vocab_size", "n_layer", "n_embd", "block_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"lstm option {name!r} must be a positive integer, got {value!r}")
        if not isinstance(self.dropout, int | float) or not 0 <= self.dropout < 1:
            raise ConfigError(f"lstm option 'dropout' must be in [0, 1), got {self.dropout!r}")
        if not isinstance(self.tie_embeddings, bool):
            raise ConfigError("lstm option 'tie_embeddings' must be true or false")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> LSTMConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown lstm option(s): {', '.join(unknown)}")
        if "vocab_size" not in values:
            raise ConfigError("lstm config is missing vocab_size")
        return cls(**dict(values))


class LSTMLanguageModel(nn.Module):
    """Embedding -> stacked LSTM -> LayerNorm -> LM head (tied to the embedding)."""

    def __init__(self, config: LSTMConfig) -> None:
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.n_embd)
        self.lstm = nn.LSTM(
            config.n_embd,
            config.n_embd,
            num_layers=config.n_layer,
            batch_first=True,
            dropout=config.dropout if config.n_layer > 1 else 0.0,
        )
        self.final_norm = nn.LayerNorm(config.n_embd)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.token_embedding.weight
        nn.init.normal_(self.token_embedding.weight, std=0.02)

    def hidden_states(
        self, idx: Tensor, *, doc_ids: Tensor | None = None, position_ids: Tensor | None = None
    ) -> Tensor:
        """(B, T, C) states before the LM head; the recurrence restarts where `doc_ids`
        changes along a row (`position_ids` are implied by it and not needed)."""
        x = self.token_embedding(idx)
        if self.config.dropout and self.training:
            x = nn.functional.dropout(x, self.config.dropout, training=True)
        if doc_ids is None:
            out, _ = self.lstm(x)
        else:
            out = self._per_document(x, doc_ids)
        return self.final_norm(out)

    def _per_document(self, x: Tensor, doc_ids: Tensor) -> Tensor:
        batch, length, width = x.shape
        starts = torch.ones_like(doc_ids, dtype=torch.bool)
        starts[:, 1:] = doc_ids[:, 1:] != doc_ids[:, :-1]
        if int(starts.sum()) == batch:  # one document per row: nothing to cut
            out, _ = self.lstm(x)
            return out
        document = torch.cumsum(starts.reshape(-1).long(), 0) - 1
        position = document_positions(doc_ids).reshape(-1)
        n_documents = int(document[-1]) + 1
        longest = int(position.max()) + 1
        # Right padding: a unidirectional LSTM's outputs never depend on later inputs.
        padded = x.new_zeros(n_documents, longest, width)
        padded = padded.index_put((document, position), x.reshape(-1, width))
        out, _ = self.lstm(padded)
        return out[document, position].reshape(batch, length, width)

    def forward(
        self,
        idx: Tensor,
        targets: Tensor | None = None,
        *,
        doc_ids: Tensor | None = None,
        position_ids: Tensor | None = None,
        loss_mask: Tensor | None = None,
    ) -> ModelOutput:
        hidden = self.hidden_states(idx, doc_ids=doc_ids, position_ids=position_ids)
        logits = self.lm_head(hidden)
        loss = None if targets is None else cross_entropy_from_logits(logits, targets, loss_mask)
        return ModelOutput(logits=logits, loss=loss)


def lstm_config_like(model_config: Mapping[str, Any], **overrides: Any) -> LSTMConfig:
    """An LSTM as wide as a GPT run's model, with its vocabulary, context and dropout,
    2 layers. The same regularisation matters: on small corpora an unregularised LSTM
    and a regularised GPT (or the reverse) compare the regularisers, not the models.
    Weight decay, schedule and early stopping come with the GPT's training settings."""
    values = {
        "vocab_size": int(model_config["vocab_size"]),
        "n_embd": int(model_config["n_embd"]),
        "block_size": int(model_config["block_size"]),
        "dropout": float(model_config.get("dropout", 0.0)),
        "n_layer": 2,
    }
    values.update(overrides)
    return LSTMConfig.from_dict(values)


def train_lstm(
    corpus_path: str | Path,
    out: str | Path,
    config: LSTMConfig,
    train: TrainConfig,
    *,
    progress: Progress | None = None,
    callbacks: Sequence[TrainCallback] = (),
) -> TrainResult:
    """Train the LSTM on the corpus's train split with the trainer, writing run folder
    `out` (one process; the LSTM is a small baseline)."""

    corpus = load_corpus(Path(corpus_path))
    if config.vocab_size != corpus.vocab_size:
        raise CorpusError(
            f"{corpus.path}: vocabulary of {corpus.vocab_size} tokens, the LSTM config "
            f"has {config.vocab_size}"
        )
    run = RunFolder(out)
    run.check_fresh()
    run_config = {
        "seqlm_version": seqlm.__version__,
        "model_type": MODEL_TYPE,
        "model": config.to_dict(),
        "train": train.to_dict(),
        "corpus": corpus_identity(corpus),
        "world_size": 1,
    }
    run.clean_temporaries()
    run.write_config(run_config, tokenizer=Path(corpus.path) / TOKENIZER_FILE)
    run.metrics_path.unlink(missing_ok=True)
    torch.manual_seed(train.seed)
    model = LSTMLanguageModel(config)
    ctx = DistContext(device=resolve_device(train.device))
    train_data, eval_data = make_loaders(corpus, train, config.block_size, ctx)
    trainer = Trainer(
        model,
        train,
        train_data,
        eval_data,
        run=run,
        ctx=ctx,
        callbacks=callbacks,
        progress=progress,
    )
    return trainer.fit()


def run_finished(folder: str | Path) -> bool:
    """Whether a run folder's training ended (metrics.jsonl has its `final` record)."""
    run = RunFolder(folder)
    if not (run.config_path.is_file() and run.metrics_path.is_file()):
        return False
    for line in run.metrics_path.read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(ValueError):  # a line cut short by a kill
            if json.loads(line).get("kind") == "final":
                return True
    return False


def _finished_on(folder: Path, corpus: Any, model: LSTMConfig, train: TrainConfig) -> bool:
    """Whether `folder` holds a finished LSTM run on this corpus with this shape,
    regularisation and training settings (so it can be reused)."""

    if not run_finished(folder):
        return False
    config = RunFolder(folder).read_config()
    recorded, current = config.get("corpus", {}), corpus_identity(corpus)
    same_corpus = all(recorded.get(k) == current[k] for k in ("tokens", "vocabulary_hash"))
    try:  # a run written before a setting existed ran with its default (train.ema_decay 0)
        recorded_train = TrainConfig.from_dict(config.get("train", {})).to_dict()
    except ConfigError:
        return False
    same_settings = config.get("model") == model.to_dict() and recorded_train == (
        json.loads(json.dumps(train.to_dict()))  # as config.json holds it
    )
    return config.get("model_type") == MODEL_TYPE and same_corpus and same_settings


def lstm_baseline_run(
    corpus: Any,
    folder: str | Path,
    model_config: Mapping[str, Any],
    train_config: Mapping[str, Any],
    *,
    overrides: Mapping[str, Any] | None = None,
    progress: Progress | None = None,
) -> tuple[Path, bool]:
    """The LSTM baseline beside a GPT run: reused from `folder` when a finished LSTM run
    on this corpus with the same shape, dropout and training settings is there, else
    trained into it with the GPT run's training settings (same split, budget, batch,
    schedule, weight decay, weight averaging `ema_decay`, seed) updated by `overrides`
    (TrainConfig field names, e.g. {"max_minutes": 2}). Returns the folder and whether
    it trained."""
    folder = Path(folder)
    train = TrainConfig.from_dict({**dict(train_config), **dict(overrides or {})})
    model = lstm_config_like(model_config)
    if _finished_on(folder, corpus, model, train):
        return folder, False
    if folder.exists():
        remove_output(folder)  # unfinished, or other settings: never a user's folder
    train_lstm(corpus.path, folder, model, train, progress=progress)
    return folder, True
