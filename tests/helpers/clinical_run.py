"""A real clinical corpus (the MIMIC-IV demo in MEDS) and tiny models that favour chosen
tokens, for the tests of the clinical sampler constraints and plausibility checks."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path

import torch

from helpers.eval_fixtures import tiny_gpt
from helpers.shared_data import shared_path
from seqlm.model import GPT

__all__ = ["favouring_gpt", "mimic_demo_corpus"]


def mimic_demo_corpus(out: Path):
    """The MIMIC-IV demo (100 subjects, ~1M tokens) ingested into `out` (a few seconds)."""
    from seqlm.corpora_adapters.meds import MedsMetadataWarning
    from seqlm.ingest import ingest

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MedsMetadataWarning)
        return ingest("meds", [shared_path("clinical", "mimic-iv-demo-meds")], out)


def favouring_gpt(vocab_size: int, logits: Mapping[int, float], block_size: int = 64) -> GPT:
    """A GPT whose next-token logits are `logits[id]` (0 for other ids) whatever the
    context: the final norm outputs a constant unit vector and the head reads it."""
    model = tiny_gpt(vocab_size=vocab_size, block_size=block_size, tie_embeddings=False)
    with torch.no_grad():
        model.final_norm.weight.zero_()
        model.final_norm.bias.zero_()
        model.final_norm.bias[0] = 1.0
        model.lm_head.weight.zero_()
        for token_id, value in logits.items():
            model.lm_head.weight[token_id, 0] = value
    return model
