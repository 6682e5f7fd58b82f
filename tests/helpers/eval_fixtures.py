"""Helpers for the tests of trained models: tiny models, run folders, a real corpus."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from seqlm.model import GPT, GPTConfig

__all__ = ["small_finch_corpus", "tiny_gpt", "write_run"]


def tiny_gpt(seed: int = 0, **overrides) -> GPT:
    """A random GPT in eval mode. `init_std=0.5` makes its distributions peaked enough
    that greedy decoding wanders instead of repeating one token."""
    torch.manual_seed(seed)
    values = {
        "vocab_size": 30,
        "n_layer": 2,
        "n_head": 2,
        "n_embd": 32,
        "block_size": 16,
        "init_std": 0.5,
    }
    values.update(overrides)
    return GPT(GPTConfig(**values)).eval()


def small_finch_corpus(out: Path, birds: tuple[int, ...] = (3,)):
    """A real corpus from the bundled lesion data (Koparkar et al. 2024): the pre- and
    post-lesion song of a few birds, ~300 bouts per bird, built in a few seconds."""
    from seqlm.datasets import finch_lesions_path
    from seqlm.ingest import ingest

    folder = finch_lesions_path()
    files = [folder / f"bird{b}_{c}lesion" for b in birds for c in ("pre", "post")]
    return ingest("birdsong-strings", files, out)


def write_run(folder: Path, model: nn.Module, corpus, model_type: str = "gpt", best=True):
    """A run folder for `model` written by the trainer's own checkpoint writer, as if a
    training run had stopped at step 7 (and kept it as best/)."""
    from seqlm.training.checkpoint import RunFolder
    from seqlm.training.config import TrainConfig
    from seqlm.training.session import corpus_identity

    run = RunFolder(folder)
    config = {
        "model_type": model_type,
        "model": model.config.to_dict(),
        "train": TrainConfig(max_steps=7).to_dict(),
        "corpus": corpus_identity(corpus),
    }
    run.write_config(config, tokenizer=Path(corpus.path) / "tokenizer.json")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    run.save_checkpoint(7, state, {}, {"step": 7}, keep_last=1)
    if best:
        run.save_best(state, {"step": 7, "loss": 1.0})
    return folder
