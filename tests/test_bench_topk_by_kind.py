"""benchmarks/bench_topk_by_kind.py on a corpus in each within-time order: the best
n-gram's held-out figures per corpus (`--ngram-only`), and the table by target kind
with its order-free column for a run (slow: it trains one)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers.cli_helpers import run

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_topk_by_kind.py"
MAPPING = ["-O", 'entity="patient"', "-O", 'time="hour"', "-O", 'code="code"']
MAPPING += ["-O", "splits.tuning=0.2", "-O", "splits.held_out=0.2", "-O", "scheme.min_entities=1"]


def corpora(tmp_path: Path) -> dict[str, Path]:
    """Twenty patients whose hours hold a few codes written in reverse code order,
    ingested in file order and in code order."""
    lines = ["patient,hour,code"]
    for patient in range(20):
        for hour in range(6):
            lines += [f"p{patient},{hour},{c}" for c in ("D", "C", "B", "A")[: 2 + hour % 3]]
    source = tmp_path / "events.csv"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    built = {}
    for order in ("file", "code"):
        built[order] = tmp_path / order
        argv = ["ingest", "tabular", str(source), "--out", str(built[order]), *MAPPING]
        assert run([*argv, "--within-time-order", order]) == 0
    return built


def bench(*args: str) -> dict:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args, "--json"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_ngram_only_names_each_corpus_order(tmp_path):
    built = corpora(tmp_path)
    rows = bench("--ngram-only", str(built["file"]), str(built["code"]))["rows"]
    assert [row["within-time order"] for row in rows] == ["file", "code"]
    for row in rows:
        assert row["perplexity"] >= 1.0 and 0.0 <= row["top-1"] <= row["top-10"] <= 1.0


@pytest.mark.slow
def test_by_kind_table_has_the_order_free_column(tmp_path):
    built = corpora(tmp_path)
    sets = ["model.context=16", "train.steps=2", "train.batch=2", "train.eval_batches=1"]
    argv = ["train", str(built["code"]), "--out", str(tmp_path / "run"), "--preset", "tiny"]
    assert run(argv + [a for s in sets for a in ("--set", s)]) == 0
    result = bench("--run", str(tmp_path / "run"), "--corpus", str(built["code"]))
    assert result["within-time order"] == "code"
    first = result["rows"][0]
    assert first["kind"] == "all" and first["share"] == 1.0
    # A token still due at the target's time is found at least as often as the target.
    assert first["model order-free"] >= first["model top-10"]
    assert first["n-gram order-free"] >= first["n-gram top-10"]
    # At most four tokens are due at any hour, so a model told them always hits.
    assert first["set oracle top-10"] == 1.0
    assert first["code-set oracle order-free"] == 1.0


def load_bench_module():
    spec = importlib.util.spec_from_file_location("bench_topk_by_kind", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_set_oracle_ranks_due_tokens_by_count_and_hits_small_sets():
    bench_module = load_bench_module()
    # Target 1 of twelve distinct due tokens, token 7 due three times and token 9 twice.
    crowded = [1, 2, 3, 4, 5, 6, 7, 7, 7, 8, 9, 9, 10, 11, 12]
    small = [4, 3, 3]
    top = bench_module.set_oracle_top_k([crowded, small], vocab_size=20)
    assert list(top[0][:2]) == [7, 9]  # the most frequent due tokens come first
    assert len(set(top[0].tolist())) == 10 and set(top[0].tolist()) <= set(crowded)
    assert list(top[1][:2]) == [3, 4] and (top[1][2:] == -1).all()  # three places used
    # Ties are broken by a fixed random order, the same on every call.
    again = bench_module.set_oracle_top_k([crowded, small], vocab_size=20)
    assert (top == again).all()


def test_code_set_oracle_weighs_due_codes_by_their_train_values():
    bench_module = load_bench_module()
    codes = np.array(["A", "A", "B", "B", "C", "T"], dtype=object)
    train_counts = np.array([8, 2, 5, 5, 1, 1])
    # Due: one A (told only the code), two B, one C; T is not due.
    top = bench_module.code_set_oracle_top_k([[1, 2, 2, 4]], codes, train_counts)[0]
    # B's tokens 0.5 x 0.5, C's 0.25 x 1, then A's likelier value 0.25 x 0.8, then 0.25 x 0.2.
    assert set(top[:3].tolist()) == {2, 3, 4}
    assert top[3:5].tolist() == [0, 1] and (top[5:] == -1).all()
