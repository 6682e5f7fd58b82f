"""Vocabulary: fitting on train, thresholds, tokenizing, encode/decode, save/load."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqlm.errors import ConfigError, CorpusError, InputError, SeqlmError
from seqlm.events import EventTable
from seqlm.vocabularies import UNK_ID, TokenScheme, Vocabulary


def table(rows: list[dict], attributes: tuple[str, ...] = ()) -> EventTable:
    return EventTable.from_frame(pl.DataFrame(rows), attributes)


def event(entity, code, time=None, kind="LAB", value=None, text=None, split="train"):
    return {
        "entity": entity,
        "time": time,
        "kind": kind,
        "code": code,
        "value": value,
        "text": text,
        "split": split,
    }


def sequences(vocab: Vocabulary, events: EventTable) -> dict[str, list[str]]:
    frame = vocab.tokenize(events).collect()
    return {
        entity: part["token"].to_list()
        for (entity,), part in frame.group_by("entity", maintain_order=True)
    }


# A clinical-like table: a static prefix row, a lab with values, a diagnosis with a space.
CLINIC = [
    event("p1", "GENDER//F", kind="GENDER"),
    event("p1", "LAB//hb", 0.0, value=1.0),
    event("p1", "LAB//hb", 600.0, value=9.0),
    event("p1", "DX//heart failure", 7200.0, kind="DX"),
    event("p2", "GENDER//M", kind="GENDER"),
    event("p2", "LAB//hb", 0.0, value=2.0),
    event("p2", "LAB//hb", 30.0, value=8.0),
    event("p2", "DX//heart failure", 3 * 86400.0, kind="DX"),
]
SCHEME = TokenScheme(
    value_bins=2, min_values_per_bin=1, time_tokens=True, time_gap_edges=("5m", "1h", "1d")
)


def test_tokenize_writes_prefix_time_tokens_fused_bins_and_bos_eos():
    events = table(CLINIC)
    vocab = Vocabulary.fit(events, SCHEME)
    assert vocab.value_bins["LAB//hb"].edges == (8.0,)
    got = sequences(vocab, events)
    assert got["p1"] == [
        "[BOS]",
        "GENDER//F",
        "LAB//hb//Q1",
        "[TIME//5m]",
        "LAB//hb//Q2",
        "[TIME//1h]",
        "DX//heart▁failure",
        "[EOS]",
    ]
    assert got["p2"] == [
        "[BOS]",
        "GENDER//M",
        "LAB//hb//Q1",
        "LAB//hb//Q2",
        # 3 days less 30 s: two whole days, then 23 h 59 m 30 s as the 1 h token
        "[TIME//1d]",
        "[TIME//1d]",
        "[TIME//1h]",
        "DX//heart▁failure",
        "[EOS]",
    ]
    times = vocab.tokenize(events).collect().filter(pl.col("entity") == "p1")["time_s"]
    assert times.to_list() == [0.0, 0.0, 0.0, 600.0, 600.0, 7200.0, 7200.0, 7200.0]


def test_separate_value_tokens_follow_their_code():
    scheme = TokenScheme(value_mode="separate", value_bins=2, min_values_per_bin=1)
    vocab = Vocabulary.fit(table(CLINIC), scheme)
    got = sequences(vocab, table(CLINIC))
    assert got["p1"][:6] == ["[BOS]", "GENDER//F", "LAB//hb", "VALUE//Q1", "LAB//hb", "VALUE//Q2"]
    assert {"VALUE//Q1", "VALUE//Q2"} <= set(vocab.tokens)
    assert vocab.token_info("VALUE//Q2").bin == 2


def test_ignored_values_and_text_in_tokens():
    rows = [event(f"p{i}", "NOTE", float(i), value=float(i), text="a b") for i in range(3)]
    vocab = Vocabulary.fit(table(rows), TokenScheme(value_mode="ignore", use_text=True))
    assert "NOTE//a▁b" in vocab.tokens
    assert vocab.value_bins == {}
    info = vocab.token_info("NOTE//a▁b")
    assert (info.code, info.text, info.bin) == ("NOTE", "a b", None)


def test_datetime_times_and_static_prefix():
    start = datetime(2150, 1, 1)
    rows = [
        {"entity": "p", "time": start + timedelta(hours=2), "code": "B"},
        {"entity": "p", "time": None, "code": "S"},
        {"entity": "p", "time": start, "code": "A"},
    ]
    scheme = TokenScheme(time_tokens=True, time_gap_edges=("1h",))
    events = table(rows)
    vocab = Vocabulary.fit(events, scheme)
    frame = vocab.tokenize(events).collect()
    assert frame["token"].to_list() == ["[BOS]", "S", "A", "[TIME//1h]", "[TIME//1h]", "B", "[EOS]"]
    assert frame["time_s"].to_list() == [0.0, 0.0, 0.0, 7200.0, 7200.0, 7200.0, 7200.0]


def test_privacy_threshold_merges_rare_codes_into_kind_unknown():
    rows = [event(f"p{i}", "LAB//common", float(i)) for i in range(5)]
    rows += [event(f"p{i}", "LAB//rare", float(i)) for i in range(4)]
    rows += [event("p0", "LAB//repeated", float(t)) for t in range(20)]  # 20 rows, 1 entity
    rows += [event("p4", "LAB//other", 1.0)]  # a fifth subject behind LAB//[UNK]
    vocab = Vocabulary.fit(table(rows), TokenScheme(min_entities=5))
    assert "LAB//common" in vocab.tokens
    assert "LAB//rare" not in vocab.tokens
    assert "LAB//repeated" not in vocab.tokens
    assert vocab.merged_tokens == 3
    assert vocab.support["LAB//[UNK]"] == 5 and vocab.support["LAB//common"] == 5
    got = sequences(vocab, table(rows))
    assert got["p1"] == ["[BOS]", "LAB//common", "LAB//[UNK]", "[EOS]"]
    assert got["p0"].count("LAB//[UNK]") == 21
    # with 4 entities allowed, the rare code is kept
    assert "LAB//rare" in Vocabulary.fit(table(rows), TokenScheme(min_entities=4)).tokens


def test_a_kind_unknown_held_by_too_few_entities_falls_back_to_unk():
    """Issue 20: the kind's unknown is judged by who holds it, not by who has the kind."""
    rows = [event(f"p{i}", "LAB//common", float(i)) for i in range(8)]
    rows += [event(f"p{i}", "LAB//rare", float(i)) for i in range(4)]  # 4 holders < 5
    vocab = Vocabulary.fit(table(rows), TokenScheme(min_entities=5))
    assert "LAB//[UNK]" not in vocab.tokens
    assert sequences(vocab, table(rows))["p1"] == ["[BOS]", "LAB//common", "[UNK]", "[EOS]"]
    # no rare code at all: the kind's unknown names nobody and stays for held-out codes
    common = Vocabulary.fit(table(rows[:8]), TokenScheme(min_entities=5))
    assert common.support["LAB//[UNK]"] == 0


def test_rare_codes_leave_no_trace_in_saved_files(tmp_path):
    rows = [event(f"p{i}", "LAB//common", float(i), value=float(i)) for i in range(12)]
    rows += [event(f"p{i}", "LAB//secret", float(i), value=float(i)) for i in range(4)]
    vocab = Vocabulary.fit(table(rows), TokenScheme(min_entities=5, min_values_per_bin=1))
    vocab.save(tmp_path)
    for name in ("tokenizer.json", "scheme.json"):
        text = (tmp_path / name).read_text()
        assert "secret" not in text
        assert "p1" not in text  # no entity identifier


def test_min_count_threshold():
    rows = [event("a", "X", 0.0), event("b", "X", 0.0), event("a", "Y", 1.0)]
    vocab = Vocabulary.fit(table(rows), TokenScheme(min_count=2))
    assert "X" in vocab.tokens and "Y" not in vocab.tokens


def test_unseen_codes_and_kinds_fall_back():
    train = [event(f"p{i}", "LAB//a", float(i)) for i in range(3)]
    vocab = Vocabulary.fit(table(train), TokenScheme())
    later = table(
        [
            event("q", "LAB//new", 0.0, split="held_out"),
            event("q", "PROC//x", 1.0, kind="PROC", split="held_out"),
            event("q", "nokind", 2.0, kind=None, split="held_out"),
        ]
    )
    assert sequences(vocab, later)["q"] == ["[BOS]", "LAB//[UNK]", "[UNK]", "[UNK]", "[EOS]"]


def test_codes_that_spell_scheme_tokens_stay_their_own_tokens():
    # Changed from "become unknowns": an escaped `[` keeps such a code distinct from the
    # scheme's token and from every other code; an empty code is still an unknown.
    rows = [event(f"p{i}", code, float(i)) for i in range(3) for code in ("[PAD]", "ok", "")]
    vocab = Vocabulary.fit(table(rows), TokenScheme())
    assert vocab.tokens.count("[PAD]") == 1
    assert vocab.token_to_id["[PAD]"] == 0
    assert sequences(vocab, table(rows))["p0"] == [
        "[BOS]",
        "\\x5bPAD]",
        "ok",
        "LAB//[UNK]",
        "[EOS]",
    ]
    assert vocab.token_info("\\x5bPAD]").code == "[PAD]"


def test_fit_refuses_rows_of_other_splits():
    with pytest.raises(ConfigError, match="train split only"):
        Vocabulary.fit(table([event("a", "X", 0.0, split="held_out")]), TokenScheme())


def test_token_info_describes_value_bins_time_gaps_and_unknowns():
    vocab = Vocabulary.fit(table(CLINIC), SCHEME)
    info = vocab.token_info("LAB//hb//Q2")
    assert (info.role, info.code, info.bin) == ("event", "LAB//hb", 2)
    assert info.bin_range == (8.0, float("inf"))
    assert info.bin_centre == pytest.approx(8.5)  # median of 8 and 9
    assert vocab.token_info("[TIME//1h]").gap == (3600.0, 86400.0)
    assert vocab.token_info("DX//[UNK]").kind == "DX"
    assert vocab.token_info("DX//heart▁failure").code == "DX//heart failure"
    assert vocab.token_info(0).role == "special"
    with pytest.raises(InputError):
        vocab.token_info("nope")
    with pytest.raises(InputError):
        vocab.token_info(len(vocab))


def test_save_load_equality_and_stable_hash(tmp_path):
    vocab = Vocabulary.fit(table(CLINIC), SCHEME)
    vocab.save(tmp_path / "a")
    loaded = Vocabulary.load(tmp_path / "a")
    assert loaded == vocab
    assert loaded.hash == vocab.hash
    loaded.save(tmp_path / "b")
    assert (tmp_path / "a" / "tokenizer.json").read_bytes() == (
        tmp_path / "b" / "tokenizer.json"
    ).read_bytes()
    data = json.loads((tmp_path / "a" / "tokenizer.json").read_text())
    assert data["model"]["type"] == "WordLevel"
    assert data["pre_tokenizer"]["type"] == "WhitespaceSplit"


def test_load_reports_missing_and_broken_files(tmp_path):
    with pytest.raises(CorpusError, match="missing"):
        Vocabulary.load(tmp_path)
    Vocabulary.fit(table(CLINIC), SCHEME).save(tmp_path)
    (tmp_path / "scheme.json").write_text('{"format": "seqlm-vocabulary/1"}')
    with pytest.raises(CorpusError, match="scheme"):
        Vocabulary.load(tmp_path)
    (tmp_path / "tokenizer.json").write_text("not json")
    with pytest.raises(CorpusError, match="tokenizer"):
        Vocabulary.load(tmp_path)


def test_token_dtype_switches_above_65535_tokens():
    small = Vocabulary(TokenScheme(), ("[PAD]", "[BOS]", "[EOS]", "[UNK]", "[SEP]"))
    assert small.token_dtype == np.uint16
    specials = ("[PAD]", "[BOS]", "[EOS]", "[UNK]", "[SEP]")
    edge = Vocabulary(TokenScheme(), specials + tuple(f"t{i}" for i in range(65_535 - 5)))
    assert len(edge) == 65_535 and edge.token_dtype == np.uint16
    big = Vocabulary(TokenScheme(), specials + tuple(f"t{i}" for i in range(65_536 - 5)))
    assert big.token_dtype == np.uint32


def test_decode_rejects_ids_outside_the_vocabulary():
    vocab = Vocabulary.fit(table(CLINIC), SCHEME)
    with pytest.raises(InputError):
        vocab.decode([len(vocab)])
    with pytest.raises(InputError):
        vocab.decode([-1])
    assert vocab.encode(["never seen"]).tolist() == [UNK_ID]


FITTED = Vocabulary.fit(table(CLINIC), SCHEME)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(FITTED.tokens), max_size=50))
def test_encode_decode_round_trip_and_hf_agreement(tokens):
    ids = FITTED.encode(tokens)
    assert FITTED.decode(ids) == tokens
    assert FITTED.hf_tokenizer().encode(" ".join(tokens)).ids == ids.tolist()


_codes = st.text(alphabet="ab /[]\t", max_size=6)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["e1", "e2", "e3"]),
            st.one_of(st.none(), st.floats(min_value=0, max_value=1e8)),
            st.sampled_from(["LAB", "DX", None, " "]),
            _codes,
            st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
            st.one_of(st.none(), _codes),
        ),
        min_size=1,
        max_size=30,
    ),
    st.sampled_from(["fused", "separate", "ignore"]),
    st.booleans(),
)
def test_any_event_table_tokenizes_into_wrapped_round_tripping_sequences(rows, mode, text):
    frame = pl.DataFrame(
        rows,
        schema=["entity", "time", "kind", "code", "value", "text"],
        orient="row",
    )
    events = EventTable.from_frame(frame)
    scheme = TokenScheme(
        value_mode=mode,
        value_bins=3,
        min_values_per_bin=1,
        use_text=text,
        time_tokens=True,
        time_gap_edges=("1s", "1m", "1h"),
    )
    try:
        vocab = Vocabulary.fit(events, scheme)
    except SeqlmError:
        return
    tokenized = vocab.tokenize(events).collect()
    for (entity,), part in tokenized.group_by("entity", maintain_order=True):
        tokens = part["token"].to_list()
        assert tokens[0] == "[BOS]" and tokens[-1] == "[EOS]"
        assert not any(any(c.isspace() for c in t) for t in tokens)
        n_events = frame.filter(pl.col("entity") == entity).height
        data = [t for t in tokens[1:-1] if not t.startswith(("[TIME//", "VALUE//Q"))]
        assert len(data) == n_events
        assert vocab.decode(vocab.encode(tokens)) == tokens


@pytest.mark.parametrize(
    "bad", ["", "a b", "tab\there", "line\nend", "em\u2003space", "unit\x1fsep"]
)
def test_a_token_that_is_empty_or_holds_any_whitespace_is_refused(bad):
    from seqlm.vocabularies.vocabulary import SPECIAL_TOKENS

    scheme = TokenScheme()
    Vocabulary(scheme=scheme, tokens=(*SPECIAL_TOKENS, "LAB//1", "LAB//2"))  # fine
    with pytest.raises(CorpusError, match="empty token or one holding whitespace"):
        Vocabulary(scheme=scheme, tokens=(*SPECIAL_TOKENS, "LAB//1", bad))
