"""Text values (issue 20 item 1): every MEDS `text_value` is in a token or counted by
reason, on a small MEDS dataset written here with texts of each kind: categorical
("SR (Sinus Rhythm)"), numeric ("180.5" on a code of numbers), blood pressures
("120/80", one of a kind each), rare texts, a text beside a binned value, texts that
spell a marker word or hold `//`."""

from __future__ import annotations

import warnings

import pytest
from corpus.test_token_support import check_support
from helpers.meds_data import meds_frame, t, write_meds

from seqlm.corpora_adapters.meds import MedsMetadataWarning
from seqlm.corpus.info_report import corpus_report
from seqlm.ingest import ingest
from seqlm.vocabularies.text_values import FATE_WORDS

TRAIN = range(10)
HELD_OUT = (10, 11)


def _subject(s: int) -> list[tuple]:
    rows = [(s, t(1, 0), "RHYTHM", None, "SR (Sinus Rhythm)")]
    if s < 6:
        rows.append((s, t(1, 1), "RHYTHM", None, "AF"))
    if s in (0, 1):  # 2 subjects: rare alone, but with PACED 5 share the text unknown
        rows.append((s, t(1, 2), "RHYTHM", None, "VT"))
    if s in (2, 3, 4):
        rows.append((s, t(1, 2), "RHYTHM", None, "PACED"))
    if s in HELD_OUT:
        rows.append((s, t(1, 3), "RHYTHM", None, "never seen in train"))
    # A code of numbers written as text: read as values and binned.
    # Each subject has a weight in each bin, so every bin token has 10 train subjects.
    rows += [(s, t(2, h), "WEIGHT", None, f"{150 + 10 * h + s % 2}.5") for h in range(3)]
    # A pressure is not one number: its own text, one of a kind per subject.
    rows.append((s, t(3, 0), "BP", None, f"{110 + s}/{70 + s}"))
    # Scores with their label: the value is binned, the label beside it is not used.
    rows += [(s, t(4, h), "LAB//gcs", float(3 + (s + h) % 4), "label") for h in range(2)]
    # Texts that must be escaped: a marker word and a `//`.
    rows.append((s, t(5, 0), "NOTE", None, "UNK"))
    rows.append((s, t(5, 1), "NOTE", None, "a//b"))
    # A rare text on a code of one common text, held by one subject only: its text
    # unknown and its kind's unknown lack support, so it is [UNK].
    rows.append((s, t(6, 0), "ODD", None, "zz" if s == 0 else "yes"))
    rows.append((s, t(6, 1), "PLAIN", None, ""))
    return rows


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("meds")
    subjects = [*TRAIN, *HELD_OUT]
    rows = [row for s in subjects for row in _subject(s)]
    splits = {s: "train" if s in TRAIN else "held_out" for s in subjects}
    write_meds(root / "meds", {"0.parquet": meds_frame(rows)}, splits=splits)
    config = {"scheme": {"time_tokens": False, "value_bins": 3, "min_values_per_bin": 2}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MedsMetadataWarning)
        return ingest("meds", [root / "meds"], root / "corpus", config, workers=1)


def _tokens(corpus, subject: int) -> list[str]:
    seq_id = corpus.index["entity"].to_list().index(str(subject))
    return corpus.vocabulary.decode(corpus.sequence(seq_id))


def test_exact_tokens_of_text_values(corpus):
    weights = [corpus.vocabulary.token_info(f"WEIGHT//Q{k}") for k in (1, 2, 3)]
    assert [w.code for w in weights] == ["WEIGHT"] * 3  # numbers read from the texts
    bins = corpus.vocabulary.value_bins["WEIGHT"]
    assert bins.text_numbers and bins.edges == (160.5, 170.5)
    assert _tokens(corpus, 0) == [
        "[BOS]",
        "RHYTHM//SR▁(Sinus▁Rhythm)",
        "RHYTHM//AF",
        "RHYTHM//[TEXT_UNK]",  # VT: 2 subjects, pooled with PACED's 3
        "WEIGHT//Q1",  # 150.5
        "WEIGHT//Q2",  # 160.5
        "WEIGHT//Q3",
        "BP//[TEXT_UNK]",  # 110/70: its own subject's only
        "LAB//gcs//Q1",  # 3.0 with "label" beside it
        "LAB//gcs//Q2",
        "NOTE//\\x55NK",
        "NOTE//a/\\x2fb",
        "[UNK]",  # ODD//zz: one subject, no unknown of its own
        "PLAIN",  # an empty text is no text
        "[EOS]",
    ]
    assert _tokens(corpus, 9)[1:4] == ["RHYTHM//SR▁(Sinus▁Rhythm)", "WEIGHT//Q1", "WEIGHT//Q2"]
    assert "RHYTHM//[TEXT_UNK]" in _tokens(corpus, 10)  # held out: a text never seen
    assert corpus.vocabulary.token_info("NOTE//a/\\x2fb").text == "a//b"
    assert corpus.vocabulary.token_info("RHYTHM//[TEXT_UNK]").code == "RHYTHM"
    check_support(corpus)


def test_every_text_is_in_a_token_or_counted(corpus):
    values = corpus.manifest["values"]
    per_subject = 1 + 3 + 1 + 2 + 2 + 1 + 1  # RHYTHM SR, WEIGHT, BP, gcs, NOTE, ODD, PLAIN
    extra = 6 + 2 + 3 + 2  # AF, VT, PACED, held-out unseen
    assert values["text_rows"] == 12 * per_subject + extra
    assert values["text_as_number"] == 12 * 3
    assert values["text_beside_binned_value"] == 12 * 2
    assert values["text_empty"] == 12
    # Rare: VT, PACED, the held-out texts, every BP, ODD//zz.
    assert values["text_rare"] == 2 + 3 + 2 + 12 + 1
    assert values["text_rare_in_text_unknown"] == 2 + 3 + 2 + 12
    # In a token: SR, AF, NOTE twice, ODD//yes.
    assert values["text_in_token"] == 12 + 6 + 12 * 2 + 11
    used = values["text_in_token"] + values["text_as_number"]
    counted = sum(values[k] for k in ("text_rare", "text_beside_binned_value", "text_empty"))
    assert used + counted + values["text_use_text_off"] == values["text_rows"]
    assert values["numeric_rows"] == values["numeric_binned"] == 12 * 2
    summary = corpus.vocabulary.text_summary
    assert summary["codes_reading_text_numbers"] == 1
    assert summary["rare_text_tokens"] == 2 + 10 + 1  # VT, PACED; 10 BPs; ODD//zz


def test_corpus_info_says_what_became_of_the_texts(corpus):
    lines = corpus_report(corpus.path).value_lines()
    assert lines[0].startswith(f"text values: {corpus.manifest['values']['text_rows']:,} rows")
    assert any(FATE_WORDS["text_beside_binned_value"] in line for line in lines)


def test_per_code_cap_and_use_text_off(tmp_path):
    rows = [row for s in TRAIN for row in _subject(s)]
    write_meds(tmp_path / "meds", {"0.parquet": meds_frame(rows)},
               splits=dict.fromkeys(TRAIN, "train"))  # fmt: skip
    base = {"time_tokens": False, "value_bins": 3, "min_values_per_bin": 2}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MedsMetadataWarning)
        capped = ingest("meds", [tmp_path / "meds"], tmp_path / "capped",
                        {"scheme": {**base, "text_max_values": 1}}, workers=1)  # fmt: skip
        off = ingest("meds", [tmp_path / "meds"], tmp_path / "off",
                     {"scheme": {**base, "use_text": False}}, workers=1)  # fmt: skip
    tokens = set(capped.vocabulary.tokens)
    assert "RHYTHM//SR▁(Sinus▁Rhythm)" in tokens and "RHYTHM//AF" not in tokens
    assert capped.vocabulary.text_summary["capped_text_tokens"] == 2  # AF, one NOTE text
    assert capped.vocabulary.text_summary["capped_text_rows"] == 6 + 10
    check_support(capped)
    values = off.manifest["values"]
    assert values["text_use_text_off"] == values["text_rows"] - values["text_empty"]
    assert values["text_in_token"] == values["text_as_number"] == 0
    assert not any("//" in t and "gcs" not in t for t in off.vocabulary.data_tokens)
