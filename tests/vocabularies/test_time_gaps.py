"""Time-gap tokens: duration labels, the gap rule, and the vectorised form."""

from __future__ import annotations

import contextlib
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqlm.errors import ConfigError
from seqlm.vocabularies import CLINICAL_TIME_GAPS, TimeGapTokens, parse_duration
from seqlm.vocabularies.time_gaps import is_unitless


@pytest.mark.parametrize(
    ("label", "seconds"),
    [
        ("80ms", 0.08),
        ("1.5s", 1.5),
        ("5m", 300.0),
        ("5min", 300.0),
        ("2h", 7200.0),
        ("30d", 30 * 86400.0),
        ("1w", 7 * 86400.0),
        ("6mo", 180 * 86400.0),
        ("1y", 365 * 86400.0),
        (" 12h ", 43200.0),
    ],
)
def test_parse_duration(label, seconds):
    assert parse_duration(label) == pytest.approx(seconds)


def test_plain_numbers_are_unitless_edges():
    # For corpora with time_unit = "index" (beats, steps): `4` is four time units.
    assert parse_duration("4") == 4.0 and parse_duration(" 0.5 ") == 0.5
    assert is_unitless("4") and is_unitless(2) and not is_unitless("4s")


@pytest.mark.parametrize("label", ["", "m5", "5 parsecs", "-5m", "1e3s", "5M"])
def test_parse_duration_rejects_bad_labels(label):
    with pytest.raises(ConfigError, match="duration"):
        parse_duration(label)


@given(st.text(max_size=12))
def test_parse_duration_raises_only_config_errors(text):
    with contextlib.suppress(ConfigError):
        assert parse_duration(text) >= 0


def test_edges_must_increase_and_be_positive():
    with pytest.raises(ConfigError, match="increase"):
        TimeGapTokens.from_labels(["1h", "60m"])
    with pytest.raises(ConfigError, match="longer than zero"):
        TimeGapTokens.from_labels(["0s", "1s"])
    with pytest.raises(ConfigError, match="at least one"):
        TimeGapTokens.from_labels([])


GAPS = TimeGapTokens.from_labels(["5m", "1h", "1d"])


@pytest.mark.parametrize(
    ("gap", "tokens"),
    [
        (None, []),
        (math.nan, []),
        (0.0, []),
        (299.0, []),
        (300.0, ["[TIME//5m]"]),
        (3599.0, ["[TIME//5m]"]),
        (3600.0, ["[TIME//1h]"]),
        (86399.0, ["[TIME//1h]"]),
        (86400.0, ["[TIME//1d]"]),
        (2 * 86400.0, ["[TIME//1d]", "[TIME//1d]"]),
        # 2.5 days: two whole last-edge tokens, then the remainder (12 h) by the rule.
        (2.5 * 86400.0, ["[TIME//1d]", "[TIME//1d]", "[TIME//1h]"]),
        # A remainder under the first edge adds nothing.
        (86400.0 + 60.0, ["[TIME//1d]"]),
    ],
)
def test_gap_tokens_rule(gap, tokens):
    assert GAPS.gap_tokens(gap) == tokens


def test_intervals_and_token_names():
    assert GAPS.tokens == ["[TIME//5m]", "[TIME//1h]", "[TIME//1d]", "[TIME//long]"]
    assert GAPS.interval("[TIME//5m]") == (300.0, 3600.0)
    assert GAPS.interval("[TIME//1d]") == (86400.0, 2 * 86400.0)
    with pytest.raises(ConfigError):
        GAPS.interval("[TIME//2h]")


def test_clinical_defaults_span_five_minutes_to_six_months():
    gaps = TimeGapTokens.from_labels(CLINICAL_TIME_GAPS)
    assert gaps.edges[0] == 300.0
    assert gaps.edges[-1] == 180 * 86400.0


def _reference_tokens(edges: tuple[float, ...], gap: float) -> int:
    """Total seconds of the edges a gap is written as, by plain subtraction."""
    covered = 0.0
    while gap - covered >= edges[-1]:
        covered += edges[-1]
    below = [e for e in edges if e <= gap - covered]
    return len(below)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.floats(min_value=-10, max_value=1e9, allow_nan=False),
            st.just(math.nan),
            st.just(math.inf),
        ),
        max_size=40,
    )
)
def test_split_gaps_matches_scalar_rule(gaps):
    repeats, remainder = GAPS.split_gaps(np.array(gaps, dtype=np.float64))
    for gap, r, idx in zip(gaps, repeats, remainder, strict=True):
        if math.isnan(gap) or gap < GAPS.edges[0]:
            assert (r, idx) == (0, -1)
            continue
        if math.isinf(gap) or gap // GAPS.edges[-1] > GAPS.max_repeats:  # one long token
            assert (r, idx) == (0, len(GAPS.edges))
            continue
        assert r == int(gap // GAPS.edges[-1])
        rest = gap - r * GAPS.edges[-1]
        # the remainder's token is the largest edge not above it, or none
        assert idx == _reference_tokens(GAPS.edges, rest) - 1
        # the tokens never overshoot the gap, and miss it by less than one bin
        covered = r * GAPS.edges[-1] + (GAPS.edges[idx] if idx >= 0 else 0.0)
        assert covered <= gap + 1e-6


@pytest.mark.parametrize(
    ("gap", "tokens"),
    [
        (10 * 86400.0, ["[TIME//1d]"] * 10),  # at the cap: still repeats
        (10.5 * 86400.0, ["[TIME//1d]"] * 10 + ["[TIME//12h]"]),
        (11 * 86400.0, ["[TIME//long]"]),  # beyond it: one token
        (1e13, ["[TIME//long]"]),  # a 1e13 s timestamp
        (math.inf, ["[TIME//long]"]),
        (1e300, ["[TIME//long]"]),  # would overflow int64 as a repeat count
    ],
)
def test_long_gaps_are_one_capped_token(gap, tokens):
    gaps = TimeGapTokens.from_labels(["5m", "12h", "1d"], max_repeats=10)
    assert gaps.gap_tokens(gap) == tokens
    assert gaps.interval("[TIME//long]") == (11 * 86400.0, math.inf)


def test_long_gap_cap_settings_are_checked():
    with pytest.raises(ConfigError, match="at least 1"):
        TimeGapTokens.from_labels(["5m"], max_repeats=0)
    with pytest.raises(ConfigError, match="duration"):  # the long label is no edge
        TimeGapTokens.from_labels(["5m", "long"])
