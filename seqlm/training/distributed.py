"""Process groups, device choice, and model wrapping for DDP or FSDP2.

One process (no torchrun) is the plain case: world size 1, no process group, the model
unwrapped. Under `torchrun` the environment names the rank; the backend follows the
device (NCCL on CUDA, gloo on CPU), never hard-coded. The model definition does not
know how it is parallelised: wrapping happens here.

State dicts go through `torch.distributed.checkpoint.state_dict`, which gives full,
unwrapped, CPU copies for a plain, compiled, DDP or FSDP2 model alike, so checkpoints do
not depend on how the run was parallelised.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from seqlm.errors import ConfigError

_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.is_distributed:
            dist.barrier()

    def sum(self, values: list[float]) -> list[float]:
        """Sum of each value over all processes (float64, so counts stay exact)."""
        if not self.is_distributed:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor.tolist()

    def from_main(self, value: float) -> float:
        """Rank 0's value on every process (e.g. elapsed time, so all stop together)."""
        if not self.is_distributed:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.broadcast(tensor, src=0)
        return float(tensor.item())


def resolve_device(preference: str, local_rank: int = 0) -> torch.device:
    """`auto` is this process's CUDA device when there is one, else the CPU."""
    if preference == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        return torch.device("cpu")
    try:
        device = torch.device(preference)
    except RuntimeError as err:
        raise ConfigError(f"train.device: {err}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("train.device is cuda but no CUDA device is available")
        if device.index is None:
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
    return device


def init_distributed(device_preference: str = "auto") -> DistContext:
    """Join the torchrun job described by the environment, or run as one process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_preference, local_rank)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(
            backend=backend,
            rank=rank,
            world_size=world_size,
            timeout=datetime.timedelta(minutes=30),
        )
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def shutdown(ctx: DistContext) -> None:
    if ctx.is_distributed and dist.is_initialized():
        dist.destroy_process_group()


def _shard_blocks(model: nn.Module) -> None:
    """FSDP2: shard each block of every ModuleList (the transformer layers), then the
    root, so only one block's parameters are gathered at a time."""
    from torch.distributed.fsdp import fully_shard

    for module in model.modules():
        if isinstance(module, nn.ModuleList):
            for block in module:
                fully_shard(block)
    fully_shard(model)


def wrap_model(model: nn.Module, ctx: DistContext, parallel: Literal["ddp", "fsdp"]) -> nn.Module:
    """The model as the training step calls it: unwrapped for one process, else DDP or
    FSDP2 (`fully_shard`, for models that do not fit one device)."""
    if not ctx.is_distributed:
        return model
    if parallel == "ddp":
        device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    if parallel == "fsdp":
        _shard_blocks(model)
        return model
    raise ConfigError(f"train.parallel must be 'ddp' or 'fsdp', got {parallel!r}")


@contextlib.contextmanager
def gradient_sync(model: nn.Module, enabled: bool) -> Iterator[None]:
    """Skip the gradient all-reduce on micro-batches before the last of a step."""
    if enabled:
        yield
    elif isinstance(model, nn.parallel.DistributedDataParallel):
        with model.no_sync():
            yield
    elif hasattr(model, "set_requires_gradient_sync"):  # FSDP2
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)
    else:
        yield


def unwrap(model: nn.Module) -> nn.Module:
    """The user's module inside a DDP wrapper (FSDP2 shards in place)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def full_model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer, unsharded, on the CPU, with the plain module's names.
    Every process must call this (FSDP2 gathers); only rank 0 need use the result."""
    return get_model_state_dict(model, options=_FULL)


def load_full_model_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True))


def full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's state keyed by parameter name, unsharded, on the CPU."""
    return get_optimizer_state_dict(model, optimizer, options=_FULL)


def load_full_optimizer_state(
    model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]
) -> None:
    # Not strict: a parameter that never received a gradient (an unused or not yet
    # active block) has no optimizer state in the original run either. The weights are
    # loaded strictly, which is what catches a checkpoint of another model.
    set_optimizer_state_dict(
        model, optimizer, state, options=StateDictOptions(full_state_dict=True, strict=False)
    )
