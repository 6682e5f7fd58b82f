"""Text values (MEDS `text_value`): which rows' text joins the token, which text is read
as a number, and why the rest is not used (issue 20: 481,928 demo rows had lost theirs
without a word).

Per row, in this order (docs/tokenization.md, "Text values"):

1. a numeric value in one of its code's value bins is used; a text beside it is not
   (`beside_binned_value`: MIMIC writes the label of a score beside it, "Obeys
   Commands" beside GCS 6, or `___` where a value was de-identified);
2. a text that looks like one number ("98.6", not "120/80") on a code whose train
   values are numeric (`CodeValueBins.text_numbers`, decided from train rows by
   `reads_text_numbers`) becomes the row's value and is binned like one;
3. any other non-empty text joins the code's token (`CODE//text`), kept when the privacy
   rule and the per-code cap allow, else merged into the code's text unknown
   (`CODE//[TEXT_UNK]`) and coarser (seqlm.vocabularies.fitting);
4. with `scheme.use_text` off, texts are counted, never used.

Each row gets a `text_fate` and a `value_fate` (small integers) that the corpus build
counts per pair and sums into the manifest.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

import polars as pl

from seqlm.vocabularies.scheme import TokenScheme
from seqlm.vocabularies.value_bins import (  # noqa: F401  (re-exported)
    NUMBER_PATTERN,
    NUMERIC_TEXT_SHARE,
    CodeValueBins,
    parsed_number,
    reads_text_numbers,
    with_bin_numbers,
)

FrameT = TypeVar("FrameT", pl.DataFrame, pl.LazyFrame)

# text_fate values
NO_TEXT, TEXT_TOKEN, TEXT_NUMBER, BESIDE_VALUE, TEXT_OFF, EMPTY_TEXT = range(6)
# value_fate values
NO_VALUE, VALUE_BINNED, VALUE_UNBINNED = range(3)


def with_values_and_fates(
    frame: pl.LazyFrame, scheme: TokenScheme, bins: Mapping[str, CodeValueBins]
) -> pl.LazyFrame:
    """Rows of code, text and value (float32 as stored) -> the same with `bin`,
    `text_fate` and `value_fate`; `value` takes a text's number where rule 2 applies and
    `text` is kept only where it joins the token (rule 3)."""
    text = pl.col("text")
    given = pl.col("value").is_not_null()
    number_codes = [c for c, b in bins.items() if b.text_numbers]
    if scheme.uses_values and scheme.use_text and number_codes:
        # Only the texts that may give a value are parsed (a when/then evaluates both
        # branches on every row).
        from_text = parsed_number(pl.when(~given & pl.col("code").is_in(number_codes)).then(text))
        frame = frame.with_columns(from_text.alias("_number"))
        frame = frame.with_columns(
            pl.coalesce(pl.col("value"), pl.col("_number")).alias("value"),
            pl.col("_number").is_not_null().alias("_parsed"),
            given.alias("_given"),
        ).drop("_number")
    else:
        frame = frame.with_columns(pl.lit(False).alias("_parsed"), given.alias("_given"))
    if scheme.uses_values:
        frame = with_bin_numbers(frame, bins)
    else:
        frame = frame.with_columns(pl.lit(None, dtype=pl.Int64).alias("bin"))
    binned = pl.col("bin").is_not_null()
    fate = (
        pl.when(text.is_null())
        .then(NO_TEXT)
        .when(text.str.len_chars() == 0)
        .then(EMPTY_TEXT)
        .when(pl.lit(not scheme.use_text))
        .then(TEXT_OFF)
        .when(pl.col("_parsed"))
        .then(TEXT_NUMBER)
        .when(binned)
        .then(BESIDE_VALUE)
        .otherwise(TEXT_TOKEN)
        .cast(pl.Int8)
    )
    value_fate = (
        pl.when(~pl.col("_given"))
        .then(NO_VALUE)
        .when(binned)
        .then(VALUE_BINNED)
        .otherwise(VALUE_UNBINNED)
        .cast(pl.Int8)
    )
    frame = frame.with_columns(fate.alias("text_fate"), value_fate.alias("value_fate"))
    return frame.with_columns(
        pl.when(pl.col("text_fate") == TEXT_TOKEN).then(text).otherwise(None).alias("text")
    ).drop("_parsed", "_given")


def fate_counts(
    text_fate: pl.Series,
    value_fate: pl.Series,
    in_token: pl.Series,
    in_text_unknown: pl.Series,
    rows: pl.Series,
) -> dict[str, int]:
    """What became of every text and numeric value, from per-pair fates, whether the
    pair's own data token and its code's text unknown are in the vocabulary, and the
    pair's row counts."""
    frame = pl.DataFrame(
        {
            "text_fate": text_fate,
            "value_fate": value_fate,
            "in_token": in_token,
            "in_text_unknown": in_text_unknown,
            "rows": rows,
        }
    )

    def total(condition: pl.Expr) -> int:
        return int(frame.filter(condition)["rows"].sum())

    fate, value = pl.col("text_fate"), pl.col("value_fate")
    return {
        "text_rows": total(fate != NO_TEXT),
        "text_in_token": total((fate == TEXT_TOKEN) & pl.col("in_token")),
        "text_as_number": total(fate == TEXT_NUMBER),
        "text_rare": total((fate == TEXT_TOKEN) & ~pl.col("in_token")),
        # ...of which the code's text unknown took (the others: the kind's unknown or [UNK])
        "text_rare_in_text_unknown": total(
            (fate == TEXT_TOKEN) & ~pl.col("in_token") & pl.col("in_text_unknown")
        ),
        "text_beside_binned_value": total(fate == BESIDE_VALUE),
        "text_use_text_off": total(fate == TEXT_OFF),
        "text_empty": total(fate == EMPTY_TEXT),
        "numeric_rows": total(value != NO_VALUE),
        "numeric_binned": total(value == VALUE_BINNED),
        "numeric_not_binned": total(value == VALUE_UNBINNED),
    }


# What each count means, for `seqlm corpus info` and the docs.
FATE_WORDS: dict[str, str] = {
    "text_in_token": "in a CODE//text token",
    "text_as_number": "read as a number and binned",
    "text_rare": "rare text (under the privacy threshold, or over scheme.text_max_values "
    "for its code)",
    "text_rare_in_text_unknown": "of which written as the code's CODE//[TEXT_UNK] (the "
    "others as the kind's unknown or [UNK])",
    "text_beside_binned_value": "beside a numeric value in a bin (the value is used)",
    "text_use_text_off": "not used: scheme.use_text is off",
    "text_empty": "empty text",
}
