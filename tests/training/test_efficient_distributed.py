"""Each efficient-training method under 2-process DDP on CPU (gloo): PLD and stacking
take the same steps as one process with the same global batch; selective backprop
(whose row choices are per process by design) completes with one budget for all."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from seqlm.training.checkpoint import load_weights

# Runs train_on_corpus with the method's callbacks; torchrun starts it once per process.
WORKER = """
import sys
from seqlm.model import preset
from seqlm.training.config import resolve_settings
from seqlm.studies.efficiency import EfficiencyOptions, method_callbacks
from seqlm.training.efficient.reference_time import CostMeter, CostModel
from seqlm.training.session import train_on_corpus

corpus, out, method, batch, vocab = sys.argv[1:6]
sets = ["model.n_layer=4", "model.block_size=32", "model.bias=false", "train.steps=1000000",
        f"train.batch_size={batch}", "train.eval_every=100", "train.eval_batches=1"]
cost_model = CostModel("flops", preset("tiny", vocab_size=int(vocab), block_size=32, n_layer=4))
limit = 6 * cost_model.cost("train", 4, 4 * 33)
options = EfficiencyOptions(methods=("baseline", method))
callbacks = [CostMeter(cost_model, limit), *method_callbacks(method, options)]
train_on_corpus(corpus, out, resolve_settings(sets=sets, preset="tiny"), callbacks=callbacks)
"""


def _train(worker: Path, corpus, out: Path, method: str, processes: int) -> None:
    batch = 4 // processes
    args = [str(worker), str(corpus.path), str(out), method, str(batch), str(corpus.vocab_size)]
    if processes == 1:
        command = [sys.executable, *args]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        command += [f"--nproc_per_node={processes}", *args]
    done = subprocess.run(
        command, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-4000:]


@pytest.mark.parametrize(
    "method",
    [
        "pld",
        pytest.param("stacking", marks=pytest.mark.slow),
        pytest.param("selective_backprop", marks=pytest.mark.slow),
    ],
)
def test_method_under_two_process_ddp(song_corpus, tmp_path, method):
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    _train(worker, song_corpus, tmp_path / "ddp", method, processes=2)
    state = json.loads((tmp_path / "ddp" / "state.json").read_text())
    assert state["world_size"] == 2
    cost = state["callbacks"]["cost"]
    assert cost["used"] >= 6 * 0.99 * (cost["used"] / max(state["step"], 1))
    if method == "selective_backprop":
        assert 0 < state["callbacks"][method]["rows_kept"] < state["callbacks"][method]["rows_seen"]
        return
    _train(worker, song_corpus, tmp_path / "one", method, processes=1)
    first = load_weights(tmp_path / "ddp" / "model.safetensors")
    second = load_weights(tmp_path / "one" / "model.safetensors")
    for name in first:
        torch.testing.assert_close(first[name], second[name], rtol=0, atol=1e-5)
    one_state = json.loads((tmp_path / "one" / "state.json").read_text())
    assert one_state["step"] == state["step"]
    assert one_state["callbacks"][method] == state["callbacks"][method]
