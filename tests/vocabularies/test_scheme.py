"""TokenScheme validation, config filling, and the escaping of token parts."""

from __future__ import annotations

import pytest

from seqlm.config import options_from_mapping, parse_option_strings
from seqlm.errors import ConfigError
from seqlm.vocabularies import SPECIAL_TOKENS, TokenScheme
from seqlm.vocabularies.scheme import escape_part, is_reserved, kind_unknown, unescape_part


def test_special_tokens_have_fixed_ids():
    from seqlm.vocabularies import BOS_ID, EOS_ID, PAD_ID, SEP_ID, UNK_ID

    assert SPECIAL_TOKENS == ("[PAD]", "[BOS]", "[EOS]", "[UNK]", "[SEP]")
    assert (PAD_ID, BOS_ID, EOS_ID, UNK_ID, SEP_ID) == (0, 1, 2, 3, 4)


def test_scheme_from_option_strings():
    parsed = parse_option_strings(
        ['time_gap_edges=["80ms", "200ms"]', "time_tokens=true", "min_entities=5"]
    )
    scheme = options_from_mapping(TokenScheme, parsed)
    assert scheme.time_gap_edges == ("80ms", "200ms")
    assert scheme.time_gap_tokens().edges == pytest.approx((0.08, 0.2))
    assert scheme.min_entities == 5


def test_scheme_round_trips_through_its_dict():
    scheme = TokenScheme(value_mode="separate", use_text=True, time_tokens=True)
    assert options_from_mapping(TokenScheme, scheme.to_dict()) == scheme


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"value_mode": "binned"}, "value_mode"),
        ({"value_bins": 0}, "value_bins"),
        ({"min_entities": 0}, "min_entities"),
        ({"time_tokens": True, "time_gap_edges": []}, "empty"),
        ({"time_tokens": True, "time_gap_edges": ["5 minutes"]}, "duration"),
    ],
)
def test_scheme_rejects_bad_settings(options, message):
    with pytest.raises(ConfigError, match=message):
        options_from_mapping(TokenScheme, options)


def test_time_tokens_off_means_no_gap_tokens():
    assert TokenScheme().time_gap_tokens() is None


def test_escape_writes_spaces_as_mark_and_other_whitespace_reversibly():
    assert escape_part("Blood pressure\tsys") == "Blood▁pressure\\x09sys"
    assert unescape_part("Blood▁pressure") == "Blood pressure"
    assert kind_unknown("LAB") == "LAB//[UNK]"


@pytest.mark.parametrize(
    ("token", "reserved"),
    [
        ("[PAD]", True),
        ("[TIME//5m]", True),
        ("VALUE//Q3", True),
        ("LAB//[UNK]", True),
        ("LAB//51003//ng/mL//Q7", False),
        ("a", False),
    ],
)
def test_reserved_tokens(token, reserved):
    assert is_reserved(token) is reserved
