"""benchmarks/bench_sequence_history.py's generated clinical sequences and its rows."""

from __future__ import annotations

import numpy as np
from helpers.benchmarks import load_benchmark

from seqlm.evaluation.scores import prediction_targets


def test_generated_sequences_have_the_clinical_structure_asked_for() -> None:
    bench = load_benchmark("bench_sequence_history")
    codes = bench.clinical_codes(500)
    sequences = bench.clinical_sequences(codes, 7000)
    assert len(prediction_targets(sequences, 500)) == 7000  # exactly the targets asked for
    flat = np.concatenate([s[1:-1] for s in sequences])
    assert np.isin(flat, codes.time_ids).mean() > 0.03  # a time token every 5-20 labs
    labs = flat[~np.isin(flat, codes.time_ids)]
    assert (codes.value_group[labs] > 0).all()  # every other token is a lab value
    assert np.bincount(codes.value_group)[1:].min() == bench.VALUES


def test_a_row_and_its_measurement() -> None:
    bench = load_benchmark("bench_sequence_history")
    row = bench.measure(500, 200, repeats=1)
    assert row["targets"] == 500 and row["vocab"] == 200
    assert row["fit_s"] > 0 and row["score_s"] > 0 and row["fit_ns_per_cell"] > 0
