"""Text values at the vocabulary level: which texts are numbers, which codes read them,
and that `CODE//text` tokens stay apart for any (code, text) pairs."""

from __future__ import annotations

import numpy as np
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from seqlm.vocabularies import TokenScheme
from seqlm.vocabularies.escaping import unescape_part
from seqlm.vocabularies.event_tokens import with_token_strings
from seqlm.vocabularies.text_values import parsed_number
from seqlm.vocabularies.value_bins import ValueSampler


def test_one_number_is_a_number_and_nothing_else_is():
    texts = ["98.6", "-1", " 5 ", ".5", "1e3", "120/80", ">300", "0-2", "1,000", "inf", "NaN",
             "1e400", "", "SR (Sinus Rhythm)", None]  # fmt: skip
    numbers = pl.select(parsed_number(pl.Series(texts, dtype=pl.String))).to_series().to_list()
    assert numbers[:5] == [float(np.float32(98.6)), -1.0, 5.0, 0.5, 1000.0]
    assert numbers[5:] == [None] * 10


def _rows(code: str, entities: int, texts: list, values: list | None = None) -> pl.DataFrame:
    n = entities * len(texts)
    return pl.DataFrame(
        {
            "entity": [f"e{i // len(texts)}" for i in range(n)],
            "time": [float(i) for i in range(n)],
            "order": list(range(n)),
            "code": [code] * n,
            "value": (values or [None] * len(texts)) * entities,
            "text": texts * entities,
        },
        schema_overrides={"value": pl.Float64},
    )


def test_a_code_reads_text_numbers_only_when_most_of_its_rows_hold_numbers():
    scheme = TokenScheme(use_text=True, value_bins=3, min_values_per_bin=2, min_entities=5)
    sampler = ValueSampler(100)
    sampler.add(_rows("WEIGHT", 6, ["150.5", "160", "170.25"]))
    sampler.add(_rows("MOSTLY_WORDS", 6, ["1", "2", "high", "low", "none"]))
    mixed = _rows("LAB", 6, [None, None, "HEMOLYZED", "7"], [1.0, 2.0, None, None])
    sampler.add(mixed.with_columns(pl.col("entity") + "m"))
    bins = sampler.fit(scheme)
    assert bins["WEIGHT"].text_numbers and bins["WEIGHT"].edges == (160.0, 170.25)
    assert "MOSTLY_WORDS" not in bins  # 2 numbers of 5 texts: categorical
    # 3 of 4 rows hold numbers: the "7"s are values beside the numeric ones.
    assert bins["LAB"].text_numbers and 7.0 in bins["LAB"].centres
    without_text = sampler.fit(TokenScheme(value_bins=3, min_values_per_bin=2, min_entities=5))
    assert set(without_text) == {"LAB"} and not without_text["LAB"].text_numbers
    assert without_text["LAB"].centres == (1.0, 2.0)


def test_text_numbers_sample_independent_of_chunking():
    rows = _rows("W", 40, [f"{v:.2f}" for v in np.random.default_rng(1).normal(size=30)])
    whole = ValueSampler(50)
    whole.add(rows)
    chunked = ValueSampler(50)
    for k in range(4):
        part = ValueSampler(50)
        part.add(rows.filter(pl.col("entity").str.slice(1).cast(pl.Int64) % 4 == k))
        chunked.merge(part)
    scheme = TokenScheme(use_text=True)
    assert whole.fit(scheme) == chunked.fit(scheme)


CODES = st.text(alphabet=st.sampled_from(list("a/ Q3[U")), max_size=6)


@given(st.lists(st.tuples(CODES, CODES), min_size=2, max_size=8, unique=True))
@settings(max_examples=200, deadline=None)
def test_code_and_text_pairs_with_text_never_share_a_token(pairs):
    pairs = [(code, text) for code, text in pairs if text]
    frame = pl.DataFrame(
        {
            "kind": ["K"] * len(pairs),
            "code": [c for c, _ in pairs],
            "text": [t for _, t in pairs],
            "bin": [None] * len(pairs),
        },
        schema={"kind": pl.String, "code": pl.String, "text": pl.String, "bin": pl.Int64},
    )
    tokens = with_token_strings(frame, TokenScheme(use_text=True))
    valid = tokens.filter(~pl.col("reserved_label"))
    assert valid["data_token"].n_unique() == valid.height
    for token, text in valid.select("data_token", "text").iter_rows():
        assert unescape_part(token.rsplit("//", 1)[1]) == text
