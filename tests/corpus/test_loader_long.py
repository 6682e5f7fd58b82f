"""The packed loader at long contexts (16,384 and 32,768): rows of MIMIC-demo-like
timelines, documents laid out as contiguous runs (what block-wise attention takes),
positions restarting per document, every token of a short timeline read once."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seqlm.corpus.loader import IGNORE_INDEX, PAD_ID, BatchLoader, LoaderConfig
from seqlm.kernels.blockwise_attention import document_segments, is_run_layout
from seqlm.model.positions import document_positions

# Train-subject lengths of the MIMIC-IV demo corpus (clinical defaults), a sample.
TIMELINES = [728, 1052, 1177, 1194, 1236, 1346, 1376, 1559, 1682, 2039, 2252, 3524, 4862,
             7415, 9549, 12659, 13015, 16113, 28210, 38077, 54451]  # fmt: skip


def timeline_tokens(lengths: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    tokens = np.concatenate([np.r_[1, rng.integers(5, 9000, n - 2), 2] for n in lengths])
    lengths_arr = np.asarray(lengths, dtype=np.int64)
    return tokens.astype(np.uint16), np.cumsum(lengths_arr) - lengths_arr, lengths_arr


@pytest.mark.parametrize("context", [16384, 32768])
def test_packs_long_rows_as_document_runs(context):
    tokens, offsets, lengths = timeline_tokens(TIMELINES)
    loader = BatchLoader(tokens, offsets, lengths, LoaderConfig(context=context, batch_size=2))
    rows = loader.epoch_rows(0)
    seen_short = 0
    packed_rows = 0
    for step in loader.steps(-(-rows // 2)):
        batch = step.micro[0]
        assert batch.idx.shape[1] == context and batch.idx.dtype == torch.int64
        if batch.doc_ids is None:
            continue
        packed_rows += 1
        assert is_run_layout(batch.doc_ids)
        real = batch.idx != PAD_ID  # padding keeps position 0; it is never a target
        assert torch.equal(batch.position_ids[real], document_positions(batch.doc_ids)[real])
        starts, seg_lengths = document_segments(batch.doc_ids)
        assert int(seg_lengths.sum()) == batch.idx.numel()
        # Targets never cross a document boundary.
        boundary = batch.doc_ids[:, 1:] != batch.doc_ids[:, :-1]
        assert bool((batch.targets[:, :-1][boundary] == IGNORE_INDEX).all())
        seen_short += int((batch.idx == 1).sum())  # one BOS per whole short timeline
    assert packed_rows > 0
    short = sum(1 for n in TIMELINES if n <= context + 1)
    assert seen_short >= short  # every short timeline was packed whole (BOS seen)
