"""Grammar constraints of the sampler for clinical trajectories: tokens a sample may not
take next, given what it (prompt included) already holds.

- same-time repeats (`repeats`): events between two time-gap tokens share one time.
  `"no-repeat"` (the default) bans every token of a code already drawn in the current
  time step until the next time-gap token (an exact duplicate row says nothing new, a
  different value contradicts the first); `"no-conflict"` bans only the code's other
  tokens (a lab cannot take two values at one time; the same token again stays
  allowed); `"allow"` leaves the model alone. Unknown tokens (`LAB//[UNK]`) are never constrained:
  they stand for many different rare codes.
- paired events (`paired`): a closing kind (`ICU_DISCHARGE`) is banned while no event of
  its opening kind (`ICU_ADMISSION`) is open; the pairs and the counting rule are those
  of `seqlm.evaluation.plausibility_rules`.

These change what is sampled: the samples come from the model's distribution
renormalised over the allowed tokens, not from the model's distribution. Turn them off
(`SamplerConstraints(repeats="allow", paired=False)`) to see what the model alone does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from seqlm.errors import ConfigError
from seqlm.evaluation.plausibility_rules import (
    code_kind,
    is_unknown_code,
    paired_kinds,
    token_codes,
)
from seqlm.vocabularies.vocabulary import Vocabulary

REPEAT_RULES: tuple[str, ...] = ("allow", "no-conflict", "no-repeat")


@dataclass(frozen=True)
class SamplerConstraints:
    """Which grammar constraints the sampler applies (module docstring)."""

    repeats: str = field(
        default="no-repeat",
        metadata={"help": "Same code twice at one time: allow, no-conflict or no-repeat."},
    )
    paired: bool = field(
        default=True, metadata={"help": "A discharge only while its admission is open."}
    )

    def __post_init__(self) -> None:
        if self.repeats not in REPEAT_RULES:
            raise ConfigError(f"repeats must be one of {', '.join(REPEAT_RULES)}: {self.repeats!r}")

    @property
    def active(self) -> bool:
        return self.repeats != "allow" or self.paired


OFF = SamplerConstraints(repeats="allow", paired=False)


@dataclass(frozen=True)
class GrammarTables:
    """Per-id lookups: code group (n_groups = none), time token, pair and its sign."""

    group_of_id: np.ndarray
    n_groups: int
    is_time: np.ndarray
    pair_of_id: np.ndarray  # -1: in no pair
    pair_sign: np.ndarray  # +1 opens, -1 closes, 0 neither
    n_pairs: int

    @classmethod
    def from_vocab(cls, vocab: Vocabulary) -> GrammarTables:
        codes = token_codes(vocab)
        groups: dict[str, int] = {}
        group_of_id = np.empty(len(codes), dtype=np.int64)
        for token_id, code in enumerate(codes):
            if code is None or is_unknown_code(code):
                group_of_id[token_id] = -1
            else:
                group_of_id[token_id] = groups.setdefault(code, len(groups))
        group_of_id[group_of_id < 0] = len(groups)
        kinds = [code_kind(c) if c is not None else None for c in codes]
        pairs = paired_kinds(k for k in kinds if k is not None)
        pair_of_id = np.full(len(codes), -1, dtype=np.int64)
        pair_sign = np.zeros(len(codes), dtype=np.int64)
        for number, pair in enumerate(pairs):
            for token_id, kind in enumerate(kinds):
                if kind in (pair.opens, pair.closes):
                    pair_of_id[token_id] = number
                    pair_sign[token_id] = 1 if kind == pair.opens else -1
        is_time = np.array([role == "time" for role in vocab.roles], dtype=bool)
        return cls(group_of_id, len(groups), is_time, pair_of_id, pair_sign, len(pairs))


class TrajectoryGrammar:
    """The constraint state of every row of a sampling batch, on the model's device."""

    def __init__(
        self,
        tables: GrammarTables,
        constraints: SamplerConstraints,
        prompt: np.ndarray,
        rows: int,
        device: torch.device,
    ) -> None:
        self.constraints = constraints
        self.group_of_id = torch.as_tensor(tables.group_of_id, device=device)
        self.is_time = torch.as_tensor(tables.is_time, device=device)
        self.pair_of_id = torch.as_tensor(tables.pair_of_id, device=device)
        self.pair_sign = torch.as_tensor(tables.pair_sign, device=device)
        closing = tables.pair_sign < 0
        self.close_ids = torch.as_tensor(np.flatnonzero(closing), device=device)
        self.close_pairs = torch.as_tensor(tables.pair_of_id[closing], device=device)
        self.seen_group, self.seen_token, self.open = _prompt_state(tables, prompt)
        self.seen_group = self.seen_group.to(device).expand(rows, -1).clone()
        self.seen_token = self.seen_token.to(device).expand(rows, -1).clone()
        self.open = self.open.to(device).expand(rows, -1).clone()

    def mask(self, logits: Tensor) -> Tensor:
        """`logits` (B, V) with the banned ids at -inf."""
        banned = torch.zeros_like(logits, dtype=torch.bool)
        if self.constraints.repeats != "allow":
            banned |= self.seen_group[:, self.group_of_id]
            if self.constraints.repeats == "no-conflict":
                banned &= ~self.seen_token
        if self.constraints.paired and self.close_ids.numel():
            banned[:, self.close_ids] |= self.open[:, self.close_pairs] <= 0
        return logits.masked_fill(banned, float("-inf"))

    def update(self, chosen: Tensor) -> None:
        """Take one new token per row (B,)."""
        rows = torch.arange(chosen.shape[0], device=chosen.device)
        new_time = self.is_time[chosen]
        self.seen_group[new_time] = False
        self.seen_token[new_time] = False
        self.seen_group[rows, self.group_of_id[chosen]] = True
        self.seen_group[:, -1] = False
        self.seen_token[rows, chosen] = True
        pair = self.pair_of_id[chosen]
        in_pair = pair >= 0
        if bool(in_pair.any()):
            delta = self.pair_sign[chosen[in_pair]]
            self.open[rows[in_pair], pair[in_pair]] += delta
            self.open.clamp_(min=0)

    def keep_rows(self, keep: Tensor) -> None:
        self.seen_group = self.seen_group[keep]
        self.seen_token = self.seen_token[keep]
        self.open = self.open[keep]


def _prompt_state(tables: GrammarTables, prompt: np.ndarray) -> tuple[Tensor, Tensor, Tensor]:
    """(1, groups + 1) codes and (1, V) tokens seen since the prompt's last time token,
    and (1, pairs) events left open by the prompt, as `TrajectoryGrammar.update` would
    leave them after reading it token by token."""
    ids = np.asarray(prompt, dtype=np.int64)
    times = np.flatnonzero(tables.is_time[ids])
    current = ids[times[-1] :] if times.size else ids
    seen_group = torch.zeros(1, tables.n_groups + 1, dtype=torch.bool)
    seen_group[0, torch.as_tensor(tables.group_of_id[current])] = True
    seen_group[0, -1] = False
    seen_token = torch.zeros(1, len(tables.group_of_id), dtype=torch.bool)
    seen_token[0, torch.as_tensor(current)] = True
    open_count = np.zeros(tables.n_pairs, dtype=np.int64)
    for token_id in ids[tables.pair_of_id[ids] >= 0].tolist():
        pair = tables.pair_of_id[token_id]
        open_count[pair] = max(open_count[pair] + tables.pair_sign[token_id], 0)
    return seen_group, seen_token, torch.as_tensor(open_count)[None]


@dataclass(frozen=True)
class Grammar:
    """The constraints and the vocabulary's lookups: what `generate` needs to constrain."""

    tables: GrammarTables
    constraints: SamplerConstraints = SamplerConstraints()

    @classmethod
    def for_vocab(cls, vocab: Vocabulary, constraints: SamplerConstraints) -> Grammar:
        return cls(GrammarTables.from_vocab(vocab), constraints)

    def start(self, prompt: np.ndarray, rows: int, device: torch.device) -> TrajectoryGrammar:
        """The state of `rows` samples that all continue `prompt`."""
        return TrajectoryGrammar(self.tables, self.constraints, prompt, rows, device)
