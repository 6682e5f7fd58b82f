"""`seqlm lesion-splits`: one lesion study pooled over several entity-level splits."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from helpers.cli_helpers import run_seqlm
from helpers.eval_fixtures import small_finch_corpus, tiny_gpt, write_run
from hypothesis import given, settings
from hypothesis import strategies as st

from seqlm.errors import ConfigError
from seqlm.evaluation.paired import ComparisonOptions
from seqlm.studies.lesion import ALL_GROUPS, MODEL, NGRAM, PER_GROUP_NGRAM, LesionOptions
from seqlm.studies.lesion_bouts import COLUMNS
from seqlm.studies.lesion_run import LesionRequest, lesion_study
from seqlm.studies.lesion_splits import few_bouts_lines, lesion_inputs, pool_bouts


def bouts(rows: list[tuple]) -> pl.DataFrame:
    """(group, condition, entity, targets, model nats, n-gram nats, model hits, n-gram
    hits) as `bout_sums` columns: no EOS among the targets, every target in the top 10."""
    full = []
    for group, condition, entity, n, model, own, model_hits, own_hits in rows:
        full.append(
            (group, condition, entity, n, model, model_hits, n, model_hits, n)
            + (n, own, own_hits, n, own_hits, n)
        )
    return pl.DataFrame(full, schema=list(COLUMNS), orient="row")


def row_of(rows, group: str, condition: str = "pre") -> dict:
    return next(r for r in rows if r["group"] == group and r["condition"] == condition)


def test_a_bout_scored_by_two_splits_counts_once_with_its_average() -> None:
    first = bouts([("g", "pre", "a", 10, 5.0, 6.0, 8, 7), ("g", "pre", "b", 10, 4.0, 4.0, 9, 9)])
    second = bouts(
        [("g", "pre", "a", 10, 7.0, 6.0, 6, 7), ("g", "pre", "c", 20, 10.0, 12.0, 18, 16)]
    )
    rows = pool_bouts([first, second])
    g = row_of(rows, "g")
    ce = g["metrics"]["cross_entropy"]
    # a: model (5 + 7) / 2 = 6, n-gram 6; b: 4 vs 4; c: 10 vs 12 -> (0 + 0 - 2) / 40
    assert ce["difference"] == pytest.approx(-2 / 40)
    assert ce["model"] == pytest.approx(20 / 40) and ce["own_ngram"] == pytest.approx(22 / 40)
    top1 = g["metrics"]["top1"]  # a: 7 vs 7, b: 9 vs 9, c: 18 vs 16
    assert top1["difference"] == pytest.approx(2 / 40)
    assert (g["bouts"], g["bout_scorings"], g["targets"]) == (3, 4, 40)
    per_split = [s["difference"] for s in g["per_split"]]
    assert per_split == pytest.approx([(5 - 6 + 0) / 20, (1 - 2) / 30])
    assert ce["ci_low"] <= ce["difference"] <= ce["ci_high"]
    everyone = row_of(rows, ALL_GROUPS)
    assert everyone["metrics"]["cross_entropy"]["difference"] == pytest.approx(-2 / 40)


def test_groups_pool_apart_and_together() -> None:
    # the same entity name in two groups is two bouts
    one = bouts([("g1", "pre", "x", 10, 1.0, 2.0, 5, 5), ("g2", "pre", "x", 30, 9.0, 6.0, 5, 5)])
    rows = pool_bouts([one])
    assert row_of(rows, "g1")["metrics"]["cross_entropy"]["difference"] == pytest.approx(-0.1)
    assert row_of(rows, "g2")["metrics"]["cross_entropy"]["difference"] == pytest.approx(0.1)
    everyone = row_of(rows, ALL_GROUPS)
    assert everyone["bouts"] == 2
    assert everyone["metrics"]["cross_entropy"]["difference"] == pytest.approx(2 / 40)
    assert [r["group"] for r in rows] == ["g1", "g2", ALL_GROUPS]


def test_verdicts_follow_planted_differences() -> None:
    rng = np.random.default_rng(0)
    n = 60
    base = rng.uniform(20, 40, n)
    for shift, verdict in ((-3.0, "better"), (3.0, "worse"), (0.0, "not distinguishable")):
        noise = rng.normal(0, 0.5, n) if shift else np.tile([0.4, -0.4], n // 2)
        frame = bouts(
            [
                ("g", "pre", f"e{i}", 50, base[i] + shift + noise[i], base[i], 40, 40)
                for i in range(n)
            ]
        )
        g = row_of(pool_bouts([frame]), "g")
        assert g["verdict"] == verdict, (shift, g["sentence"])
        assert "over 60 bouts" in g["sentence"]


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(1, 40), st.floats(0, 50), st.floats(0, 50)), min_size=2, max_size=25
    ),
    st.randoms(use_true_random=False),
)
def test_one_split_gives_the_plain_token_weighted_difference(parts, shuffle) -> None:
    rows = [("g", "pre", f"e{i}", n, m, b, 0, 0) for i, (n, m, b) in enumerate(parts)]
    expected = sum(m - b for _, m, b in parts) / sum(n for n, _, _ in parts)
    options = ComparisonOptions(resamples=200)
    g = row_of(pool_bouts([bouts(rows)], options), "g")
    ce = g["metrics"]["cross_entropy"]
    assert ce["difference"] == pytest.approx(expected, abs=1e-9)
    assert ce["ci_low"] - 1e-9 <= ce["difference"] <= ce["ci_high"] + 1e-9
    shuffle.shuffle(rows)  # the order of bouts does not matter
    again = row_of(pool_bouts([bouts(rows)], options), "g")["metrics"]["cross_entropy"]
    assert again["difference"] == pytest.approx(ce["difference"], abs=1e-9)


def test_few_held_out_bouts_get_a_note() -> None:
    frame = bouts(
        [("small", "pre", f"s{i}", 5, 1.0, 1.0, 1, 1) for i in range(4)]
        + [("large", "pre", f"l{i}", 5, 1.0, 1.0, 1, 1) for i in range(25)]
        + [("large", "post", f"p{i}", 5, 1.0, 1.0, 1, 1) for i in range(3)]
    )
    lines = few_bouts_lines(frame, "pre")
    assert len(lines) == 1 and lines[0].startswith("note: small has 4 held-out bouts")
    assert "seqlm lesion-splits" in lines[0]
    assert few_bouts_lines(None, "pre") == []


@pytest.fixture(scope="module")
def two_splits(tmp_path_factory):
    """bird3's song ingested with split seeds 0 and 1, a run for each, `seqlm lesion`."""
    root = tmp_path_factory.mktemp("splits")
    from seqlm.datasets import finch_lesions_path
    from seqlm.ingest import ingest

    folders = []
    for seed in (0, 1):
        if seed == 0:
            corpus = small_finch_corpus(root / "c0", birds=(3,))
        else:
            files = [finch_lesions_path() / f"bird3_{c}lesion" for c in ("pre", "post")]
            corpus = ingest("birdsong-strings", files, root / "c1", {"splits": {"seed": 1}})
        model = tiny_gpt(seed=seed, vocab_size=corpus.vocab_size, block_size=32, init_std=0.05)
        run = write_run(root / f"run{seed}", model, corpus)
        request = LesionRequest(runs=(str(run),))
        result, _ = lesion_study(corpus.path, root / f"lesion{seed}", request, LesionOptions())
        folders.append((root / f"lesion{seed}", corpus, result))
    return folders


def test_lesion_bouts_add_up_to_the_lesion_rows(two_splits) -> None:
    _, _, result = two_splits[0]
    assert PER_GROUP_NGRAM not in result.models  # one bird: the n-gram is its own
    for condition in ("pre", "post"):
        part = result.bouts.filter(pl.col("condition") == condition)
        for model, column in ((MODEL, "model_nats"), (NGRAM, "own_ngram_nats")):
            row = result.rows.filter(
                (pl.col("group") == "bird3")
                & (pl.col("model") == model)
                & (pl.col("condition") == condition)
            ).row(0, named=True)
            assert part["model_targets"].sum() == row["tokens"]
            assert part[column].sum() / part["model_targets"].sum() == pytest.approx(
                row["cross_entropy_nats"]
            )


def test_cli_pools_two_splits_and_refuses_the_same_one_twice(two_splits, tmp_path) -> None:
    (first, c0, _), (second, c1, _) = two_splits
    assert lesion_inputs(first)[0] == c0.path
    out = tmp_path / "pooled"
    done = run_seqlm("lesion-splits", str(first), str(second), "--out", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "[bird3, pre] model" in done.stdout and "per split" in done.stdout
    payload = json.loads((out / "lesion_splits.json").read_text())
    assert (out / "lesion_splits.png").stat().st_size > 10_000
    held = {
        e
        for c in (c0, c1)
        for e in c.index.filter((pl.col("split") == "held_out") & (pl.col("condition") == "pre"))[
            "entity"
        ]
    }
    pre = row_of(payload["rows"], "bird3")
    assert pre["bouts"] == len(held)  # bouts held out by both splits count once
    assert [s["splits"]["seed"] for s in payload["splits"]] == [0, 1]
    assert "bird3/" not in (out / "lesion_splits.json").read_text()  # no entity names written
    twice = run_seqlm("lesion-splits", str(first), str(first), "--out", str(tmp_path / "x"))
    assert twice.returncode == 2 and "same corpus" in twice.stderr
    assert len(twice.stderr.strip().splitlines()) == 1
    missing = run_seqlm("lesion-splits", str(tmp_path), "--out", str(tmp_path / "y"))
    assert missing.returncode == 2 and "no lesion.json" in missing.stderr


def test_an_old_lesion_json_without_its_corpus_is_refused(two_splits, tmp_path) -> None:
    first, _, _ = two_splits[0]
    old = tmp_path / "old"
    old.mkdir()
    payload = json.loads((first / "lesion.json").read_text())
    del payload["corpus"]
    (old / "lesion.json").write_text(json.dumps(payload))
    with pytest.raises(ConfigError, match="run `seqlm lesion` again"):
        lesion_inputs(old)


def test_each_group_is_paired_with_its_own_ngram_in_both_settings(tmp_path) -> None:
    from seqlm.studies.lesion import lesion_comparison

    finch = small_finch_corpus(tmp_path / "finch", birds=(1, 6))
    model = tiny_gpt(seed=3, vocab_size=finch.vocab_size, block_size=32, init_std=0.05)
    run = write_run(tmp_path / "run", model, finch)
    pooled = lesion_comparison(finch, {ALL_GROUPS: run}, LesionOptions())
    per_bird = lesion_comparison(finch, {"bird1": run, "bird6": run}, LesionOptions())
    for result, own in ((pooled, PER_GROUP_NGRAM), (per_bird, NGRAM)):
        for bird in ("bird1", "bird6"):
            part = result.bouts.filter((pl.col("group") == bird) & (pl.col("condition") == "pre"))
            row = result.rows.filter(
                (pl.col("group") == bird)
                & (pl.col("model") == own)
                & (pl.col("condition") == "pre")
            ).row(0, named=True)
            assert part["own_ngram_nats"].sum() / part["own_ngram_targets"].sum() == pytest.approx(
                row["cross_entropy_nats"]
            )
    # the same per-bird n-grams either way (the model's temperature is fitted per run key)
    own = ["group", "condition", "entity", "own_ngram_targets", "own_ngram_nats", "own_ngram_top1"]
    assert pooled.bouts.select(own).equals(per_bird.bouts.select(own))


def test_seqlm_lesion_notes_a_bird_with_few_held_out_bouts(tmp_path) -> None:
    finch = small_finch_corpus(tmp_path / "finch", birds=(1,))  # 10 held-out pre bouts
    held = finch.index.filter((pl.col("split") == "held_out") & (pl.col("condition") == "pre"))
    model = tiny_gpt(seed=4, vocab_size=finch.vocab_size, block_size=32, init_std=0.05)
    run = write_run(tmp_path / "run", model, finch)
    out = tmp_path / "out"
    done = run_seqlm("lesion", str(finch.path), "--run", str(run), "--out", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    note = f"note: bird1 has {held.height} held-out bouts in this split"
    assert held.height < 20 and note in " ".join(done.stdout.split())


def test_song_without_conditions_pools_its_held_out_bouts(two_splits, tmp_path) -> None:
    """`seqlm lesion --condition ''` (one day of song per bird) folders pool as well."""
    folders = []
    for seed, (folder, corpus, _) in enumerate(two_splits):
        run = json.loads((folder / "lesion.json").read_text())["runs"]["all"]["path"]
        out = tmp_path / f"plain{seed}"
        args = ("lesion", str(corpus.path), "--run", run, "--out", str(out), "--condition", "")
        assert run_seqlm(*args).returncode == 0
        folders.append(str(out))
    done = run_seqlm("lesion-splits", *folders, "--out", str(tmp_path / "pooled"))
    assert done.returncode == 0, done.stderr[-2000:]
    payload = json.loads((tmp_path / "pooled" / "lesion_splits.json").read_text())
    assert {row["condition"] for row in payload["rows"]} == {"pre"}
    held = {
        e for _, c, _ in two_splits for e in c.index.filter(pl.col("split") == "held_out")["entity"]
    }
    assert row_of(payload["rows"], "bird3")["bouts"] == len(held)  # pre and post bouts alike


def test_a_users_file_in_the_output_folder_is_never_overwritten(two_splits, tmp_path) -> None:
    (first, _, _), (second, _, _) = two_splits
    out = tmp_path / "mine"
    out.mkdir()
    theirs = out / "lesion_splits.json"
    theirs.write_text('{"my": "notes"}')
    done = run_seqlm("lesion-splits", str(first), str(second), "--out", str(out))
    assert done.returncode == 2 and "seqlm did not write it" in done.stderr
    assert theirs.read_text() == '{"my": "notes"}' and not (out / "lesion_splits.png").exists()
    again = run_seqlm("lesion-splits", str(first), str(second), "--out", str(tmp_path / "ok"))
    assert again.returncode == 0
    rerun = run_seqlm("lesion-splits", str(first), str(second), "--out", str(tmp_path / "ok"))
    assert rerun.returncode == 0  # its own files are replaced


def test_the_interval_does_not_depend_on_run_or_split_order() -> None:
    rng = np.random.default_rng(5)
    frames = [
        bouts(
            [
                ("g", "pre", f"e{i:03d}", 20, float(rng.uniform(5, 15)), 10.0, 15, 15)
                for i in rng.choice(200, size=60, replace=False)
            ]
        )
        for _ in range(3)
    ]
    first = row_of(pool_bouts(frames), "g")["metrics"]["cross_entropy"]
    for _ in range(3):
        assert row_of(pool_bouts(frames), "g")["metrics"]["cross_entropy"] == first
    backwards = row_of(pool_bouts(frames[::-1]), "g")["metrics"]["cross_entropy"]
    for key in ("difference", "ci_low", "ci_high"):
        assert backwards[key] == pytest.approx(first[key], rel=1e-12)
