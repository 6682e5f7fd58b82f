"""The token scheme: which event fields make a token, and the fixed special tokens.

A `TokenScheme` is plain configuration (filled from a TOML `[scheme]` table or
`--option scheme.X=...`); a fitted `Vocabulary` carries the scheme it was fitted with
and saves it as `scheme.json`, so a corpus always says how its tokens were made.

Token strings never hold whitespace, because the saved HF tokenizer splits on it: a
space in a code, text or kind is written as `▁`, other whitespace and control characters
as reversible backslash escapes (`seqlm.vocabularies.escaping`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

from seqlm.errors import ConfigError
from seqlm.vocabularies.escaping import (  # noqa: F401  (re-exported)
    SPACE_MARK,
    escape_part,
    escaped,
    unescape_part,
)
from seqlm.vocabularies.time_gaps import TIME_TOKEN_PREFIX, TimeGapTokens

PAD, BOS, EOS, UNK, SEP = "[PAD]", "[BOS]", "[EOS]", "[UNK]", "[SEP]"
# The last part of a code's text unknown (`LAB//220048//[TEXT_UNK]`): the code had a
# text whose own token was not kept (rare, or over `text_max_values`).
TEXT_UNK = "[TEXT_UNK]"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, BOS, EOS, UNK, SEP)
PAD_ID, BOS_ID, EOS_ID, UNK_ID, SEP_ID = range(5)

# Separator between the parts of a token (`LAB//51003//ng/mL//Q7`), as in MEDS codes.
PART_SEPARATOR = "//"
VALUE_TOKEN_PREFIX = "VALUE//Q"
# Conditioning tokens (`[COND//bird=bird3]`): a sequence's attributes as a prefix; context
# only, never a target (seqlm.corpus.conditioning).
CONDITION_TOKEN_PREFIX = "[COND//"

# ETHOS-like gaps between clinical events, from 5 minutes to 6 months ("mo" = 30 days).
CLINICAL_TIME_GAPS: tuple[str, ...] = (
    "5m",
    "15m",
    "30m",
    "1h",
    "2h",
    "3h",
    "5h",
    "8h",
    "12h",
    "18h",
    "1d",
    "2d",
    "4d",
    "7d",
    "12d",
    "20d",
    "30d",
    "2mo",
    "3mo",
    "6mo",
)


@dataclass
class TokenScheme:
    """How events become tokens, and which tokens are frequent enough to keep.

    - `value_mode`: "fused" appends the value's bin to the code token (`CODE//Q7`),
      "separate" writes a `VALUE//Q7` token after the code token (ETHOS style),
      "ignore" leaves values out.
    - `value_bins`: quantile bins per code, fitted on train values (10 = deciles). A
      code gets `min(value_bins, n_values // min_values_per_bin)` bins (fewer where
      quantiles tie); a code with fewer than two bins' worth of train values, or
      values from fewer than `min_entities` entities, gets none and its valued events
      become the plain code token.
    - `value_sample_size`: at most this many train values per code are kept (a
      deterministic hash-ranked sample) to compute the quantiles, so fitting needs
      bounded memory; codes with fewer values use all of them.
    - `use_text`: whether text values are used (seqlm.vocabularies.text_values): a text
      joins its code's token (`CODE//text`) unless the row's numeric value is binned,
      and a number-like text on a code whose train values are numeric is binned as a
      value. `text_max_values`: at most this many text tokens per code (the most
      frequent in train), so free text cannot flood the vocabulary; a text whose token
      is not kept becomes the code's text unknown `CODE//[TEXT_UNK]` (which needs the
      same support, else the kind's unknown).
    - `time_tokens`, `time_gap_edges`: insert `[TIME//<label>]` tokens for gaps
      between timed events; edges are durations such as `80ms`, `5m`, `2h`, `30d`.
      `time_gap_max_repeats`: a gap longer than this many last edges is one
      `[TIME//long]` token instead of that many copies of the last edge's token.
    - `min_count`, `min_entities`: a token seen fewer times, or in fewer distinct
      entities, in the train split becomes its kind's unknown (`KIND//[UNK]`). This is
      the privacy threshold (clinical sources use 5 entities).
    """

    value_mode: Literal["fused", "separate", "ignore"] = field(
        default="fused",
        metadata={
            "help": "fused: value's bin appended to the code token (CODE//Q7); separate: a VALUE//Q7 token after it; ignore: values left out."
        },
    )
    value_bins: int = field(
        default=10,
        metadata={"help": "Quantile bins per code fitted on train values (10 = deciles)."},
    )
    min_values_per_bin: int = field(
        default=5,
        metadata={
            "help": "A code gets at most n_values // this many bins, so each bin has enough values."
        },
    )
    value_sample_size: int = field(
        default=4096,
        metadata={
            "help": "At most this many train values per code are kept to compute the quantiles (bounded memory)."
        },
    )
    use_text: bool = field(
        default=False,
        metadata={
            "help": "Use text values: a text joins its code's token (CODE//text), a number-like text on a code with numeric values is binned as a value."
        },
    )
    text_max_values: int = field(
        default=50,
        metadata={
            "help": "At most this many text tokens per code (the most frequent in train); other texts become the code's text unknown (CODE//[TEXT_UNK])."
        },
    )
    time_tokens: bool = field(
        default=False,
        metadata={"help": "Insert [TIME//<label>] tokens for gaps between timed events."},
    )
    time_gap_edges: tuple[str, ...] = field(
        default=CLINICAL_TIME_GAPS,
        metadata={
            "help": "Gap bin edges for time tokens: durations such as 80ms, 5m, 2h, 30d (or plain numbers for index time)."
        },
    )
    time_gap_max_repeats: int = dataclasses.field(
        default=10,
        metadata={
            "help": "most copies of the last time-gap token per gap; a longer gap is one "
            "[TIME//long] token"
        },
    )
    min_count: int = field(
        default=1,
        metadata={
            "help": "A token seen fewer times in train becomes its kind's unknown token (KIND//[UNK])."
        },
    )
    min_entities: int = field(
        default=1,
        metadata={
            "help": "A token seen in fewer distinct train entities becomes unknown: the privacy threshold (clinical: 5)."
        },
    )

    def __post_init__(self) -> None:
        self.time_gap_edges = tuple(self.time_gap_edges)
        if self.value_mode not in ("fused", "separate", "ignore"):
            raise ConfigError(
                f"scheme.value_mode must be fused, separate or ignore, got {self.value_mode!r}"
            )
        for name in ("value_bins", "min_values_per_bin", "value_sample_size", "text_max_values"):
            if getattr(self, name) < 1:
                raise ConfigError(f"scheme.{name} must be at least 1")
        if self.min_count < 1 or self.min_entities < 1:
            raise ConfigError("scheme.min_count and scheme.min_entities must be at least 1")
        if self.time_tokens and not self.time_gap_edges:
            raise ConfigError("scheme.time_tokens is on but scheme.time_gap_edges is empty")
        # Parsing here reports a bad edge when the config is read, not mid-ingest.
        self.time_gap_tokens()

    def time_gap_tokens(self) -> TimeGapTokens | None:
        """The time-gap tokens this scheme inserts, or None when it inserts none."""
        if not self.time_tokens:
            return None
        return TimeGapTokens.from_labels(self.time_gap_edges, self.time_gap_max_repeats)

    @property
    def uses_values(self) -> bool:
        return self.value_mode != "ignore"

    def to_dict(self) -> dict[str, object]:
        """Plain values for JSON (tuples become lists there)."""
        return dataclasses.asdict(self)


def kind_unknown(kind: str) -> str:
    """The unknown token of an (escaped) kind: `LAB//[UNK]`."""
    return f"{kind}{PART_SEPARATOR}{UNK}"


def value_token(bin_number: int) -> str:
    return f"{VALUE_TOKEN_PREFIX}{bin_number}"


def is_reserved(token: str) -> bool:
    """Token strings the scheme makes itself, which a data token may never take over."""
    return (
        token in SPECIAL_TOKENS
        or token.startswith(TIME_TOKEN_PREFIX)
        or token.startswith(VALUE_TOKEN_PREFIX)
        or token.endswith(PART_SEPARATOR + UNK)
        or token.endswith(PART_SEPARATOR + TEXT_UNK)
    )
