"""The GPT and its variants (norm type and placement, positions, attention spans), and
the KV cache its forward decodes with."""

from __future__ import annotations

from seqlm.constants import IGNORE_INDEX
from seqlm.model.attention import (
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
from seqlm.model.kv_cache import KVCache
from seqlm.model.loss import (
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
    "GPTConfig",
    "KVCache",
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
