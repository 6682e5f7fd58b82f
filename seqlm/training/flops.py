"""Model FLOPs per token and device peaks, for model FLOPs utilisation (MFU) on GPUs."""

from __future__ import annotations

import torch
from torch import nn

from seqlm.model.config import GPTConfig
from seqlm.model.flops import flops_per_token as gpt_flops_per_token

# Dense bf16 tensor-core peaks (FLOP/s) by device-name fragment, most specific first.
# From the vendors' data sheets (SXM parts where both exist).
BF16_PEAK_FLOPS: tuple[tuple[str, float], ...] = (
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100", 989e12),
    ("A100", 312e12),
    ("A10G", 70e12),
    ("A10", 125e12),
    ("L40S", 362e12),
    ("L4", 121e12),
    ("RTX 4090", 165e12),
    ("RTX 3090", 71e12),
    ("V100", 125e12),
)


def flops_per_token(model: nn.Module, context: int) -> float:
    """Training FLOPs per token: the GPT's own count (6N + 12 L C T, see
    `seqlm.model.flops`) when the model is a GPT, else 6 per parameter (an LSTM or any
    other module: forward and backward matmuls)."""

    config = getattr(model, "config", None)
    if isinstance(config, GPTConfig):
        return float(gpt_flops_per_token(config, context))
    return 6.0 * sum(p.numel() for p in model.parameters())


def device_peak_flops(device: torch.device) -> float | None:
    """The device's dense bf16 peak, or None (CPUs, unknown GPUs): no MFU then."""
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(device)
    for fragment, peak in BF16_PEAK_FLOPS:
        if fragment in name:
            return peak
    return None
