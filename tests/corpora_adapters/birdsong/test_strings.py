from __future__ import annotations

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqlm.corpora_adapters.birdsong.strings import StringsOptions, read
from seqlm.errors import ConfigError, InputError

BIRDS = [f"bird{n}" for n in range(1, 8)]


def _events(paths, **options):
    ingested = read(paths, StringsOptions(**options))
    return ingested, ingested.events.collect()


def test_bouts_whitespace_and_the_trailing_marker(tmp_path):
    path = tmp_path / "bird9_prelesion"
    path.write_text("ab\nYiab c\r\nYYiiabY\n")
    ingested, events = _events([path])
    # "ab" before the first marker is a bout of its own; "YY" is an empty bout (no
    # entity, nothing lost); whitespace and markers are not syllables.
    assert ingested.rows_read == 2 + 4 + 4
    assert events.group_by("entity", maintain_order=True).agg("code").rows() == [
        ("bird9/pre/0000", ["a", "b"]),
        ("bird9/pre/0001", ["i", "a", "b", "c"]),
        ("bird9/pre/0003", ["i", "i", "a", "b"]),
    ]
    assert events["group"].unique().to_list() == ["bird9"]
    assert events["condition"].unique().to_list() == ["pre"]
    assert events["time"].null_count() == events.height
    assert events.filter(pl.col("entity") == "bird9/pre/0001")["order"].to_list() == [0, 1, 2, 3]


def test_drop_intro_rejects_with_character_positions(tmp_path):
    path = tmp_path / "bird9_postlesion"
    path.write_text("YiabYiicd")
    ingested, events = _events([path], drop_intro=True)
    assert events["code"].to_list() == ["a", "b", "c", "d"]
    rejects = ingested.rejects.to_frame()
    assert rejects["row"].to_list() == [2, 6, 7]  # 1-based positions of the `i`s
    assert rejects["reason"].unique().to_list() == ["introductory note"]
    assert ingested.rows_read == events.height + len(ingested.rejects) == 7
    _, other_intro = _events([path], drop_intro=True, intro_labels=["a", "c"])
    assert other_intro["code"].to_list() == ["i", "b", "i", "i", "d"]


def test_folder_variant_selection_and_names_without_condition(tmp_path):
    (tmp_path / "bird1_prelesion").write_text("Yab")
    (tmp_path / "bird1_prelesion_REPR").write_text("YaB")
    (tmp_path / "LICENSE.txt").write_text("MIT")
    (tmp_path / "songs.txt").write_text("Yxy")
    plain, events = _events([tmp_path])
    assert sorted(events["entity"].unique().to_list()) == ["bird1/pre/0000", "songs/0000"]
    assert events.filter(pl.col("entity") == "songs/0000")["condition"].null_count() == 2
    _, repr_events = _events([tmp_path], variant="repr")
    assert repr_events["entity"].unique().to_list() == ["bird1/pre-repr/0000"]
    assert repr_events["variant"].unique().to_list() == ["repr"]
    # Naming the same file twice reads it once.
    twice, _ = _events([tmp_path / "bird1_prelesion", tmp_path / "bird1_prelesion"])
    assert twice.rows_read == 2


def test_malformed_string_files(tmp_path):
    empty = tmp_path / "bird1_prelesion"
    empty.write_text("\n \n")
    with pytest.raises(InputError, match="empty"):
        read([empty], StringsOptions())
    binary = tmp_path / "bird2_prelesion"
    binary.write_bytes(b"Yab\xff\xfeY")
    with pytest.raises(InputError, match="utf-8") as caught:
        read([binary], StringsOptions())
    assert caught.value.file == str(binary)
    with pytest.raises(ConfigError, match="bout_marker"):
        StringsOptions(bout_marker="YY")
    only_repr = tmp_path / "repr"
    only_repr.mkdir()
    (only_repr / "bird1_prelesion_REPR").write_text("Ya")
    with pytest.raises(InputError, match="no plain symbol-string files"):
        read([only_repr], StringsOptions())


@settings(max_examples=80, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_seqlm_errors(run_on_bytes, data):
    result = run_on_bytes(read, StringsOptions(drop_intro=True), data, "bird1_prelesion")
    if result is not None:
        assert result.rows_read == result.events.collect().height + len(result.rejects)


@settings(max_examples=80, deadline=None)
@given(st.text(alphabet="Yiabc \n\t", max_size=60))
def test_every_syllable_character_is_counted_once(run_on_bytes, text):
    result = run_on_bytes(read, StringsOptions(drop_intro=True), text.encode(), "b_prelesion")
    if result is not None:
        syllables = sum(1 for c in text if c in "iabc")
        assert result.rows_read == syllables
        assert result.events.collect().height == syllables - text.count("i")


# ------------------------------------------------------------- the real lesion data


def _file_syllables(folder, name):
    text = (folder / name).read_text()
    return sum(1 for c in text if not c.isspace() and c != "Y")


def test_lesion_data_counts_per_bird_and_condition(finch_lesions):
    ingested, events = _events([finch_lesions])
    assert ingested.rows_read == events.height  # nothing rejected by default
    counts = {(g, c): n for g, c, n in events.group_by("group", "condition").len().iter_rows()}
    assert sorted(counts) == [(b, c) for b in BIRDS for c in ("post", "pre")]
    for bird in BIRDS:
        for condition in ("pre", "post"):
            expected = _file_syllables(finch_lesions, f"{bird}_{condition}lesion")
            assert counts[(bird, condition)] == expected
    # The data README's totals count plain-file syllables without the `Y` markers.
    pre = sum(n for (_, c), n in counts.items() if c == "pre")
    post = sum(n for (_, c), n in counts.items() if c == "post")
    assert (pre, post) == (176_362, 138_890)


def test_lesion_data_repr_variant_and_markers(finch_lesions):
    ingested, events = _events([finch_lesions], variant="repr")
    by_condition = dict(events.group_by("condition").len().iter_rows())
    # Collapsing repeat phrases leaves fewer syllables; the README figures are not these.
    assert by_condition == {"pre": 137_377, "post": 105_167}
    # Each file ends with a marker, so bird1's 103 `Y`s make 102 bouts.
    text = (finch_lesions / "bird1_prelesion").read_text()
    assert text.count("Y") == 103 and text.endswith("Y")
    _, plain = _events([finch_lesions / "bird1_prelesion"])
    assert plain["entity"].n_unique() == 102


def test_lesion_bout_names_match_the_file(finch_lesions):
    _, events = _events([finch_lesions / "bird3_prelesion"])
    bout = events.filter(pl.col("entity") == "bird3/pre/0042")
    expected = (finch_lesions / "bird3_prelesion").read_text().split("Y")[43]
    assert "".join(bout["code"].to_list()) == expected
    assert bout["source_file"][0] == "bird3_prelesion"


def test_lesion_corpus_keeps_group_and_condition(finch_lesions, tmp_path):
    import seqlm.ingest as ingest

    corpus = ingest.ingest("birdsong-strings", [finch_lesions], tmp_path / "finch")
    index = corpus.index
    assert {"group", "condition", "source_file"} <= set(index.columns)
    assert index["group"].n_unique() == 7
    # Every sequence is a bout: its syllables plus [BOS] and [EOS].
    syllables = index.group_by("group", "condition").agg((pl.col("length") - 2).sum())
    for bird, condition, total in syllables.iter_rows():
        assert total == _file_syllables(finch_lesions, f"{bird}_{condition}lesion")
    counts = corpus.manifest["counts"]
    assert counts["rows_read"] == counts["events"] + counts["rejects"] == 315_252
