"""The fitted vocabulary: token strings <-> ids, and what each token stands for.

Saved as two files in a folder: `tokenizer.json`, an HF `tokenizers` WordLevel model
with a WhitespaceSplit pre-tokenizer (so `" ".join(tokens)` encodes to the same ids in
any HF tool), and `scheme.json`, the token scheme plus what was fitted on train: the
per-code value bins, what each data token stands for (code, text, bin), and how many
rare tokens were merged into unknowns (a count, never which).

Token strings are returned exactly as stored (spaces written as `▁`); `token_info`
gives a token's code and text with spaces restored.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
from tokenizers import Tokenizer, models, pre_tokenizers

from seqlm.config import options_from_mapping
from seqlm.constants import TOKENIZER_FILE
from seqlm.errors import ConfigError, CorpusError, InputError, SeqlmError
from seqlm.events import EventTable
from seqlm.vocabularies.event_tokens import (
    EncodedSequences,
    assemble_sequences,
    event_token_frame,
    sorted_events,
)
from seqlm.vocabularies.fitting import (
    DataToken,
    FittedTokens,
    VocabularyFitter,
    check_known_sources,
)
from seqlm.vocabularies.scheme import (
    CONDITION_TOKEN_PREFIX,
    PART_SEPARATOR,
    SPECIAL_TOKENS,
    TEXT_UNK,
    TIME_TOKEN_PREFIX,
    UNK,
    UNK_ID,
    VALUE_TOKEN_PREFIX,
    TokenScheme,
    unescape_part,
    value_token,
)
from seqlm.vocabularies.value_bins import CodeValueBins, edge_table

SCHEME_FILE = "scheme.json"
SCHEME_FORMAT = "seqlm-vocabulary/1"

TokenRole = Literal["special", "unknown", "time", "value", "event", "condition"]


@dataclass(frozen=True)
class TokenInfo:
    """What one token stands for. `bin_range`/`bin_centre` are set for fused value
    tokens (from the code's bins); a separate `VALUE//Q{k}` token's range depends on the
    code before it: `vocab.value_bins[code].interval(k)`. `gap` is a time token's
    interval in seconds."""

    id: int
    token: str
    role: TokenRole
    kind: str | None = None
    code: str | None = None
    text: str | None = None
    bin: int | None = None
    bin_range: tuple[float, float] | None = None
    bin_centre: float | None = None
    gap: tuple[float, float] | None = None


_WHITESPACE = re.compile(r"\s")


@dataclass(eq=False)
class Vocabulary:
    scheme: TokenScheme
    tokens: tuple[str, ...]
    data_tokens: dict[str, DataToken] = field(default_factory=dict)
    value_bins: dict[str, CodeValueBins] = field(default_factory=dict)
    merged_tokens: int = 0
    # Distinct train entities behind each data token and kind unknown (scheme.json
    # `support`, so the privacy threshold can be audited); None for older corpora.
    support: dict[str, int] | None = None
    # What fitting did with train texts (counts only; scheme.json `text_summary`).
    text_summary: dict[str, int] | None = None

    def __post_init__(self) -> None:
        self.tokens = tuple(self.tokens)
        if self.tokens[: len(SPECIAL_TOKENS)] != SPECIAL_TOKENS:
            raise CorpusError(f"vocabulary must start with the special tokens {SPECIAL_TOKENS}")
        if len(set(self.tokens)) != len(self.tokens):
            raise CorpusError("vocabulary has a token twice")
        # One scan of all tokens together: a token holds whitespace exactly when their
        # concatenation does (`\s` is str.isspace); per character in Python this cost
        # 1-2 s for a 100k-token vocabulary, in the build and in every worker's load.
        if not all(self.tokens) or _WHITESPACE.search("".join(self.tokens)):
            raise CorpusError("vocabulary has an empty token or one holding whitespace")

    # -- fitting -------------------------------------------------------------------

    @classmethod
    def fit(cls, train_events: EventTable, scheme: TokenScheme) -> Vocabulary:
        """Fit on the train split only: `train_events` may not hold rows of another split."""
        frame = train_events.frame
        others = (
            frame.select(pl.col("split").drop_nulls().unique())
            .filter(pl.col("split") != "train")
            .collect()
        )
        if others.height:
            raise ConfigError(
                f"Vocabulary.fit sees the train split only; got rows of split "
                f"{sorted(others['split'].to_list())}"
            )
        events = sorted_events(frame).collect()
        fitter = VocabularyFitter(scheme)
        fitter.add_values(events)
        fitter.finish_values()
        fitter.add_tokens(events)
        return cls.from_fitted(scheme, fitter.result())

    @classmethod
    def from_fitted(cls, scheme: TokenScheme, fitted: FittedTokens) -> Vocabulary:
        return cls(
            scheme=scheme,
            tokens=fitted.tokens,
            data_tokens=dict(fitted.data_tokens),
            value_bins=dict(fitted.value_bins),
            merged_tokens=fitted.merged_tokens,
            support=None if fitted.support is None else dict(fitted.support),
            text_summary=fitted.text_summary,
        )

    # -- lookups -------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.tokens)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Vocabulary):
            return NotImplemented
        return (
            self.scheme == other.scheme
            and self.tokens == other.tokens
            and self.data_tokens == other.data_tokens
            and self.value_bins == other.value_bins
            and self.merged_tokens == other.merged_tokens
        )

    @property
    def token_dtype(self) -> np.dtype:
        """uint16 when every id fits (at most 65,535 tokens), else uint32."""
        return np.dtype(np.uint16) if len(self.tokens) <= 65_535 else np.dtype(np.uint32)

    @cached_property
    def token_to_id(self) -> dict[str, int]:
        return {token: i for i, token in enumerate(self.tokens)}

    @cached_property
    def _token_series(self) -> pl.Series:
        return pl.Series("token", self.tokens, dtype=pl.String)

    @cached_property
    def _id_series(self) -> pl.Series:
        return pl.Series("id", range(len(self.tokens)), dtype=pl.Int64)

    @cached_property
    def _token_array(self) -> np.ndarray:
        return np.array(self.tokens, dtype=object)

    def encode(self, tokens: Sequence[str]) -> np.ndarray:
        """Ids of token strings (Int64); a string not in the vocabulary gets `[UNK]`."""
        series = pl.Series("token", list(tokens), dtype=pl.String)
        ids = series.replace_strict(
            self._token_series, self._id_series, default=UNK_ID, return_dtype=pl.Int64
        )
        return ids.to_numpy()

    def decode(self, ids: Sequence[int] | np.ndarray) -> list[str]:
        """Token strings of ids, exactly as `tokenize` wrote them."""
        array = np.asarray(ids)
        if array.size == 0:
            return []
        if not np.issubdtype(array.dtype, np.integer):
            raise InputError(f"token ids must be integers, got {array.dtype}")
        if array.min() < 0 or array.max() >= len(self.tokens):
            raise InputError(f"token id outside 0..{len(self.tokens) - 1}")
        return self._token_array[array.astype(np.int64)].tolist()

    @cached_property
    def roles(self) -> tuple[TokenRole, ...]:
        """The role of each id, in id order."""
        return tuple(_role(token, token in self.data_tokens) for token in self.tokens)

    @cached_property
    def condition_ids(self) -> np.ndarray:
        """Ids of the conditioning tokens: context only, never a target, never scored
        and never generated. Every trainer, scorer and sampler masks these ids."""
        return np.array(
            [i for i, role in enumerate(self.roles) if role == "condition"], dtype=np.int64
        )

    def token_info(self, token: str | int) -> TokenInfo:
        """What a token (string or id) stands for: its code, value bin or time gap."""
        if isinstance(token, str):
            if token not in self.token_to_id:
                raise InputError(f"{token!r} is not in the vocabulary")
            token_id = self.token_to_id[token]
        else:
            token_id = int(token)
            if not 0 <= token_id < len(self.tokens):
                raise InputError(f"token id {token_id} outside 0..{len(self.tokens) - 1}")
        string = self.tokens[token_id]
        role = self.roles[token_id]
        if role == "unknown" and string.endswith(PART_SEPARATOR + TEXT_UNK):
            # A code's text unknown: the code is known, its text is not.
            code = unescape_part(string[: -len(PART_SEPARATOR + TEXT_UNK)])
            return TokenInfo(token_id, string, role, code=code)
        if role == "unknown" and string != UNK:
            kind = unescape_part(string[: -len(PART_SEPARATOR + UNK)])
            return TokenInfo(token_id, string, role, kind=kind)
        if role == "time":
            gaps = self.scheme.time_gap_tokens()
            gap = gaps.interval(string) if gaps is not None else None
            return TokenInfo(token_id, string, role, gap=gap)
        if role == "value":
            return TokenInfo(token_id, string, role, bin=int(string[len(VALUE_TOKEN_PREFIX) :]))
        if role == "event":
            entry = self.data_tokens[string]
            info = TokenInfo(token_id, string, role, code=entry.code, text=entry.text)
            code_bins = self.value_bins.get(entry.code)
            if entry.bin is not None and code_bins is not None:
                return TokenInfo(
                    token_id,
                    string,
                    role,
                    code=entry.code,
                    text=entry.text,
                    bin=entry.bin,
                    bin_range=code_bins.interval(entry.bin),
                    bin_centre=code_bins.centres[entry.bin - 1],
                )
            return info
        return TokenInfo(token_id, string, role)

    # -- tokenizing ----------------------------------------------------------------

    @cached_property
    def _edge_table(self) -> pl.DataFrame:
        return edge_table(self.value_bins)

    def encode_events(self, events: pl.LazyFrame | pl.DataFrame) -> EncodedSequences:
        """Sorted events (whole entities) to token ids, each sequence `[BOS]`...`[EOS]`.

        A data token not in the vocabulary becomes its kind's unknown, or `[UNK]` when
        that kind has none. Lookups are vectorised (a hash lookup per column).
        """
        frame = event_token_frame(events.lazy(), self.scheme, self.value_bins, self._edge_table)
        return self.encode_token_frame(frame.collect())

    def encode_token_frame(self, frame: pl.DataFrame) -> EncodedSequences:
        """`encode_events` from `event_token_frame` rows already made (entity, time_s,
        gap, bin, data_token, unknown, and code and text with `use_text`), e.g. by the
        pass that counted them."""
        if self.scheme.use_text:
            check_known_sources(frame, self.data_tokens)

        def lookup(column: str) -> pl.Expr:
            return pl.col(column).replace_strict(
                self._token_series, self._id_series, default=None, return_dtype=pl.Int64
            )

        text_unknown = lookup("text_unknown") if "text_unknown" in frame.columns else None
        fallbacks = [lookup("data_token"), text_unknown, lookup("unknown")]
        data_ids = frame.select(
            pl.coalesce(*[f for f in fallbacks if f is not None], pl.lit(UNK_ID, pl.Int64))
        ).to_series()
        gaps = self.scheme.time_gap_tokens()
        # A corpus written before the long-gap token existed has no id for it.
        time_ids = np.array(
            [self.token_to_id.get(t, UNK_ID) for t in (gaps.tokens if gaps is not None else [])],
            dtype=np.int64,
        )
        value_ids = None
        if self.scheme.value_mode == "separate":
            value_ids = np.array(
                [UNK_ID]
                + [self.token_to_id[value_token(k)] for k in range(1, self.scheme.value_bins + 1)],
                dtype=np.int64,
            )
        return assemble_sequences(frame, data_ids.to_numpy(), gaps, time_ids, value_ids)

    def tokenize(self, events: EventTable) -> pl.LazyFrame:
        """One row per token (entity, time_s, token) in sequence order, each sequence
        wrapped in `[BOS]` ... `[EOS]`, exactly as the corpus stores it."""
        encoded = self.encode_events(sorted_events(events.frame))
        return pl.LazyFrame(
            {
                "entity": encoded.entity_per_token(),
                "time_s": encoded.times,
                "token": self._token_array[encoded.ids],
            },
            schema={"entity": pl.String, "time_s": pl.Float64, "token": pl.String},
        )

    # -- saving --------------------------------------------------------------------

    def hf_tokenizer(self) -> Tokenizer:
        """The HF tokenizer: WordLevel over whitespace-separated token strings."""
        model = models.WordLevel(vocab=dict(self.token_to_id), unk_token=UNK)
        tokenizer = Tokenizer(model)
        tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        return tokenizer

    def tokenizer_json(self) -> str:
        return self.hf_tokenizer().to_str(pretty=True)

    @property
    def hash(self) -> str:
        """sha256 of `tokenizer.json` as `save` writes it."""
        return hashlib.sha256(self.tokenizer_json().encode("utf-8")).hexdigest()

    def scheme_json(self) -> dict[str, Any]:
        return {
            "format": SCHEME_FORMAT,
            "scheme": self.scheme.to_dict(),
            "merged_tokens": self.merged_tokens,
            "value_bins": {code: b.to_json() for code, b in self.value_bins.items()},
            "data_tokens": {t: [e.code, e.text, e.bin] for t, e in self.data_tokens.items()},
            **({} if self.support is None else {"support": self.support}),
            **({} if self.text_summary is None else {"text_summary": self.text_summary}),
        }

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        _write_atomically(folder / TOKENIZER_FILE, self.tokenizer_json())
        _write_atomically(folder / SCHEME_FILE, json.dumps(self.scheme_json(), indent=1))

    @classmethod
    def load(cls, folder: str | Path) -> Vocabulary:
        folder = Path(folder)
        tokenizer_path, scheme_path = folder / TOKENIZER_FILE, folder / SCHEME_FILE
        for path in (tokenizer_path, scheme_path):
            if not path.is_file():
                raise CorpusError(
                    f"{path}: missing (a vocabulary needs {TOKENIZER_FILE} and {SCHEME_FILE})"
                )
        try:
            vocab = Tokenizer.from_file(str(tokenizer_path)).get_vocab(with_added_tokens=False)
        except Exception as err:  # tokenizers raises plain Exceptions on bad files
            raise CorpusError(f"{tokenizer_path}: not a tokenizer file: {err}") from None
        try:
            data = json.loads(scheme_path.read_text(encoding="utf-8"))
            if data.get("format") != SCHEME_FORMAT:
                raise CorpusError(f"{scheme_path}: unknown format {data.get('format')!r}")
            scheme = options_from_mapping(TokenScheme, data["scheme"])
            data_tokens = {
                token: DataToken(code=code, text=text, bin=bin_number)
                for token, (code, text, bin_number) in data["data_tokens"].items()
            }
            bins = {code: CodeValueBins.from_json(b) for code, b in data["value_bins"].items()}
            merged = int(data["merged_tokens"])
            support = data.get("support")
            support = None if support is None else {str(k): int(v) for k, v in support.items()}
            summary = data.get("text_summary")
            summary = None if summary is None else {str(k): int(v) for k, v in summary.items()}
        except CorpusError:
            raise
        except (SeqlmError, KeyError, TypeError, ValueError) as err:
            raise CorpusError(f"{scheme_path}: not a vocabulary scheme: {err}") from None
        tokens = sorted(vocab, key=vocab.__getitem__)
        if [vocab[t] for t in tokens] != list(range(len(tokens))):
            raise CorpusError(f"{tokenizer_path}: token ids are not 0..n-1")
        return cls(scheme, tuple(tokens), data_tokens, bins, merged, support, summary)


def _role(token: str, is_data: bool) -> TokenRole:
    if is_data:
        return "event"
    if token == UNK or token.endswith((PART_SEPARATOR + UNK, PART_SEPARATOR + TEXT_UNK)):
        return "unknown"
    if token in SPECIAL_TOKENS:
        return "special"
    if token.startswith(TIME_TOKEN_PREFIX):
        return "time"
    if token.startswith(CONDITION_TOKEN_PREFIX):
        return "condition"
    if token.startswith(VALUE_TOKEN_PREFIX):
        return "value"
    return "event"


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)
