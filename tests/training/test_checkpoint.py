"""Run folder: atomic checkpoints, keep-last-k, top-level latest files, best/."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from seqlm.errors import ConfigError, CorpusError
from seqlm.training.checkpoint import RunFolder, load_weights


def model_and_optimizer():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(7, 4), torch.nn.Linear(4, 7))
    model[1].weight = model[0].weight  # tied, as in the GPT: saved under both names
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.tensor([1, 2, 3])).sum().backward()
    optimizer.step()
    return model, optimizer


def save(run: RunFolder, step: int, model, optimizer, keep_last: int = 2):
    return run.save_checkpoint(
        step, model.state_dict(), optimizer.state_dict(), {"marker": step}, keep_last
    )


def test_checkpoint_round_trip_and_top_level_files(tmp_path):
    run = RunFolder(tmp_path / "run")
    run.write_config({"model": {"n_layer": 1}})
    model, optimizer = model_and_optimizer()
    folder = save(run, 5, model, optimizer)
    assert folder.name == "step_0000005"
    latest = run.latest_checkpoint()
    assert latest.step == 5 and latest.state["marker"] == 5
    assert latest.state["checkpoint"] == "checkpoints/step_0000005"
    weights = run.load_checkpoint_weights(latest)
    for name, tensor in model.state_dict().items():
        assert torch.equal(weights[name], tensor)
    restored = run.load_optimizer(latest)  # weights_only=True inside
    assert torch.equal(
        restored["state"][0]["exp_avg"], optimizer.state_dict()["state"][0]["exp_avg"]
    )
    # The top-level files are the latest checkpoint's.
    for name in ("model.safetensors", "optimizer.pt", "state.json"):
        assert (run.path / name).read_bytes() == (folder / name).read_bytes()
    assert set(load_file(run.path / "model.safetensors")) == {"0.weight", "1.weight", "1.bias"}
    assert run.read_config() == {"model": {"n_layer": 1}}


def test_keeps_only_the_last_k_checkpoints(tmp_path):
    run = RunFolder(tmp_path)
    model, optimizer = model_and_optimizer()
    for step in (10, 20, 30, 40):
        save(run, step, model, optimizer, keep_last=2)
    assert [p.name for p in run.list_checkpoints()] == ["step_0000030", "step_0000040"]
    assert json.loads((run.path / "state.json").read_text())["step"] == 40


def test_a_torn_write_leaves_the_last_good_checkpoint(tmp_path):
    run = RunFolder(tmp_path)
    model, optimizer = model_and_optimizer()
    save(run, 10, model, optimizer)
    # What a kill during the next save leaves: a temporary folder without state.json.
    torn = run.checkpoints_dir / ".tmp-step_0000020"
    torn.mkdir()
    (torn / "model.safetensors").write_bytes(b"partial")
    assert run.latest_checkpoint().step == 10
    run.clean_temporaries()
    assert not torn.exists()
    assert [p.name for p in run.list_checkpoints()] == ["step_0000010"]


def test_saving_the_same_step_again_replaces_it(tmp_path):
    run = RunFolder(tmp_path)
    model, optimizer = model_and_optimizer()
    save(run, 10, model, optimizer)
    with torch.no_grad():
        model[1].bias.add_(1.0)
    save(run, 10, model, optimizer)
    weights = run.load_checkpoint_weights(run.latest_checkpoint())
    assert torch.equal(weights["1.bias"], model[1].bias)


def test_best_is_replaced_whole(tmp_path):
    run = RunFolder(tmp_path)
    model, _ = model_and_optimizer()
    run.save_best(model.state_dict(), {"step": 3, "loss": 1.5})
    with torch.no_grad():
        model[1].bias.zero_()
    run.save_best(model.state_dict(), {"step": 6, "loss": 1.2})
    best = run.best_checkpoint()
    assert best.step == 6 and best.state["loss"] == 1.2
    assert torch.equal(load_weights(best.path / "model.safetensors")["1.bias"], torch.zeros(7))


def test_fresh_runs_refuse_a_folder_with_checkpoints(tmp_path):
    run = RunFolder(tmp_path)
    run.check_fresh()  # empty: fine
    model, optimizer = model_and_optimizer()
    save(run, 1, model, optimizer)
    with pytest.raises(ConfigError, match="--resume"):
        run.check_fresh()


def test_unreadable_run_files_are_corpus_errors(tmp_path):
    run = RunFolder(tmp_path)
    with pytest.raises(CorpusError, match="not a run folder"):
        run.read_config()
    with pytest.raises(CorpusError, match="not found"):
        load_weights(tmp_path / "missing.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(CorpusError, match="safetensors"):
        load_weights(tmp_path / "bad.safetensors")
    folder = run.checkpoints_dir / "step_0000001"
    folder.mkdir(parents=True)
    (folder / "state.json").write_text("{not json")
    with pytest.raises(CorpusError, match="unreadable checkpoint state"):
        run.latest_checkpoint()
