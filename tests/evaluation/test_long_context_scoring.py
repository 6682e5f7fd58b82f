"""A run whose block size is above the default scoring batch (8,192 tokens) scores:
`scorer_from_run` sizes the batch to one window instead of refusing the context."""

from __future__ import annotations

import numpy as np
from helpers.eval_fixtures import small_finch_corpus, tiny_gpt, write_run

from seqlm.evaluation.model_scorer import ModelScorer, scorer_from_run


def test_scorer_from_run_takes_a_context_above_the_default_batch(tmp_path):
    corpus = small_finch_corpus(tmp_path / "corpus")
    model = tiny_gpt(vocab_size=corpus.vocab_size, block_size=10_000, positions="rotary")
    run = write_run(tmp_path / "run", model, corpus)
    scorer, _ = scorer_from_run(run, stride=5_000, device="cpu")
    assert scorer.context == 10_000 and scorer.batch_tokens >= 10_000
    sequence = np.asarray(corpus.sequence(0), dtype=np.int64)
    scores = scorer.score([sequence])
    assert np.isfinite(np.asarray(scores.log_prob)).all()
    # Runs whose windows fit the default batch keep it.
    small = write_run(tmp_path / "small", tiny_gpt(vocab_size=corpus.vocab_size), corpus)
    assert scorer_from_run(small, device="cpu")[0].batch_tokens == ModelScorer.batch_tokens
