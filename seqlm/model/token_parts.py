"""Part-shared token embeddings: a fused token's row = its own + its code's + its value's.

The default clinical tokens fuse a code with its value bin or text (`CODE//Q7`), so
one lab is spread over ten rarely seen tokens. With `GPTConfig.token_parts` each such
token also reads a row for its code part (shared by all its bins and texts) and one
for its value part (shared by every code's bin k, or by one text), so what is learnt
about a lab, or about high values, reaches all its tokens. Scoring is unchanged: the
model still gives one distribution over the same vocabulary.

Part id 0 is the reserved "none" row: it is zero and never trained (`padding_idx`),
so specials, time gaps, plain codes and unknowns keep exactly their own row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqlm.errors import ConfigError

NO_PART = 0


@dataclass(frozen=True)
class TokenPartMap:
    """Per token id its code part and value part (0 = none); table sizes count row 0."""

    code_ids: np.ndarray
    value_ids: np.ndarray
    code_parts: int
    value_parts: int


def token_part_map(vocab: object) -> TokenPartMap:
    """The parts of each token of a `seqlm.vocabularies.Vocabulary`, read from what the
    vocabulary fitted (`data_tokens`: code, text, bin), never from the token strings.

    Only tokens carrying a value (a bin or a text) get parts: a plain code has a single
    token already, so a code row would only duplicate its own row.
    """
    tokens = vocab.tokens  # type: ignore[attr-defined]
    data_tokens = vocab.data_tokens  # type: ignore[attr-defined]
    codes: dict[str, int] = {}
    values: dict[tuple[str, object], int] = {}
    code_ids = np.zeros(len(tokens), dtype=np.int64)
    value_ids = np.zeros(len(tokens), dtype=np.int64)
    for i, token in enumerate(tokens):
        entry = data_tokens.get(token)
        if entry is None or (entry.bin is None and entry.text is None):
            continue
        # A bin and a text are different value parts even if a text reads "3".
        value = ("bin", entry.bin) if entry.bin is not None else ("text", entry.text)
        code_ids[i] = codes.setdefault(entry.code, len(codes) + 1)
        value_ids[i] = values.setdefault(value, len(values) + 1)
    return TokenPartMap(code_ids, value_ids, len(codes) + 1, len(values) + 1)


def sized_for_vocabulary(model_table: dict, vocab: object) -> tuple[dict, TokenPartMap | None]:
    """A model table with `code_parts`/`value_parts` set from `vocab` when it asks for
    `token_parts`, and the map to install; (the table unchanged, None) otherwise."""
    if not model_table.get("token_parts"):
        return model_table, None
    parts = token_part_map(vocab)
    sized = {**model_table, "code_parts": parts.code_parts, "value_parts": parts.value_parts}
    return sized, parts


class TokenParts(nn.Module):
    """The part tables and the token -> part map (persistent buffers, so a checkpoint
    carries the map and a loaded model needs no vocabulary)."""

    def __init__(self, vocab_size: int, code_parts: int, value_parts: int, n_embd: int) -> None:
        super().__init__()
        if code_parts < 1 or value_parts < 1:
            # The config may say token_parts before the corpus is known; a model needs sizes.
            raise ConfigError(
                "model.token_parts needs model.code_parts and model.value_parts >= 1 "
                "(`seqlm train` sets them from the corpus's vocabulary)"
            )
        # Built from zeros (`_weight`): no random draws, so every other weight of a part
        # model gets the same numbers as the plain model of the same seed.
        self.code = nn.Embedding(
            code_parts, n_embd, padding_idx=NO_PART, _weight=torch.zeros(code_parts, n_embd)
        )
        self.value = nn.Embedding(
            value_parts, n_embd, padding_idx=NO_PART, _weight=torch.zeros(value_parts, n_embd)
        )
        self.register_buffer("code_ids", torch.zeros(vocab_size, dtype=torch.long))
        self.register_buffer("value_ids", torch.zeros(vocab_size, dtype=torch.long))

    def reset_parameters(self) -> None:
        # Zero parts: an untrained part model computes exactly the plain model; the
        # parts only move once the loss finds something shared.
        nn.init.zeros_(self.code.weight)
        nn.init.zeros_(self.value.weight)

    def set_map(self, parts: TokenPartMap) -> None:
        """Install a vocabulary's map; its sizes must be the config's."""
        if len(parts.code_ids) != len(self.code_ids):
            raise ConfigError(
                f"token part map has {len(parts.code_ids)} tokens, the model {len(self.code_ids)}"
            )
        if (parts.code_parts, parts.value_parts) != (
            self.code.num_embeddings,
            self.value.num_embeddings,
        ):
            raise ConfigError(
                "token part map sizes "
                f"({parts.code_parts}, {parts.value_parts}) differ from model.code_parts/"
                f"value_parts ({self.code.num_embeddings}, {self.value.num_embeddings})"
            )
        self.code_ids.copy_(torch.as_tensor(parts.code_ids))
        self.value_ids.copy_(torch.as_tensor(parts.value_ids))

    def effective(self, own: Tensor) -> Tensor:
        """own (V, C) + each token's code row + its value row."""
        # F.embedding with padding_idx keeps the "none" row's gradient at zero (plain
        # indexing would train it).
        code = F.embedding(self.code_ids, self.code.weight, padding_idx=NO_PART)
        value = F.embedding(self.value_ids, self.value.weight, padding_idx=NO_PART)
        return own + code + value
