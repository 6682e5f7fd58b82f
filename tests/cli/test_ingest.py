"""`seqlm ingest`, `seqlm adapters` and `seqlm corpus info` from the command line."""

from __future__ import annotations

import json

from helpers.cli_helpers import BIRDSONG_FIXTURES, run

from seqlm.corpus import load_corpus


def test_adapters_lists_every_registered_adapter(capsys):
    assert run(["adapters"]) == 0
    out = capsys.readouterr().out
    for name in ("birdsong-strings", "textgrid", "audacity", "meds", "tabular", "simple-seq"):
        assert name in out


def test_ingest_then_info_on_a_real_audacity_file(tmp_path, capsys):
    source = BIRDSONG_FIXTURES / "405_marron1_June_14_2016_69640887.audacity.txt"
    out = tmp_path / "canary"
    assert run(["ingest", "audacity", str(source), "--out", str(out)]) == 0
    corpus = load_corpus(out)
    counts = corpus.manifest["counts"]
    assert counts["rows_read"] == counts["events"] + counts["rejects"]
    assert counts["rejects"] > 0  # the SIL rows are counted as rejects, not lost
    capsys.readouterr()
    assert run(["corpus", "info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["rows_read"] == counts["rows_read"]
    assert info["rejects_by_reason"]


def test_ingest_options_reach_the_adapter_and_the_scheme(tmp_path):
    source = BIRDSONG_FIXTURES / "405_marron1_June_14_2016_69640887.audacity.txt"
    out = tmp_path / "canary"
    code = run(
        [
            "ingest",
            "audacity",
            str(source),
            "--out",
            str(out),
            "--option",
            "bird=canary1",
            "--option",
            "scheme.time_tokens=true",
        ]
    )
    assert code == 0
    corpus = load_corpus(out)
    assert set(corpus.index["group"].to_list()) == {"canary1"}
    assert any(t.startswith("[TIME//") for t in corpus.vocabulary.tokens)


def test_bad_input_is_one_line_and_exit_code_2(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("start_seconds,stop_seconds\n1,2\n")
    assert run(["ingest", "simple-seq", str(bad), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ")
    assert "bad.csv" in err
    assert "\n" not in err
    assert "Traceback" not in err


def test_unknown_adapter_and_unknown_option_exit_2(tmp_path, capsys):
    source = BIRDSONG_FIXTURES / "bird1.csv"
    assert run(["ingest", "no-such", str(source), "--out", str(tmp_path / "a")]) == 2
    assert "no adapter named" in capsys.readouterr().err
    code = run(
        [
            "ingest",
            "crowsetta-generic-seq",
            str(source),
            "--out",
            str(tmp_path / "b"),
            "-O",
            "nope=1",
        ]
    )
    assert code == 2
    assert "unknown option" in capsys.readouterr().err


def test_existing_output_needs_overwrite(tmp_path, capsys):
    source = BIRDSONG_FIXTURES / "bird1.csv"
    out = tmp_path / "c"
    assert run(["ingest", "crowsetta-generic-seq", str(source), "--out", str(out)]) == 0
    assert run(["ingest", "crowsetta-generic-seq", str(source), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (
        run(["ingest", "crowsetta-generic-seq", str(source), "--out", str(out), "--overwrite"]) == 0
    )


def test_lesion_folder_counts_match_the_files(tmp_path, capsys, finch_lesions):
    out = tmp_path / "finch"
    assert run(["ingest", "birdsong-strings", str(finch_lesions), "--out", str(out)]) == 0
    capsys.readouterr()
    assert run(["corpus", "info", str(out), "--json", "--by", "group", "--by", "condition"]) == 0
    info = json.loads(capsys.readouterr().out)
    rows = {(r["group"], r["condition"]): r for r in info["counts_by"]}
    assert len(rows) == 14
    for (bird, condition), row in rows.items():
        text = (finch_lesions / f"{bird}_{condition}lesion").read_text()
        syllables = sum(1 for ch in text if not ch.isspace() and ch != "Y")
        # every sequence is wrapped in BOS/EOS; no time tokens in this corpus
        assert row["tokens"] - 2 * row["sequences"] == syllables
