"""AdamW with weight decay on matrices only, fused where the build supports it."""

from __future__ import annotations

import torch
from torch import nn

from seqlm.training.config import TrainConfig


def _can_fuse(params: list[nn.Parameter]) -> bool:
    """Fused AdamW needs floating tensors on one CUDA or CPU device, and no DTensors
    (FSDP2 shards), which the fused kernels do not take."""
    if not params:
        return False
    devices = {p.device.type for p in params}
    if len(devices) != 1 or devices.pop() not in ("cuda", "cpu"):
        return False
    from torch.distributed.tensor import DTensor

    return all(p.is_floating_point() and not isinstance(p, DTensor) for p in params)


def build_adamw(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters.

    Matrices and embeddings (2 or more dims) are decayed; biases and norm gains are not,
    since pulling them toward zero only fights the normalisation. Parameters shared by
    two modules (tied embeddings) appear once.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    fused = _can_fuse(params)
    return torch.optim.AdamW(
        [g for g in groups if g["params"]],
        lr=config.lr,
        betas=(config.beta1, config.beta2),
        fused=fused or None,
        foreach=None if fused else True,
    )


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
