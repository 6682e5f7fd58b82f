from __future__ import annotations

from pathlib import Path

import pytest

from seqlm.config import options_from_mapping, parse_option_strings
from seqlm.corpora_adapters import get_adapter
from seqlm.corpora_adapters.birdsong.bouts import (
    BIRDSONG_SCHEME_DEFAULTS,
    TIMED_ATTRIBUTES,
    BirdsongOptions,
    EventBuilder,
    Syllable,
    TimedOptions,
    bird_from_name,
    check_seconds_plausible,
    collect_inputs,
    recording_name,
)
from seqlm.errors import ConfigError, InputError


@pytest.mark.parametrize(
    ("name", "bird"),
    [
        ("gy6or6_baseline_230312_0808.138.cbin.not.mat", "gy6or6"),
        ("405_marron1_June_14_2016_69640887.audacity.txt", "marron1"),
        ("bird1.csv", "bird1"),
        ("bl26lb16_190412_0721.20144_annotations.csv", "bl26lb16"),
        ("bird3_prelesion", "bird3"),
        ("AVO-maea-basic.TextGrid", "AVO"),
    ],
)
def test_bird_id_from_file_name(name, bird):
    assert bird_from_name(name, BirdsongOptions()) == bird


def test_bird_option_and_custom_pattern_override_the_rule():
    assert bird_from_name("x_y.csv", BirdsongOptions(bird="b42")) == "b42"
    assert bird_from_name("2016_yellow7_a.csv", BirdsongOptions(bird_pattern=r"_(\w+?)_")) == (
        "yellow7"
    )
    # No match: the file name up to its first dot.
    assert bird_from_name("_odd.csv", BirdsongOptions(bird_pattern=r"^([a-z]+)")) == "_odd"


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="regex"):
        BirdsongOptions(bird_pattern="(")
    with pytest.raises(ConfigError, match="capture group"):
        BirdsongOptions(bird_pattern="bird")
    with pytest.raises(ConfigError, match="bout_gap_s"):
        TimedOptions(bout_gap_s=-1.0)


def test_options_from_command_line_strings():
    mapping = parse_option_strings(
        ["silence_labels=SIL,noise", "bout_gap_s=0.3", "drop_intro=true"]
    )
    options = options_from_mapping(TimedOptions, mapping)
    assert options.silence_labels == ["SIL", "noise"]
    assert options.bout_gap_s == 0.3
    assert options.drop_intro is True


def test_recording_name_strips_the_format_suffix():
    path = Path("gy6or6_baseline_230312_0808.138.cbin.not.mat")
    assert recording_name(path, (".not.mat",)) == "gy6or6_baseline_230312_0808.138.cbin"
    assert recording_name(Path("a.TextGrid"), (".textgrid",)) == "a"


def test_collect_inputs_recurses_sorted_and_skips_docs(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / ".hidden").mkdir()
    for name in ["b/z.csv", "a.csv", "LICENSE.txt", "README.csv", ".hidden/x.csv", "notes.md"]:
        (tmp_path / name).write_text("x")
    found = collect_inputs([tmp_path], (".csv",), None, "CSV")
    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["a.csv", "b/z.csv"]
    only_z = collect_inputs([tmp_path], (".csv",), "z*", "CSV")
    assert [p.name for p in only_z] == ["z.csv"]


def test_collect_inputs_errors(tmp_path):
    with pytest.raises(InputError, match="input not found"):
        collect_inputs([tmp_path / "missing"], (".csv",), None, "CSV")
    with pytest.raises(InputError, match="no CSV files"):
        collect_inputs([tmp_path], (".csv",), None, "CSV")
    with pytest.raises(ConfigError):
        collect_inputs([], (".csv",), None, "CSV")


def _build(syllables, **options):
    builder = EventBuilder(TIMED_ATTRIBUTES)
    builder.add_recording(Path("rec.txt"), "rec", "b1", syllables, TimedOptions(**options))
    ingested = builder.ingested("test", {})
    return ingested, ingested.events.collect()


def test_bouts_split_at_gaps_longer_than_the_threshold():
    syllables = [
        Syllable("a", 0.0, 0.1, 1),
        Syllable("b", 0.6, 0.7, 2),  # gap 0.5: not longer than 0.5, same bout
        Syllable("c", 1.3, 1.4, 3),  # gap 0.6: new bout
        Syllable("d", 1.45, 1.5, 4),
    ]
    ingested, events = _build(syllables)
    assert events["entity"].to_list() == ["rec#0", "rec#0", "rec#1", "rec#1"]
    assert events["time"].to_list() == pytest.approx([0.0, 0.6, 0.0, 0.15])
    assert events["value"].to_list() == pytest.approx([0.1, 0.1, 0.1, 0.05])
    assert events["bout_start_s"].to_list() == pytest.approx([0.0, 0.0, 1.3, 1.3])
    assert events["kind"].unique().to_list() == ["syllable"]
    assert events["group"].unique().to_list() == ["b1"]
    assert ingested.rows_read == 4
    _, whole = _build(syllables, bout_gap_s=None)
    assert whole["entity"].unique().to_list() == ["rec#0"]


def test_overlapping_rows_are_no_gap_and_unsorted_rows_are_sorted():
    syllables = [
        Syllable("late", 2.0, 2.1, 1),
        Syllable("long", 0.0, 1.8, 2),
        Syllable("inside", 0.2, 0.3, 3),  # overlaps "long": its end is not the bout's end
    ]
    _, events = _build(syllables)
    assert events["code"].to_list() == ["long", "inside", "late"]
    assert events["order"].to_list() == [0, 1, 2]
    assert events["entity"].n_unique() == 1  # 2.0 - 1.8 = 0.2 s: no new bout


def test_silence_empty_and_intro_rows_are_rejects_with_reasons():
    syllables = [
        Syllable("SIL", 0.0, 0.5, 1),
        Syllable("i", 0.5, 0.6, 2),
        Syllable("a", 0.65, 0.7, 3),
        Syllable("", 0.7, 0.75, 4),
        Syllable("SIL", 0.75, 2.0, 5),  # a silence label is a gap: 1.3 s
        Syllable("a", 2.0, 2.1, 6),
    ]
    ingested, events = _build(syllables)
    assert events["code"].to_list() == ["i", "a", "a"]
    assert events["entity"].to_list() == ["rec#0", "rec#0", "rec#1"]
    reasons = ingested.rejects.counts_by_reason()
    assert reasons == {"silence label": 2, "empty label": 1}
    dropped, events = _build(syllables, drop_intro=True)
    assert events["code"].to_list() == ["a", "a"]
    assert events["time"].to_list() == [0.0, 0.0]  # time counts from the first kept event
    assert dropped.rejects.counts_by_reason()["introductory note"] == 1
    assert dropped.rows_read == events.height + len(dropped.rejects) == 6


def test_two_files_may_not_give_the_same_sequence_names():
    builder = EventBuilder(TIMED_ATTRIBUTES)
    options = TimedOptions()
    builder.add_recording(Path("a/x.txt"), "x", None, [Syllable("a", 0, 1, 1)], options)
    with pytest.raises(InputError, match="same sequence names"):
        builder.add_recording(Path("b/x.txt"), "x", None, [Syllable("a", 0, 1, 1)], options)


def test_seconds_that_look_like_milliseconds_are_refused():
    ms = [Syllable("a", 23331.875, 23395.5, 1), Syllable("b", 22013.9, 22060.0, 2)]
    with pytest.raises(InputError, match=r"looks like milliseconds.*time_unit=ms") as caught:
        check_seconds_plausible(ms, Path("das.csv"), "start_seconds")
    assert "not sorted" in str(caught.value)
    assert caught.value.column == "start_seconds"
    # Canary phrases of a second or two are plausible seconds.
    check_seconds_plausible([Syllable("J2", 7.9, 9.0, 1)], Path("c.txt"), "onset")


def test_every_birdsong_adapter_is_registered_with_birdsong_scheme_defaults():
    for name in [
        "birdsong-strings",
        "crowsetta-generic-seq",
        "simple-seq",
        "audacity",
        "textgrid",
        "notmat",
        "koumura-xml",
    ]:
        spec = get_adapter(name)
        assert spec.scheme_defaults == BIRDSONG_SCHEME_DEFAULTS
        assert spec.description


def test_birdsong_scheme_defaults_make_a_valid_token_scheme():
    import seqlm.vocabularies as scheme_module

    scheme = options_from_mapping(
        scheme_module.TokenScheme, {**BIRDSONG_SCHEME_DEFAULTS, "time_tokens": True}
    )
    assert scheme.value_mode == "ignore"  # tokens are the syllable labels
    assert scheme.time_gap_tokens().edges == pytest.approx((0.04, 0.08, 0.16, 0.32, 0.64))


# Each real example file through its registered adapter, with options given the way a
# user gives them on the command line (`--option key=value`).
EXAMPLES = [
    ("crowsetta-generic-seq", "bird1.csv", [], 151, 151),
    ("simple-seq", "bl26lb16_190412_0721.20144_annotations.csv", ["time_unit=ms"], 79, 79),
    ("audacity", "405_marron1_June_14_2016_69640887.audacity.txt", [], 61, 36),
    ("audacity", "spinetail.txt", [], 18, 18),
    ("textgrid", "AVO-maea-basic.TextGrid", ["tier=Samoan"], 7, 7),
    ("textgrid", "AVO-maea-basic.TextGrid", ["tier=1"], 5, 5),
    ("notmat", "gy6or6_baseline_230312_0808.138.cbin.not.mat", [], 78, 78),
]


@pytest.mark.parametrize(("adapter", "name", "pairs", "rows", "events"), EXAMPLES)
def test_format_examples_ingest_through_their_adapters(
    birdsong_examples, adapter, name, pairs, rows, events
):
    spec = get_adapter(adapter)
    options = options_from_mapping(spec.options, parse_option_strings(pairs))
    ingested = spec.read([birdsong_examples / name], options)
    table = ingested.events.collect()
    assert (ingested.rows_read, table.height) == (rows, events)
    assert ingested.rows_read == table.height + len(ingested.rejects)
    assert ingested.settings["files"] == [name]
    assert table["kind"].unique().to_list() == ["syllable"]
    assert table["split"].null_count() == table.height


def test_bundled_fixtures_are_the_real_example_files(birdsong_examples, examples):
    shared = sorted(p.name for p in birdsong_examples.iterdir())
    assert shared and set(shared) <= {p.name for p in examples.iterdir()}
    for name in shared:
        assert (examples / name).read_bytes() == (birdsong_examples / name).read_bytes()
