"""The mistakes of a first hour get a message that says what to do instead."""

from __future__ import annotations

from helpers.cli_helpers import BIRDSONG_FIXTURES, ingest_bird1, run_seqlm


def test_missing_mapping_and_typos_point_to_the_fix(tmp_path):
    csv = tmp_path / "events.csv"
    csv.write_text("piece,beat,pitch\nA,0,60\n")
    result = run_seqlm("ingest", "tabular", str(csv), "-o", str(tmp_path / "c"))
    assert result.returncode == 2
    assert "missing required option(s): entity, code" in result.stderr
    assert "`seqlm adapters tabular` lists its options" in result.stderr
    assert "__init__" not in result.stderr
    corpus = ingest_bird1(tmp_path / "bird1")
    typo = run_seqlm("train", str(corpus), "-o", str(tmp_path / "r"), "--set", "model.layer=3")
    assert typo.returncode == 2 and "(did you mean model.n_layer?)" in typo.stderr
    assert "seqlm config show" in typo.stderr
    typo = run_seqlm("train", str(corpus), "-o", str(tmp_path / "r"), "--set", "train.step=3")
    assert "(did you mean train.max_steps?)" in typo.stderr


def test_a_corpus_where_a_run_belongs_and_back(tmp_path):
    corpus = ingest_bird1(tmp_path / "bird1")
    result = run_seqlm("eval", str(corpus), "--corpus", str(corpus))
    assert (
        result.returncode == 2 and "a corpus folder (from seqlm ingest), not a run" in result.stderr
    )
    run = tmp_path / "run"
    (run).mkdir()
    (run / "config.json").write_text('{"corpus": {"path": "/data/bird1"}}')
    info = run_seqlm("corpus", "info", str(run))
    assert info.returncode == 2
    assert "a run folder (from seqlm train), not a corpus" in info.stderr
    assert "(/data/bird1)" in info.stderr


def test_usage_errors_exit_2_without_a_traceback():
    source = BIRDSONG_FIXTURES / "bird1.csv"
    result = run_seqlm("ingest", "generic-seq", str(source))  # no --out
    assert result.returncode == 2
    assert "Missing option '--out'" in result.stderr or "Missing option" in result.stderr
    assert "Traceback" not in result.stderr
    version = run_seqlm("--version")
    assert version.returncode == 0 and version.stdout.startswith("seqlm ")


def test_bracketed_folder_names_print_whole(tmp_path, capsys):
    # A folder named like rich markup ([draft]) must not vanish from the summary.
    out = tmp_path / "song[draft]"
    corpus = ingest_bird1(out)
    printed = " ".join(capsys.readouterr().out.split())
    assert f"corpus written to {corpus}" in printed
    assert f"next: seqlm corpus info {corpus}" in printed


def test_a_subset_that_matches_nothing_shows_what_there_is(tmp_path):
    corpus = ingest_bird1(tmp_path / "bird1")
    args = ("subset", str(corpus), "--where", "group=bird2", "-o", str(tmp_path / "s"))
    result = run_seqlm(*args)
    assert result.returncode == 2
    assert "no sequence matches {'group': ['bird2']}; group has: lbr3009" in result.stderr
