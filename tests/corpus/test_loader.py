"""Batch loader: packing, masks, coverage, determinism, exact resume, sharding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.shared_data import shared_path
from hypothesis import given, settings
from hypothesis import strategies as st

from seqlm.constants import IGNORE_INDEX
from seqlm.corpus.loader import (
    PAD_ID,
    BatchLoader,
    DataPosition,
    LoaderConfig,
    plan_epoch,
)
from seqlm.errors import ConfigError, CorpusError, SeqlmError

BOS, EOS = 1, 2


def make_sequences(lengths: list[int], seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """tokens, offsets, lengths of BOS ... EOS sequences whose inner tokens are >= 5 and
    encode (sequence number, position) so a test can tell where a token came from."""
    rng = np.random.default_rng(seed)
    pieces = []
    for length in lengths:
        inner = rng.integers(5, 60000, size=length - 2)
        pieces.append(np.concatenate([[BOS], inner, [EOS]]))
    tokens = np.concatenate(pieces).astype(np.uint16)
    lengths_arr = np.asarray(lengths, dtype=np.int64)
    offsets = np.cumsum(lengths_arr) - lengths_arr
    return tokens, offsets, lengths_arr


def check_batch_consistency(batch) -> None:
    """Targets are the next token of the same segment, else ignored; positions restart
    at every segment; n_targets counts the targets."""
    idx, targets = batch.idx.numpy(), batch.targets.numpy()
    assert idx.dtype == np.int64 and targets.shape == idx.shape
    valid = targets != IGNORE_INDEX
    assert int(valid.sum()) == batch.n_targets
    assert (batch.doc_ids is None) == (batch.position_ids is None)
    if batch.doc_ids is None:  # one segment per row, from column 0
        doc = np.zeros_like(idx)
        pos = np.broadcast_to(np.arange(idx.shape[1]), idx.shape)
    else:
        doc, pos = batch.doc_ids.numpy(), batch.position_ids.numpy()
    for r in range(idx.shape[0]):
        for c in range(idx.shape[1]):
            if idx[r, c] == PAD_ID:
                assert not valid[r, c]
                continue
            if c > 0 and doc[r, c] == doc[r, c - 1]:
                assert pos[r, c] == pos[r, c - 1] + 1
            else:
                assert pos[r, c] == 0
            if c + 1 < idx.shape[1] and valid[r, c]:
                assert targets[r, c] == idx[r, c + 1]
                assert doc[r, c] == doc[r, c + 1]
        # A row starts on a segment start.
        assert pos[r, 0] == 0
    # A target of -100 never hides a real next token of the same sequence, except at
    # the end of a window; EOS is never followed by a valid target.
    assert not (valid & (idx == EOS)).any()


def test_packed_rows_are_bos_aligned_and_masked_at_boundaries():
    tokens, offsets, lengths = make_sequences([5, 7, 3, 9, 4, 6, 8, 2, 5])
    loader = BatchLoader(tokens, offsets, lengths, LoaderConfig(context=12, batch_size=2))
    for _ in range(6):
        step = loader.next_step()
        batch = step.micro[0]
        check_batch_consistency(batch)
        # Every sequence fits a window of 13, so every row starts with BOS.
        assert (batch.idx[:, 0] == BOS).all()
        assert step.global_targets == batch.n_targets


def test_a_hand_packed_row():
    # Two sequences of 4 and 3 tokens in a window of 8: BOS a b EOS BOS c EOS PAD.
    tokens = np.array([1, 10, 11, 2, 1, 12, 2], dtype=np.uint16)
    loader = BatchLoader(
        tokens,
        np.array([0, 4]),
        np.array([4, 3]),
        LoaderConfig(context=7, batch_size=1, shuffle=False),
    )
    batch = loader.next_step().micro[0]
    assert batch.idx.tolist() == [[1, 10, 11, 2, 1, 12, 2]]
    assert batch.targets.tolist() == [[10, 11, 2, -100, 12, 2, -100]]
    assert batch.doc_ids.tolist() == [[0, 0, 0, 0, 1, 1, 1]]
    assert batch.position_ids.tolist() == [[0, 1, 2, 3, 0, 1, 2]]
    assert batch.n_targets == 5
    assert batch.n_tokens == 6  # one less than the row's 7 filled columns


def test_every_short_sequence_appears_once_per_epoch():
    lengths = list(np.random.default_rng(1).integers(2, 20, size=60))
    tokens, offsets, lengths = make_sequences(lengths)
    config = LoaderConfig(context=24, batch_size=4, seed=3)
    plan = plan_epoch(offsets, lengths, config, epoch=0)
    segments = sorted(zip(plan.seg_start.tolist(), plan.seg_len.tolist(), strict=True))
    assert segments == sorted(zip(offsets.tolist(), lengths.tolist(), strict=True))
    fill = np.add.reduceat(plan.seg_len, plan.row_ptr[:-1])
    assert fill.max() <= 25
    # Best-fit packing wastes little: rows are on average more than 85% full.
    assert fill.sum() / (plan.n_rows * 25) > 0.85


def test_long_sequences_are_windowed_at_random_phases_covering_every_token():
    tokens, offsets, lengths = make_sequences([100, 37, 64])
    config = LoaderConfig(context=15, batch_size=2)
    starts_by_epoch = []
    for epoch in range(3):
        plan = plan_epoch(offsets, lengths, config, epoch)
        assert (plan.seg_len <= 16).all()
        covered = np.zeros(len(tokens), dtype=bool)
        for start, length in zip(plan.seg_start, plan.seg_len, strict=True):
            covered[start : start + length] = True
        assert covered.all()
        starts_by_epoch.append(sorted(plan.seg_start.tolist()))
    assert starts_by_epoch[0] != starts_by_epoch[1] or starts_by_epoch[1] != starts_by_epoch[2]


def test_same_seed_same_batches_and_other_seed_other_batches():
    tokens, offsets, lengths = make_sequences(list(range(3, 40)))

    def first_steps(seed):
        loader = BatchLoader(
            tokens, offsets, lengths, LoaderConfig(context=16, batch_size=3, seed=seed)
        )
        return [loader.next_step().micro[0].idx for _ in range(5)]

    a, b, c = first_steps(0), first_steps(0), first_steps(1)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))


def test_resume_at_a_position_gives_the_same_batches_across_epochs():
    tokens, offsets, lengths = make_sequences(list(range(2, 30)))
    config = LoaderConfig(context=16, batch_size=3, seed=7)
    straight = BatchLoader(tokens, offsets, lengths, config)
    epoch_rows = straight.epoch_rows(0)
    expected = [straight.next_step() for _ in range(3 * epoch_rows)]  # several epochs
    assert straight.position.epoch >= 2
    for k in (1, epoch_rows // 3, epoch_rows + 1):
        first = BatchLoader(tokens, offsets, lengths, config)
        for _ in range(k):
            first.next_step()
        position = DataPosition.from_dict(first.position.to_dict())
        resumed = BatchLoader(tokens, offsets, lengths, config)
        resumed.seek(position)
        for step in expected[k : k + 5]:
            got = resumed.next_step()
            assert torch.equal(got.micro[0].idx, step.micro[0].idx)
            assert torch.equal(got.micro[0].targets, step.micro[0].targets)


@pytest.mark.parametrize("packing", ["packed", "padded"])
def test_ranks_and_micro_batches_partition_the_global_batch(packing):
    tokens, offsets, lengths = make_sequences(list(np.random.default_rng(2).integers(2, 50, 80)))
    whole = BatchLoader(
        tokens,
        offsets,
        lengths,
        LoaderConfig(context=32, batch_size=8, packing=packing, pad_to_context=True),
    )
    parts = [
        BatchLoader(
            tokens,
            offsets,
            lengths,
            LoaderConfig(context=32, batch_size=2, packing=packing, pad_to_context=True),
            rank=rank,
            world_size=2,
            accum_steps=2,
        )
        for rank in range(2)
    ]
    for _ in range(4):
        full = whole.next_step()
        steps = [p.next_step() for p in parts]
        # Global row order: micro 0 of rank 0, micro 0 of rank 1, micro 1 of rank 0, ...
        pieces = [steps[rank].micro[a].idx for a in range(2) for rank in range(2)]
        assert torch.equal(torch.cat(pieces), full.micro[0].idx)
        assert all(s.global_targets == full.global_targets for s in steps)
        assert all(s.global_tokens == full.global_tokens for s in steps)
        assert sum(m.n_targets for s in steps for m in s.micro) == full.global_targets
        assert sum(m.n_tokens for s in steps for m in s.micro) == full.global_tokens


def test_padded_rows_are_one_sequence_each_padded_to_the_longest():
    tokens, offsets, lengths = make_sequences([4, 9, 6])
    loader = BatchLoader(
        tokens,
        offsets,
        lengths,
        LoaderConfig(context=32, batch_size=3, packing="padded", shuffle=False),
    )
    batch = loader.next_step().micro[0]
    assert batch.doc_ids is None and batch.position_ids is None
    assert batch.idx.shape == (3, 8)  # longest sequence 9 -> 8 inputs
    assert (batch.idx[:, 0] == BOS).all()
    assert batch.n_targets == (4 - 1) + (9 - 1) + (6 - 1)
    check_batch_consistency(batch)
    first = batch.targets[0].tolist()
    assert first[:3] == tokens[1:4].tolist() and set(first[3:]) == {IGNORE_INDEX}


@settings(max_examples=40, deadline=None)
@given(
    lengths=st.lists(st.integers(2, 90), min_size=1, max_size=40),
    context=st.integers(1, 40),
    batch_size=st.integers(1, 5),
    packing=st.sampled_from(["packed", "padded"]),
    seed=st.integers(0, 3),
)
def test_any_corpus_gives_consistent_batches(lengths, context, batch_size, packing, seed):
    tokens, offsets, lengths_arr = make_sequences(lengths, seed)
    loader = BatchLoader(
        tokens,
        offsets,
        lengths_arr,
        LoaderConfig(context=context, batch_size=batch_size, packing=packing, seed=seed),
    )
    for _ in range(3):
        step = loader.next_step()
        batch = step.micro[0]
        assert batch.idx.shape[0] == batch_size
        assert batch.idx.shape[1] <= context
        assert batch.n_targets >= batch_size  # every row holds at least one target
        assert step.global_targets == batch.n_targets
        check_batch_consistency(batch)


def test_bad_inputs_raise_seqlm_errors():
    tokens, offsets, lengths = make_sequences([5, 6])
    config = LoaderConfig(context=8, batch_size=1)
    with pytest.raises(CorpusError, match="no sequences"):
        BatchLoader(tokens, offsets[:0], lengths[:0], config)
    with pytest.raises(CorpusError, match="past the end"):
        BatchLoader(tokens, offsets + 5, lengths, config)
    with pytest.raises(CorpusError, match="shorter than"):
        BatchLoader(tokens, offsets, np.array([1, 6]), config)
    with pytest.raises(ConfigError):
        LoaderConfig(context=0, batch_size=1)
    with pytest.raises(ConfigError):
        LoaderConfig(context=8, batch_size=1, packing="zigzag")
    loader = BatchLoader(tokens, offsets, lengths, config)
    with pytest.raises(CorpusError, match="past the end of its epoch"):
        loader.seek(DataPosition(epoch=0, row=10_000))
    with pytest.raises(SeqlmError):
        DataPosition.from_dict({"epoch": "x"})


@pytest.fixture(scope="module")
def finch_corpus(tmp_path_factory):
    """The real pre-lesion finch song (7 birds), as a corpus folder."""
    from seqlm.ingest import ingest

    source = shared_path("birdsong", "koparkar2024_mman_lesions")
    files = sorted(source.glob("bird*_prelesion"))
    return ingest("birdsong-strings", files, tmp_path_factory.mktemp("finch") / "corpus")


def test_loader_on_the_finch_corpus(finch_corpus):
    corpus = finch_corpus
    loader = BatchLoader.from_corpus(corpus, "train", LoaderConfig(context=64, batch_size=12))
    train = corpus.split("train")
    assert loader.epoch_rows(0) >= train["length"].sum() // 65
    for _ in range(5):
        step = loader.next_step()
        batch = step.micro[0]
        assert batch.idx.shape == (12, 64)
        assert int(batch.idx.max()) < corpus.vocab_size
        check_batch_consistency(batch)
        # Finch bouts are often longer than 65 tokens: those rows are windows.
        assert batch.n_tokens >= 0.9 * 12 * 64
