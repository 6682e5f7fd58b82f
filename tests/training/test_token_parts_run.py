"""`model.token_parts` through a run: the trainer installs the corpus's map, a saved run
loads to the same logits, `--init` carries the parts over (matched by token string), and
the CLI trains and evaluates with it."""

from __future__ import annotations

import pytest
import torch
from helpers.cli_helpers import run_seqlm
from helpers.clinical_run import mimic_demo_corpus

from seqlm.errors import ConfigError
from seqlm.model.token_parts import token_part_map
from seqlm.training.config import RunSettings, TrainConfig
from seqlm.training.runs import load_trained_model
from seqlm.training.session import gpt_from_dict, train_on_corpus
from seqlm.training.throughput import measure_throughput
from seqlm.training.transfer import PART_ROWS, _part_rows, load_init_weights


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


def test_init_from_a_part_run_starts_as_that_run(demo, part_run):
    # Same vocabulary: every token and every part row carries over, so the initialised
    # model is the init run's model.
    trained = load_trained_model(part_run, "best")
    model = gpt_from_dict(trained.config.to_dict())
    model.set_token_parts(token_part_map(demo.vocabulary))
    report = load_init_weights(model, part_run, list(demo.vocabulary.tokens))
    assert report.new_tokens == 0
    model.eval()
    idx = torch.as_tensor(demo.tokens[:16].astype("int64"))[None]
    assert torch.equal(model(idx).logits, trained(idx).logits)
    assert model.token_parts.code.weight[1:].abs().sum() > 0


def test_part_rows_follow_the_shared_token_strings():
    # Old vocabulary: 0 plain, 1 A//Q1, 2 A//Q2, 3 B//Q1.  New: 0 plain, 1 B//Q1, 2 C//Q3,
    # 3 A//Q2 (a code and a bin it never saw, the others reordered).
    old_code, old_value = torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 2, 1])
    old_codes = torch.tensor([[0.0], [10.0], [20.0]])  # none, A, B
    old_values = torch.tensor([[0.0], [1.0], [2.0]])  # none, Q1, Q2
    own = {
        "token_parts.code.weight": torch.full((4, 1), -1.0),
        "token_parts.code_ids": torch.tensor([0, 1, 2, 3]),  # none, B, C, A
        "token_parts.value.weight": torch.full((4, 1), -1.0),
        "token_parts.value_ids": torch.tensor([0, 1, 2, 3]),  # none, Q1, Q3, Q2
    }
    new_ids, old_ids = torch.tensor([0, 1, 3]), torch.tensor([0, 3, 2])  # plain, B//Q1, A//Q2
    codes = _part_rows(old_codes, old_code, own, "token_parts.code.weight", new_ids, old_ids)
    values = _part_rows(old_values, old_value, own, "token_parts.value.weight", new_ids, old_ids)
    assert codes.flatten().tolist() == [0.0, 20.0, 0.0, 10.0]  # C is new: zero
    assert values.flatten().tolist() == [0.0, 1.0, 0.0, 2.0]  # Q3 is new: zero
    assert set(PART_ROWS) == {"token_parts.code.weight", "token_parts.value.weight"}


def test_init_from_a_part_run_trains_and_cannot_drop_the_parts(demo, part_run, tmp_path):
    train = TrainConfig(max_steps=1, batch_size=2, cpu_threads=1)
    tiny = RunSettings(preset="tiny", train=train)
    result = train_on_corpus(demo.path, tmp_path / "R2", tiny, init=part_run)
    assert result is not None
    assert load_trained_model(tmp_path / "R2").config.token_parts
    dropped = RunSettings(preset="tiny", model={"token_parts": False}, train=train)
    with pytest.raises(ConfigError, match="token_parts"):
        train_on_corpus(demo.path, tmp_path / "R3", dropped, init=part_run)


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


def test_a_minutes_budget_times_the_part_model(demo):
    # `--budget 10m` times the planned shape before training: with token_parts the timed
    # model needs the corpus's part sizes too (it raised a ConfigError before).
    table = {"n_layer": 1, "n_embd": 32, "n_head": 2, "block_size": 16, "token_parts": True}
    timed = measure_throughput(demo, table, TrainConfig(batch_size=2, cpu_threads=1), 1)
    assert timed.tokens_per_s > 0
    assert (timed.n_layer, timed.n_embd, timed.context) == (1, 32, 16)
