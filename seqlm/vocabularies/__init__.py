"""Vocabularies: event fields -> token strings -> ids.

Value bins, time-gap tokens, special tokens and privacy thresholds; the fitted
`Vocabulary` saves as an HF `tokenizer.json` plus `scheme.json`.
"""

from __future__ import annotations

from seqlm.vocabularies.fitting import DataToken, VocabularyFitter
from seqlm.vocabularies.scheme import (
    BOS,
    BOS_ID,
    CLINICAL_TIME_GAPS,
    EOS,
    EOS_ID,
    PAD,
    PAD_ID,
    SEP,
    SEP_ID,
    SPECIAL_TOKENS,
    UNK,
    UNK_ID,
    TokenScheme,
    kind_unknown,
)
from seqlm.vocabularies.time_gaps import TimeGapTokens, parse_duration
from seqlm.vocabularies.value_bins import CodeValueBins
from seqlm.vocabularies.vocabulary import TokenInfo, Vocabulary

__all__ = [
    "BOS",
    "BOS_ID",
    "CLINICAL_TIME_GAPS",
    "EOS",
    "EOS_ID",
    "PAD",
    "PAD_ID",
    "SEP",
    "SEP_ID",
    "SPECIAL_TOKENS",
    "UNK",
    "UNK_ID",
    "CodeValueBins",
    "DataToken",
    "TimeGapTokens",
    "TokenInfo",
    "TokenScheme",
    "Vocabulary",
    "VocabularyFitter",
    "kind_unknown",
    "parse_duration",
]
