"""The frozen model's hidden state at prediction time, for the probe and the fine-tune.

Histories of one batch are right-padded with `[PAD]`: attention is causal and every row
starts at position 0, so the padding after a history's last token cannot change that
token's hidden state, which is the one read (the final normed state, the LM head's
input). Each history is cut to the model's context from the left first.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from seqlm.tasks.history import History
from seqlm.vocabularies.scheme import PAD_ID


def padded_batch(
    histories: Sequence[History], context: int, device: torch.device
) -> tuple[Tensor, Tensor]:
    """(B, T) ids right-padded with [PAD], and each row's last real position (B,)."""
    windows = [h.window(context) for h in histories]
    width = max(len(w) for w in windows)
    ids = np.full((len(windows), width), PAD_ID, dtype=np.int64)
    for row, window in enumerate(windows):
        ids[row, : len(window)] = window
    last = torch.as_tensor([len(w) - 1 for w in windows], device=device)
    return torch.as_tensor(ids, device=device), last


def last_hidden(model: nn.Module, ids: Tensor, last: Tensor) -> Tensor:
    """(B, C) hidden state at each row's last real token."""
    hidden = model.hidden_states(ids)  # type: ignore[operator]
    return hidden[torch.arange(ids.shape[0], device=ids.device), last]


@torch.no_grad()
def hidden_at_prediction(
    model: nn.Module, histories: Sequence[History], context: int, batch_size: int = 16
) -> np.ndarray:
    """(N, C) float64 features: the frozen model's state at each label's prediction time.

    Histories are batched by length (similar lengths pad less); rows come back in the
    order given.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    order = np.argsort([len(h.window(context)) for h in histories], kind="stable")
    features = np.zeros((len(histories), int(model.config.n_embd)), dtype=np.float64)  # type: ignore[union-attr]
    try:
        for start in range(0, len(order), batch_size):
            chosen = order[start : start + batch_size]
            ids, last = padded_batch([histories[i] for i in chosen], context, device)
            features[chosen] = last_hidden(model, ids, last).double().cpu().numpy()
    finally:
        model.train(was_training)
    return features
