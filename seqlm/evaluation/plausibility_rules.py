"""What a plausible clinical trajectory obeys, read from code names alone: which codes are
static, which kinds come in admission/discharge pairs, and which tokens are the same
code. Both the plausibility report (`seqlm.evaluation.plausibility`) and the sampler's
constraints (`seqlm.evaluation.sampling_constraints`) use these rules, so what is
measured and what is enforced cannot drift apart.

The kind of a code is its first `//` part (`ICU_ADMISSION//MICU` -> `ICU_ADMISSION`).

Paired kinds: a kind `STEM<open>` pairs with `STEM<close>` for the suffixes in
`PAIR_SUFFIXES` (`_ADMISSION`/`_DISCHARGE`, `_START`/`_END`, `_REGISTRATION`/`_OUT`,
`_IN`/`_OUT`), when both kinds occur. Pairing is by kind, not by full code: an ICU stay
admitted to one unit may be discharged from another after a transfer. A close event is
*unopened* when, at its row, the subject has no open event of its pair left (opens minus
closes so far, in row order, never below 0).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass

import numpy as np

from seqlm.vocabularies.vocabulary import Vocabulary

PAIR_SUFFIXES: tuple[tuple[str, str], ...] = (
    ("_ADMISSION", "_DISCHARGE"),
    ("_START", "_END"),
    ("_REGISTRATION", "_OUT"),
    ("_IN", "_OUT"),
)
UNKNOWN_MARK = "[UNK]"


def code_kind(code: str) -> str:
    """The first `//` part of a code."""
    return code.split("//", 1)[0]


def is_unknown_code(code: str) -> bool:
    """`[UNK]` or `KIND//[UNK]`: a merged stand-in for many rare codes, so two of them at
    one time are not the same code."""
    return code == UNKNOWN_MARK or code.endswith("//" + UNKNOWN_MARK)


@dataclass(frozen=True)
class EventPair:
    """An opening kind and the kind that closes it (`ICU_ADMISSION`, `ICU_DISCHARGE`)."""

    opens: str
    closes: str

    @property
    def name(self) -> str:
        return f"{self.opens}/{self.closes}"


def paired_kinds(kinds: Iterable[str]) -> list[EventPair]:
    """The pairs among `kinds` by the suffix rule (module docstring), sorted by name."""
    present = set(kinds)
    pairs = set()
    for kind in present:
        for open_suffix, close_suffix in PAIR_SUFFIXES:
            if kind.endswith(open_suffix) and len(kind) > len(open_suffix):
                closes = kind[: -len(open_suffix)] + close_suffix
                if closes in present:
                    pairs.add(EventPair(kind, closes))
    return sorted(pairs, key=lambda pair: pair.name)


def token_code(vocab: Vocabulary, token_id: int) -> str | None:
    """The code an event or unknown token stands for (None for special, time, value)."""
    info = vocab.token_info(token_id)
    if info.role == "event":
        return info.code or info.token
    if info.role == "unknown":
        return info.token
    return None


def token_codes(vocab: Vocabulary) -> list[str | None]:
    """`token_code` of every id, in id order."""
    return [token_code(vocab, i) for i in range(len(vocab))]


def static_token_ids(vocab: Vocabulary, static_kinds: Collection[str]) -> np.ndarray:
    """Ids of the tokens whose kind is static (GENDER, AGE, ...): these belong in a
    trajectory's prefix and are never generated."""
    kinds = set(static_kinds)
    return np.array(
        [
            i
            for i, code in enumerate(token_codes(vocab))
            if code is not None and code_kind(code) in kinds
        ],
        dtype=np.int64,
    )
