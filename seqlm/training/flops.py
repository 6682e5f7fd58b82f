"""Model FLOPs per token and device peaks, for model FLOPs utilisation (MFU) on GPUs."""

from __future__ import annotations

import torch
from torch import nn

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
    """Training FLOPs per token: 6 per parameter (forward and backward matmuls) plus
    attention's 12 x layers x width x context (the PaLM appendix estimate).

    Position-embedding tables do no matmul work and are left out. A model without a
    transformer-shaped `config` (an LSTM) gets the 6N term alone.
    """
    params = sum(p.numel() for name, p in model.named_parameters() if "pos" not in name)
    config = getattr(model, "config", None)
    layers = getattr(config, "n_layer", 0)
    width = getattr(config, "n_embd", 0)
    return 6.0 * params + 12.0 * layers * width * context


def device_peak_flops(device: torch.device) -> float | None:
    """The device's dense bf16 peak, or None (CPUs, unknown GPUs): no MFU then."""
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(device)
    for fragment, peak in BF16_PEAK_FLOPS:
        if fragment in name:
            return peak
    return None
