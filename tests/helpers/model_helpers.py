"""Tiny GPTs for the model and training tests: a small config, and a float64 model with
every parameter random (so a test sees every weight matter)."""

from __future__ import annotations

import torch

from seqlm.model import GPT, GPTConfig


def tiny_config(**overrides) -> GPTConfig:
    values = {"vocab_size": 11, "n_layer": 4, "n_head": 2, "n_embd": 8, "block_size": 8}
    values.update(overrides)
    return GPTConfig(**values)


def randomized(config: GPTConfig, seed: int = 0) -> GPT:
    """A float64 model whose every parameter (norm scales and biases too) is random."""
    torch.manual_seed(seed)
    model = GPT(config).double()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.3)
    return model.eval()
