"""Fused or chunked ops: each with a plain-PyTorch reference, fast paths and a dispatcher.

- `linear_cross_entropy`: output projection + cross-entropy without the N x V logits.
- `rms_norm`, `layer_norm` (and the `RMSNorm`, `LayerNorm` modules).
- `windowed_attention`: causal attention within a window and within documents.
- `attention_statistics`: per-head attention distance / entropy statistics without T x T.

Triton kernels live in `*_triton.py` modules, imported only on CUDA when triton is
installed; see `dispatch.py` for how implementations are chosen.
"""

from seqlm.kernels.attention_stats import (
    DEFAULT_BEYOND_DISTANCES,
    DEFAULT_DISTANCE_EDGES,
    AttentionStatistics,
    attention_statistics,
    attention_statistics_chunked,
    attention_statistics_reference,
)
from seqlm.kernels.linear_cross_entropy import (
    LinearCrossEntropyOptions,
    choose_linear_cross_entropy_impl,
    linear_cross_entropy,
    linear_cross_entropy_chunked,
    linear_cross_entropy_reference,
)
from seqlm.kernels.norms import (
    LayerNorm,
    RMSNorm,
    layer_norm,
    layer_norm_reference,
    rms_norm,
    rms_norm_reference,
)
from seqlm.kernels.windowed_attention import (
    windowed_attention,
    windowed_attention_reference,
    windowed_causal_mask,
)

__all__ = [
    "DEFAULT_BEYOND_DISTANCES",
    "DEFAULT_DISTANCE_EDGES",
    "AttentionStatistics",
    "LayerNorm",
    "LinearCrossEntropyOptions",
    "RMSNorm",
    "attention_statistics",
    "attention_statistics_chunked",
    "attention_statistics_reference",
    "choose_linear_cross_entropy_impl",
    "layer_norm",
    "layer_norm_reference",
    "linear_cross_entropy",
    "linear_cross_entropy_chunked",
    "linear_cross_entropy_reference",
    "rms_norm",
    "rms_norm_reference",
    "windowed_attention",
    "windowed_attention_reference",
    "windowed_causal_mask",
]
