"""Acceptance: `seqlm train` with the defaults (micro preset) on the real pre-lesion
finch corpus, on CPU, reaches a held-out loss far below the corpus's unigram entropy
and writes a complete run folder. Minutes of CPU time, so marked slow."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.shared_data import shared_path

from seqlm.cli.app import main
from seqlm.corpus import load_corpus
from seqlm.corpus.loader import BatchLoader, LoaderConfig
from seqlm.training.runs import load_trained_model


def unigram_entropy(corpus, split: str) -> float:
    """Entropy (nats) of the target tokens of a split: everything but each BOS."""
    rows = corpus.split(split)
    tokens = np.concatenate(
        [
            np.asarray(corpus.tokens[o + 1 : o + n])
            for o, n in zip(rows["offset"], rows["length"], strict=True)
        ]
    )
    p = np.bincount(tokens, minlength=corpus.vocab_size) / len(tokens)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


@torch.no_grad()
def split_loss(model, corpus, split: str, context: int) -> float:
    loader = BatchLoader.from_corpus(
        corpus, split, LoaderConfig(context=context, batch_size=16, packing="padded", shuffle=False)
    )
    steps = -(-loader.epoch_rows(0) // loader.rows_per_step)
    total, count = 0.0, 0
    for step in loader.steps(steps):
        batch = step.micro[0]
        total += float(model(batch.idx, batch.targets).loss) * batch.n_targets
        count += batch.n_targets
    return total / count


@pytest.mark.slow
def test_default_micro_run_on_finch_beats_the_unigram_entropy(tmp_path):
    from seqlm.ingest import ingest

    source = shared_path("birdsong", "koparkar2024_mman_lesions")
    corpus_path = tmp_path / "finch"
    ingest("birdsong-strings", sorted(source.glob("bird*_prelesion")), corpus_path)
    run = tmp_path / "run"
    try:
        main(["train", str(corpus_path), "--out", str(run), "--set", "train.cpu_threads=1"])
    except SystemExit as exit_:
        assert not exit_.code
    corpus = load_corpus(corpus_path)
    model = load_trained_model(run, which="best")
    held_out = split_loss(model, corpus, "held_out", model.config.block_size)
    entropy = unigram_entropy(corpus, "train")
    assert entropy > 2.0
    assert held_out < 0.5 * entropy, (held_out, entropy)
    for name in ("config.json", "tokenizer.json", "metrics.jsonl", "model.safetensors",
                 "optimizer.pt", "state.json"):  # fmt: skip
        assert (run / name).exists(), name
    assert (run / "best" / "model.safetensors").exists()
