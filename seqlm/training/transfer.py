"""Start a run from another run's weights: pretrain on a pool, fine-tune on one group.

`seqlm train CORPUS --init RUN` builds the model with RUN's shape (its config.json
`model` table; only `vocab_size` follows the new corpus, and `dropout` may be set with
`--set model.dropout=`), then copies RUN's best weights (its latest when it kept no
best/). Token rows are matched by token *string*, so a corpus whose vocabulary adds
tokens (conditioning tokens, a post-lesion syllable) or orders them differently still
gets each known token's learned embedding; a token RUN never saw starts at the mean of
RUN's embeddings. The vocabularies must share most tokens (`MIN_SHARED`), otherwise
the init is refused: a run of another domain is not a starting point.

`block_size` may change too when the init run's positions are rotary or ALiBi: no
weight of such a GPT depends on it (the cos/sin tables and the ALiBi bias are rebuilt
from the config), so a model
trained on short rows is the same model on longer ones (a gap curriculum: short rows
first, then `--init RUN --set model.block_size=8192`). Learned positions have one
embedding row per position, so their block size cannot change.

A part-shared run (`model.token_parts`) passes its parts on too: the new corpus's
vocabulary gets its own part map, and each of its code and value parts takes the row of
the init run's part that a shared token string had (a part no shared token reaches
starts at zero, which adds nothing). Part sizes follow the new vocabulary;
`token_parts` itself is part of the shape and cannot change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer
from torch import nn

from seqlm.constants import TOKENIZER_FILE
from seqlm.errors import ConfigError, CorpusError
from seqlm.training.checkpoint import (
    BEST_DIR,
    WEIGHTS_FILE,
    RunFolder,
    load_weights,
)

# Share of the corpus's tokens that the init run must know.
MIN_SHARED = 0.5
# GPT parameters with one row per vocabulary id.
VOCAB_ROWS = ("token_embedding.weight", "lm_head.weight")
# Part tables (model.token_parts) and the buffer giving each token's row in them.
PART_ROWS = {
    "token_parts.code.weight": "token_parts.code_ids",
    "token_parts.value.weight": "token_parts.value_ids",
}
# Model fields the new run may change from the init run's shape.
CHANGEABLE = ("dropout", "vocab_size", "code_parts", "value_parts")
# Model fields the new run may change when the init run's positions are relative.
RELATIVE_CHANGEABLE = ("block_size",)
RELATIVE_POSITIONS = ("rotary", "alibi")


@dataclass
class InitReport:
    """What `--init` did, for config.json and the console."""

    run: str = field(metadata={"help": "the init run folder"})
    weights: str = field(metadata={"help": "the weights file read"})
    shared_tokens: int = field(metadata={"help": "corpus tokens the init run knew"})
    new_tokens: int = field(metadata={"help": "corpus tokens it did not (mean-initialised)"})
    new_token_kinds: dict[str, int] = field(metadata={"help": "new tokens by kind"})
    dropped_tokens: int = field(metadata={"help": "init-run tokens the corpus lacks"})

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def describe(self) -> str:
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.new_token_kinds.items()))
        new = f"{self.new_tokens} new tokens ({kinds})" if self.new_tokens else "no new tokens"
        return (
            f"initialised from {self.run}: {self.shared_tokens} tokens shared, {new}, "
            f"{self.dropped_tokens} of its tokens unused"
        )


def run_tokens(run: str | Path) -> list[str]:
    """The token strings of a run's vocabulary, in id order (RUN/tokenizer.json)."""
    path = Path(run) / TOKENIZER_FILE
    if not path.is_file():
        raise CorpusError(f"{path}: missing; --init needs a run folder written by seqlm train")
    try:
        vocab = Tokenizer.from_file(str(path)).get_vocab(with_added_tokens=False)
    except Exception as err:  # tokenizers raises plain Exceptions on bad files
        raise CorpusError(f"{path}: not a tokenizer file: {err}") from None
    return sorted(vocab, key=vocab.__getitem__)


def init_model_config(init: str | Path, model: dict[str, Any], vocab_size: int) -> dict:
    """The new run's model table: the init run's shape with the corpus's vocabulary."""
    config = RunFolder(init).read_config()
    if config.get("model_type", "gpt") != "gpt":
        raise ConfigError(f"{init}: --init needs a GPT run, not {config.get('model_type')!r}")
    table = dict(config["model"])
    for key, value in model.items():
        if key in CHANGEABLE or table.get(key) == value:
            table[key] = value
            continue
        positions = table.get("positions", "learned")
        if key in RELATIVE_CHANGEABLE and positions in RELATIVE_POSITIONS:
            table[key] = value
            continue
        if key in RELATIVE_CHANGEABLE:
            raise ConfigError(
                f"--init {init}: model.{key}={value!r} differs from its {table.get(key)!r}, "
                f"and its {positions} positions have one weight row per position; only a "
                "rotary or alibi run's block size may change"
            )
        raise ConfigError(
            f"--init keeps {init}'s model shape; model.{key}={value!r} differs from its "
            f"{table.get(key)!r} (only {', '.join(CHANGEABLE)} may change, and block_size "
            "for rotary or alibi positions)"
        )
    table["vocab_size"] = vocab_size
    return table


def _kind(token: str) -> str:
    if token.startswith("[COND//"):
        return "condition"
    return token.split("//", 1)[0] if "//" in token else "event"


def _part_rows(
    old_table: torch.Tensor,
    old_part_of_token: torch.Tensor,
    own: dict[str, torch.Tensor],
    name: str,
    new_ids: torch.Tensor,
    old_ids: torch.Tensor,
) -> torch.Tensor:
    """The new part table: each new part takes the old row of a part that a shared
    token had; parts no shared token reaches stay zero (they add nothing)."""
    new_part_of_token = own[PART_ROWS[name]]
    new_parts = new_part_of_token[new_ids]
    old_parts = old_part_of_token.long()[old_ids]
    both = (new_parts != 0) & (old_parts != 0)
    rows = torch.zeros_like(own[name])
    # One code (or value) is one part on either side, so every shared token of a new
    # part names the same old part: the writes agree.
    rows[new_parts[both]] = old_table[old_parts[both]].to(rows.dtype)
    return rows


def load_init_weights(model: nn.Module, init: str | Path, corpus_tokens: list[str]) -> InitReport:
    """Copy the init run's weights into `model`, matching token rows by string."""
    init = Path(init)
    weights = init / BEST_DIR / WEIGHTS_FILE
    if not weights.is_file():
        weights = init / WEIGHTS_FILE
    state = load_weights(weights)
    old_tokens = run_tokens(init)
    old_index = {token: i for i, token in enumerate(old_tokens)}
    shared = [(new, old_index[t]) for new, t in enumerate(corpus_tokens) if t in old_index]
    if len(shared) < MIN_SHARED * len(corpus_tokens):
        raise ConfigError(
            f"--init {init}: its vocabulary shares {len(shared)} of the corpus's "
            f"{len(corpus_tokens)} tokens; a run of another vocabulary is no starting point"
        )
    own = model.state_dict()
    new_ids = torch.tensor([n for n, _ in shared], dtype=torch.long)
    old_ids = torch.tensor([o for _, o in shared], dtype=torch.long)
    for name, tensor in state.items():
        if name not in own:
            raise ConfigError(f"{weights}: parameter {name} does not fit the model")
        if name in PART_ROWS.values():
            continue  # the new vocabulary's map, installed before the weights
        if name in PART_ROWS:
            own[name] = _part_rows(tensor, state[PART_ROWS[name]], own, name, new_ids, old_ids)
        elif name in VOCAB_ROWS:
            rows = tensor.mean(dim=0, keepdim=True).expand_as(own[name]).clone()
            rows[new_ids] = tensor[old_ids].to(rows.dtype)
            own[name] = rows
        elif own[name].shape != tensor.shape:
            raise ConfigError(f"{weights}: {name} has shape {tuple(tensor.shape)}, not the model's")
        else:
            own[name] = tensor
    model.load_state_dict(own, strict=True)
    known = {t for t in corpus_tokens if t in old_index}
    kinds: dict[str, int] = {}
    for token in corpus_tokens:
        if token not in known:
            kinds[_kind(token)] = kinds.get(_kind(token), 0) + 1
    return InitReport(
        run=str(init),
        weights=str(weights),
        shared_tokens=len(shared),
        new_tokens=len(corpus_tokens) - len(shared),
        new_token_kinds=kinds,
        dropped_tokens=len(old_tokens) - len(shared),
    )
