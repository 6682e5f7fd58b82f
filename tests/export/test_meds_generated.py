"""`seqlm generate` on a MEDS corpus writes a MEDS dataset: each sample a subject holding
its prompt's real history and its continuation, mapped back to the prompt's subject and
prediction time, valid MEDS, read by `aces-cli`, with nothing below the privacy threshold."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import warnings
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from helpers.cli_helpers import run_seqlm
from helpers.eval_fixtures import tiny_gpt, write_run
from helpers.shared_data import shared_path
from helpers.task_data import build_task_corpus, write_task_dataset

from seqlm.corpora_adapters.meds import MedsMetadataWarning
from seqlm.corpus import Corpus, load_corpus
from seqlm.errors import ConfigError
from seqlm.evaluation.generate import (
    GenerationOptions,
    generate,
    prompt_from_sequence,
    time_token_seconds,
)
from seqlm.evaluation.generate_run import GenerateSettings, generate_from_run
from seqlm.export.meds_dataset import meds_dataset_problems
from seqlm.export.meds_generated import labels_at_prediction_times, read_generated_subjects
from seqlm.ingest import ingest
from seqlm.tasks.labels import read_labels

RARE = "DX//RARE"  # in one held-out subject's history only: below any privacy threshold
# Held out (subjects 34-39 of 40), one negative (B A) and one positive (A B), whose
# histories up to the pair's end have the same number of tokens (15).
PROMPT_SUBJECTS = (36, 39)
N_SAMPLES = 3
# A label at each SEQ//A or SEQ//B: OUTCOME within the next day. The prompts end at the
# second of the pair (the task's prediction time); labels at the first are history.
TASK_YAML = """
predicates:
  seq_a:
    code: SEQ//A
  seq_b:
    code: SEQ//B
  seq:
    expr: or(seq_a, seq_b)
  outcome:
    code: OUTCOME
trigger: seq
windows:
  input:
    start: null
    end: trigger
    start_inclusive: true
    end_inclusive: true
    index_timestamp: end
  target:
    start: input.end
    end: start + 1d
    start_inclusive: false
    end_inclusive: true
    label: outcome
"""


def aces_cli() -> str | None:
    """`aces-cli` from $SEQLM_ACES_CLI (es-aces in its own venv: it needs polars < 2) or PATH."""
    return os.environ.get("SEQLM_ACES_CLI") or shutil.which("aces-cli")


needs_aces_cli = pytest.mark.skipif(
    aces_cli() is None,
    reason="aces-cli not found: pip install 'seqlm[meds-tools]' (es-aces needs polars < 2, so "
    "maybe in its own venv) and set SEQLM_ACES_CLI=/path/to/venv/bin/aces-cli",
)


def _add_rare_code(meds: Path) -> None:
    """The first timed event of the first prompt subject becomes RARE (same token count)."""
    shard = meds / "data" / "held_out" / "0.parquet"
    frame = pl.read_parquet(shard, glob=False).with_row_index("row")
    mine = frame.filter(pl.col("subject_id") == PROMPT_SUBJECTS[0], pl.col("time").is_not_null())
    first = mine["row"][0]
    changed = pl.when(pl.col("row") == first).then(pl.lit(RARE)).otherwise(pl.col("code"))
    frame.with_columns(code=changed).drop("row").write_parquet(shard)


@pytest.fixture(scope="module")
def task(tmp_path_factory) -> tuple[Path, Corpus, Path]:
    """The task dataset (with the rare code), its corpus, and a tiny random GPT's run."""
    root = write_task_dataset(tmp_path_factory.mktemp("task"), "future", n_subjects=40)
    _add_rare_code(root / "meds")
    corpus = load_corpus(build_task_corpus(root))
    model = tiny_gpt(vocab_size=corpus.vocab_size, block_size=64)
    write_run(root / "run", model, corpus)
    return root, corpus, root / "run"


def _seq_id(corpus: Corpus, subject: int) -> int:
    return int(corpus.index.filter(pl.col("entity") == str(subject))["seq_id"].item())


def _prompt_length(corpus: Corpus, seq_id: int) -> int:
    """Tokens up to and including the second of SEQ//A, SEQ//B (the prediction time)."""
    ids = np.asarray(corpus.sequence(seq_id))
    ends = [
        np.flatnonzero(ids == corpus.vocabulary.token_to_id[c])[0] for c in ("SEQ//A", "SEQ//B")
    ]
    return int(max(ends)) + 1


def _settings(corpus: Corpus, subject: int, **more) -> GenerateSettings:
    seq_id = _seq_id(corpus, subject)
    values = {"n_samples": N_SAMPLES, "max_tokens": 12, **more}
    return GenerateSettings(
        sequences=(seq_id,), prompt_length=_prompt_length(corpus, seq_id), **values
    )


@pytest.fixture(scope="module")
def generated(task, tmp_path_factory) -> Path:
    """`generate_from_run` on both prompt subjects into one output; its meds/ folder."""
    _, corpus, run = task
    out = tmp_path_factory.mktemp("generated")
    seq_ids = [_seq_id(corpus, s) for s in PROMPT_SUBJECTS]
    length = _prompt_length(corpus, seq_ids[0])
    assert _prompt_length(corpus, seq_ids[1]) == length  # one --prompt-length for both
    settings = GenerateSettings(
        sequences=tuple(seq_ids), prompt_length=length, n_samples=N_SAMPLES, max_tokens=12
    )
    result = generate_from_run(run, settings, out=out)
    assert set(result.written) == {"tokens", "text", "MEDS dataset"}
    return result.written["MEDS dataset"]


def _source_rows(root: Path, subject: int) -> pl.DataFrame:
    shard = root / "meds" / "data" / "held_out" / "0.parquet"
    return pl.read_parquet(shard, glob=False).filter(pl.col("subject_id") == subject)


def test_each_sample_is_a_subject_with_its_prompts_real_history(task, tmp_path) -> None:
    root, corpus, run = task
    subject = PROMPT_SUBJECTS[0]
    result = generate_from_run(run, _settings(corpus, subject), out=tmp_path / "out")
    meds = result.written["MEDS dataset"]
    assert meds == tmp_path / "out" / "meds" and meds_dataset_problems(meds) == []
    mapping = read_generated_subjects(meds)
    labels = pl.read_parquet(root / "labels" / "0.parquet", glob=False)
    truth = labels.filter(pl.col("subject_id") == subject)["prediction_time"].item()
    assert mapping["subject_id"].to_list() == list(range(N_SAMPLES))
    assert mapping["sample"].to_list() == list(range(N_SAMPLES))
    assert mapping["prompt_subject_id"].to_list() == [subject] * N_SAMPLES
    assert mapping["prediction_time"].to_list() == [truth] * N_SAMPLES  # the real SEQ//B time
    assert mapping["split"].to_list() == ["held_out"] * N_SAMPLES
    data = pl.read_parquet(meds / "data" / "held_out" / "0.parquet", glob=False)
    source = _source_rows(root, subject)
    history = source.filter(pl.col("time").is_null() | (pl.col("time") <= truth))
    expected = history.with_columns(code=pl.col("code").replace(RARE, "[UNK]"))
    for number in range(N_SAMPLES):
        rows = data.filter(pl.col("subject_id") == number)
        head = rows.head(history.height).select("time", "code")
        assert head.equals(expected.select("time", "code")), number
        assert (rows.tail(rows.height - history.height)["time"] >= truth).all()


def test_token_prompts_have_no_real_subject(task, tmp_path) -> None:
    _, corpus, run = task
    settings = GenerateSettings(prompts=("GENDER//F LAB//A",), n_samples=2, max_tokens=6)
    meds = generate_from_run(run, settings, out=tmp_path / "out").written["MEDS dataset"]
    assert meds_dataset_problems(meds) == []
    mapping = read_generated_subjects(meds)
    assert mapping["prompt_subject_id"].to_list() == [None, None]
    assert mapping["prompt_seq_id"].to_list() == [None, None]
    assert mapping["split"].to_list() == ["held_out", "held_out"]
    start = datetime(2000, 1, 1)  # the exporter's default start: LAB//A's time
    assert mapping["prediction_time"].to_list() == [start, start]
    data = pl.read_parquet(meds / "data" / "held_out" / "0.parquet", glob=False)
    first = data.filter(pl.col("subject_id") == 0).head(2)
    assert first.select("time", "code").rows() == [(None, "GENDER//F"), (start, "LAB//A")]


def test_nothing_below_the_privacy_threshold_is_written(task, generated: Path) -> None:
    _, corpus, _ = task
    vocab = corpus.vocabulary
    allowed = {"MEDS_BIRTH"}
    for token, role in zip(vocab.tokens, vocab.roles, strict=True):
        if role == "unknown":
            allowed.add(token)
        elif role == "event":
            allowed.add(vocab.token_info(token).code or token)
    data = pl.concat(
        pl.read_parquet(p, glob=False) for p in sorted((generated / "data").rglob("*.parquet"))
    )
    codes = pl.read_parquet(generated / "metadata" / "codes.parquet", glob=False)
    assert RARE not in set(data["code"]) and RARE not in set(codes["code"])
    assert "[UNK]" in set(data["code"])  # where the rare code was
    assert set(data["code"]) <= allowed
    described = dict(codes.select("code", "description").iter_rows())
    assert f"fewer than {vocab.scheme.min_entities} train subjects" in described["[UNK]"]


def test_generated_seconds_come_from_the_time_tokens_without_a_horizon(
    task, generated: Path
) -> None:
    _, corpus, _ = task
    seconds = time_token_seconds(corpus.vocabulary)
    records = [json.loads(line) for line in (generated.parent / "generations.jsonl").open()]
    mapping = read_generated_subjects(generated)
    from_tokens = [float(seconds[r["ids"]].sum()) for r in records]
    assert any(s > 0 for s in from_tokens)
    assert [r["generated_seconds"] for r in records] == pytest.approx(from_tokens)
    assert mapping["generated_seconds"].to_list() == pytest.approx(from_tokens)
    assert mapping["prompt"].to_list() == [0] * N_SAMPLES + [1] * N_SAMPLES


def test_library_generate_sums_time_tokens_only_when_given_their_seconds(task) -> None:
    _, corpus, run = task
    from seqlm.evaluation.model_scorer import load_run_model

    model = load_run_model(run, "best").model
    prompt = prompt_from_sequence(corpus.sequence(0), 4)
    options = GenerationOptions(max_new_tokens=10, n_samples=4)
    seconds = time_token_seconds(corpus.vocabulary)
    timed = generate(model, prompt, options, time_seconds=seconds)
    assert timed.elapsed_s.tolist() == pytest.approx([seconds[s].sum() for s in timed.samples])
    untimed = generate(model, prompt, options)
    assert untimed.elapsed_s.tolist() == [0.0] * 4


def test_a_meds_folder_seqlm_did_not_write_is_kept(task, tmp_path) -> None:
    _, corpus, run = task
    theirs = tmp_path / "out" / "meds" / "notes.txt"
    theirs.parent.mkdir(parents=True)
    theirs.write_text("mine")
    with pytest.raises(ConfigError, match="not a folder seqlm wrote"):
        generate_from_run(run, _settings(corpus, PROMPT_SUBJECTS[0]), out=tmp_path / "out")
    assert theirs.read_text() == "mine"
    assert not (tmp_path / "out" / "generations.jsonl").exists()  # refused before sampling
    ours = tmp_path / "again"
    for seed in (0, 1):  # the second run replaces the meds/ the first wrote
        generate_from_run(run, _settings(corpus, PROMPT_SUBJECTS[1], seed=seed), out=ours)
    assert meds_dataset_problems(ours / "meds") == []
    assert json.loads((ours / "meds" / "metadata" / "dataset.json").read_text())[
        "dataset_version"
    ].endswith("seed 1")


def test_cli_writes_and_names_the_meds_dataset(task, tmp_path) -> None:
    _, corpus, run = task
    seq_id = _seq_id(corpus, PROMPT_SUBJECTS[1])
    result = run_seqlm(
        "generate", str(run), "--corpus", str(corpus.path), "--sequence", str(seq_id),
        "--prompt-length", str(_prompt_length(corpus, seq_id)), "--n", "2",
        "--max-tokens", "8", "--out", str(tmp_path / "gen"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"MEDS dataset: {tmp_path / 'gen' / 'meds'}" in result.stdout
    assert meds_dataset_problems(tmp_path / "gen" / "meds") == []


def test_real_meds_histories_keep_their_real_times(tmp_path) -> None:
    """MIMIC-IV demo: each generated subject's rows before the prediction time are at
    exactly the prompt subject's real event times (values binned, rare codes unknown)."""
    source = shared_path("clinical", "mimic-iv-demo-meds")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MedsMetadataWarning)
        corpus = ingest("meds", [source], tmp_path / "corpus", workers=1)
    write_run(tmp_path / "run", tiny_gpt(vocab_size=corpus.vocab_size, block_size=64), corpus)
    held = corpus.index.filter(pl.col("split") == "held_out")["seq_id"].to_list()[:3]
    settings = GenerateSettings(
        sequences=tuple(held), prompt_length=200, n_samples=2, max_tokens=16
    )
    meds = generate_from_run(tmp_path / "run", settings, out=tmp_path / "gen").written[
        "MEDS dataset"
    ]
    assert meds_dataset_problems(meds) == []
    data = pl.read_parquet(meds / "data" / "held_out" / "0.parquet", glob=False)
    real = pl.concat(
        [pl.read_parquet(p, glob=False) for p in sorted((source / "data").rglob("*.parquet"))],
        how="diagonal_relaxed",
    )
    mapping = read_generated_subjects(meds)
    assert mapping["prompt_subject_id"].to_list() == [
        int(corpus.index["entity"][s]) for s in held for _ in range(2)
    ]
    for subject, prompt_subject, at in mapping.select(
        "subject_id", "prompt_subject_id", "prediction_time"
    ).rows():
        before = (pl.col("time") < at) & (pl.col("code") != "MEDS_BIRTH")
        ours = data.filter(pl.col("subject_id") == subject).filter(before)["time"].sort()
        theirs = real.filter(pl.col("subject_id") == prompt_subject).filter(before)["time"]
        assert len(ours) > 100
        assert ours.equals(theirs.sort()), subject
        last = real.filter(pl.col("subject_id") == prompt_subject, pl.col("time") <= at)
        assert last["time"].max() == at  # the prediction time is a real event's time


def _run_aces_cli(config: Path, dataset: Path, out: Path) -> Path:
    shards = sorted(p.relative_to(dataset / "data") for p in (dataset / "data").rglob("*.parquet"))
    command = [
        str(aces_cli()), "-m", "data=sharded", "data.standard=meds",
        f"data.root={dataset / 'data'}",
        "data.shard=" + ",".join(str(s.with_suffix("")) for s in shards),
        f"cohort_dir={out}", "cohort_name=task", f"config_path={config}",
    ]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, cwd=out)
    return out / "task"


def _outcome_within_a_day(data: pl.DataFrame, subject: int, at) -> bool:
    rows = data.filter(pl.col("subject_id") == subject, pl.col("code") == "OUTCOME")
    times = rows["time"].drop_nulls()
    return bool(((times > at) & (times <= at + timedelta(days=1))).any())


@needs_aces_cli
def test_aces_cli_labels_the_generated_dataset(generated: Path, tmp_path) -> None:
    config = tmp_path / "task.yaml"
    config.write_text(TASK_YAML)
    cohort = _run_aces_cli(config, generated, tmp_path)
    labels = read_labels(cohort)  # seqlm reads what aces-cli wrote
    assert labels.value_column == "boolean_value" and labels.rejects.height == 0
    at_prompts = labels_at_prediction_times(labels.frame.drop("file", "row"), generated)
    mapping = read_generated_subjects(generated)
    assert at_prompts["subject_id"].to_list() == mapping["subject_id"].to_list()  # one each
    data = pl.concat(pl.read_parquet(p, glob=False) for p in (generated / "data").rglob("*.pa*"))
    for subject, at, label in at_prompts.select("subject_id", "prediction_time", "label").rows():
        assert label == _outcome_within_a_day(data, subject, at), subject


@pytest.mark.skipif(
    importlib.util.find_spec("aces") is None or aces_cli() is None,
    reason="es-aces not importable here (it needs polars < 2) or aces-cli not found",
)
def test_in_process_extraction_equals_aces_cli(generated: Path, tmp_path) -> None:
    from seqlm.tasks.aces_labels import extract_aces_labels

    config = tmp_path / "task.yaml"
    config.write_text(TASK_YAML)
    theirs = read_labels(_run_aces_cli(config, generated, tmp_path)).frame
    theirs = theirs.sort("subject_id", "prediction_time")
    ours = extract_aces_labels(config, generated)
    assert ours["subject_id"].to_list() == theirs["subject_id"].to_list()
    assert ours["boolean_value"].to_list() == theirs["label"].to_list()


@pytest.mark.slow
@needs_aces_cli
def test_aces_labels_of_a_trained_model_follow_the_planted_rule(tmp_path) -> None:
    """A tiny GPT trained on the task (after `A B` comes OUTCOME an hour later, after
    `B A` never) continues held-out prompts ending at the pair; ACES, run on the
    generated MEDS dataset, labels the continuations of `A B` positive and of `B A` not."""
    from helpers.task_data import train_task_run

    root = write_task_dataset(tmp_path / "task", "future")
    corpus = load_corpus(build_task_corpus(root))
    run = train_task_run(root)
    config = tmp_path / "task.yaml"
    config.write_text(TASK_YAML)
    by_length: dict[int, list[int]] = {}
    for seq_id in corpus.index.filter(pl.col("split") == "held_out")["seq_id"].to_list():
        by_length.setdefault(_prompt_length(corpus, seq_id), []).append(seq_id)
    found = []
    for length, seq_ids in sorted(by_length.items()):
        out = tmp_path / f"length{length}"
        settings = GenerateSettings(
            sequences=tuple(seq_ids), prompt_length=length, n_samples=10, max_tokens=24
        )
        meds = generate_from_run(run, settings, out=out).written["MEDS dataset"]
        cohort = out / "aces"
        cohort.mkdir()
        labels = read_labels(_run_aces_cli(config, meds, cohort)).frame.drop("file", "row")
        found.append(labels_at_prediction_times(labels, meds))
    at_prompts = pl.concat(found)
    truth = pl.read_parquet(root / "labels" / "0.parquet", glob=False).select(
        pl.col("subject_id").alias("prompt_subject_id"), pl.col("boolean_value").alias("truth")
    )
    rates = (
        at_prompts.join(truth, on="prompt_subject_id").group_by("truth").agg(pl.col("label").mean())
    )
    rate = dict(rates.iter_rows())
    assert at_prompts.height == 10 * corpus.index.filter(pl.col("split") == "held_out").height
    assert rate[True] > 0.8 and rate[False] < 0.1, rate
