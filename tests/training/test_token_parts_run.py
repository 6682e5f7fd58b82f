"""`model.token_parts` through a run: the trainer installs the corpus's map, a saved run
loads to the same logits, `--init` refuses, and the CLI trains and evaluates with it."""

from __future__ import annotations

import pytest
import torch
from helpers.cli_helpers import run_seqlm
from helpers.clinical_run import mimic_demo_corpus

from seqlm.errors import ConfigError
from seqlm.model.token_parts import token_part_map
from seqlm.training.config import RunSettings, TrainConfig
from seqlm.training.runs import load_trained_model
from seqlm.training.session import train_on_corpus


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return mimic_demo_corpus(tmp_path_factory.mktemp("parts_run") / "C")


@pytest.fixture(scope="module")
def part_run(demo, tmp_path_factory):
    out = tmp_path_factory.mktemp("parts_run") / "R"
    train = TrainConfig(
        max_steps=3, batch_size=2, warmup_steps=1, eval_every=3, eval_batches=1, cpu_threads=1
    )
    model = {"token_parts": True, "block_size": 16}
    train_on_corpus(demo.path, out, RunSettings(preset="tiny", model=model, train=train))
    return out


def test_a_saved_part_run_loads_with_its_map_and_the_same_logits(demo, part_run):
    parts = token_part_map(demo.vocabulary)
    first = load_trained_model(part_run)
    assert first.config.token_parts
    assert (first.config.code_parts, first.config.value_parts) == (
        parts.code_parts,
        parts.value_parts,
    )
    assert torch.equal(first.token_parts.code_ids, torch.as_tensor(parts.code_ids))
    assert first.token_parts.code.weight[1:].abs().sum() > 0  # the parts were trained
    idx = torch.as_tensor(demo.tokens[:16].astype("int64"))[None]
    again = load_trained_model(part_run)
    assert torch.equal(first(idx).logits, again(idx).logits)


def test_init_from_a_part_run_is_refused(demo, part_run, tmp_path):
    train = TrainConfig(max_steps=1, batch_size=2, cpu_threads=1)
    with pytest.raises(ConfigError, match="token_parts"):
        train_on_corpus(
            demo.path, tmp_path / "R2", RunSettings(preset="tiny", train=train), init=part_run
        )


def test_cli_train_and_eval_with_token_parts(demo, tmp_path):
    out = tmp_path / "R"
    trained = run_seqlm(
        "train", str(demo.path), "--out", str(out), "--preset", "tiny", "--budget", "2ktok",
        "--set", "model.token_parts=true", "--set", "train.cpu_threads=1",
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    assert '"token_parts": true' in (out / "config.json").read_text()
    evaluated = run_seqlm("eval", str(out), "--corpus", str(demo.path))
    assert evaluated.returncode == 0, evaluated.stderr
