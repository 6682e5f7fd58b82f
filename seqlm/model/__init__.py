"""The GPT and its variants: norm type and placement, positions, attention spans."""

from __future__ import annotations

from seqlm.model.attention import (
    CapturedAttention,
    attention_mask,
    attention_weights,
    causal_mask,
)
from seqlm.model.config import PRESETS, GPTConfig, preset
from seqlm.model.flops import (
    flops_per_token,
    forward_flops_per_token,
    parameter_breakdown,
    parameter_count,
)
from seqlm.model.gpt import GPT, Block, ModelOutput
from seqlm.model.loss import (
    IGNORE_INDEX,
    cross_entropy_from_logits,
    dense_lm_loss,
    loss_impl,
    register_loss_impl,
)
from seqlm.model.positions import document_positions

__all__ = [
    "GPT",
    "IGNORE_INDEX",
    "PRESETS",
    "Block",
    "CapturedAttention",
    "GPTConfig",
    "ModelOutput",
    "attention_mask",
    "attention_weights",
    "causal_mask",
    "cross_entropy_from_logits",
    "dense_lm_loss",
    "document_positions",
    "flops_per_token",
    "forward_flops_per_token",
    "loss_impl",
    "parameter_breakdown",
    "parameter_count",
    "preset",
    "register_loss_impl",
]
