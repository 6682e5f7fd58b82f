"""Simultaneous events reordered in training batches: what moves, what stays, and that
the order is a pure function of (seed, epoch, place in tokens.bin)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from seqlm.corpus.loader import BatchLoader, DataPosition, LoaderConfig
from seqlm.corpus.simultaneous import any_simultaneous, movable_roles, shuffle_simultaneous
from seqlm.errors import ConfigError

# ids: 0 PAD, 1 BOS, 2 EOS, 3 time gap, 4 condition, 5 value, 6.. events
ROLES = ("special", "special", "special", "time", "condition", "value") + ("event",) * 40
MOVABLE, CONTINUES = movable_roles(ROLES)


def shuffled(tokens, times, segment=None, *, seed=0, epoch=0, positions=None):
    tokens = np.asarray(tokens, dtype=np.int64)
    positions = np.arange(len(tokens)) if positions is None else np.asarray(positions)
    segment = np.zeros(len(tokens), dtype=np.int64) if segment is None else np.asarray(segment)
    return shuffle_simultaneous(
        tokens,
        positions,
        np.asarray(times, dtype=np.float32),
        segment,
        MOVABLE,
        CONTINUES,
        seed=seed,
        epoch=epoch,
    )


def test_roles_that_move_and_values_that_follow():
    assert MOVABLE.tolist()[:7] == [False, False, False, False, False, True, True]
    assert CONTINUES.tolist()[:7] == [False] * 5 + [True, False]


def test_only_runs_of_one_time_move_and_each_keeps_its_tokens():
    # BOS, cond, [6..15 at t=0], gap, [16..25 at t=5], 26 at t=6, EOS
    tokens = [1, 4, *range(6, 16), 3, *range(16, 26), 26, 2]
    times = [0, 0] + [0] * 10 + [5] + [5] * 10 + [6, 6]
    seen = set()
    for epoch in range(5):
        out = shuffled(tokens, times, epoch=epoch)
        assert out[[0, 1, 12, 23, 24]].tolist() == [1, 4, 3, 26, 2]
        assert sorted(out[2:12].tolist()) == list(range(6, 16))
        assert sorted(out[13:23].tolist()) == list(range(16, 26))
        seen.add(tuple(out.tolist()))
    assert len(seen) == 5  # a new order every epoch
    again = shuffled(tokens, times, epoch=3)
    assert np.array_equal(again, shuffled(tokens, times, epoch=3))


def test_a_value_token_stays_after_its_event():
    # events 6..11 at one time, each followed by its value token (id 5)
    tokens = [1] + [t for e in range(6, 12) for t in (e, 5)] + [2]
    times = [0] * len(tokens)
    for epoch in range(4):
        out = shuffled(tokens, times, epoch=epoch).tolist()
        inner = out[1:-1]
        assert sorted(inner[0::2]) == list(range(6, 12))
        assert inner[1::2] == [5] * 6


def test_segments_bound_the_runs():
    tokens = [6, 7, 8, 9, 10, 11]
    segment = [0, 0, 0, 1, 1, 1]
    for epoch in range(6):
        out = shuffled(tokens, [0] * 6, segment, epoch=epoch)
        assert sorted(out[:3].tolist()) == [6, 7, 8]
        assert sorted(out[3:].tolist()) == [9, 10, 11]


def test_the_order_depends_on_the_place_in_the_file_not_on_the_batch():
    tokens = np.arange(6, 30)
    positions = np.arange(1000, 1024)
    whole = shuffled(tokens, [0] * 24, positions=positions, seed=4, epoch=2)
    # The same run read as part of a larger batch (an unrelated segment before it).
    joined = shuffled(
        np.r_[[1, 7, 8], tokens],
        [0] * 27,
        [0] * 3 + [1] * 24,
        positions=np.r_[[5, 6, 7], positions],
        seed=4,
        epoch=2,
    )
    assert np.array_equal(joined[3:], whole)
    assert not np.array_equal(whole, shuffled(tokens, [0] * 24, positions=positions, seed=5))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 45), st.integers(0, 3)), min_size=1, max_size=80),
    st.integers(0, 3),
)
def test_any_stream_keeps_fixed_tokens_in_place_and_runs_as_multisets(pairs, epoch):
    tokens = np.array([t for t, _ in pairs])
    times = np.cumsum([d for _, d in pairs]).astype(np.float32)
    out = shuffled(tokens, times, epoch=epoch)
    fixed = ~MOVABLE[tokens]
    assert np.array_equal(out[fixed], tokens[fixed])
    # Every stretch between fixed tokens and time changes keeps its multiset.
    edges = np.flatnonzero(fixed[1:] | fixed[:-1] | (times[1:] != times[:-1])) + 1
    for a, b in zip(np.r_[0, edges], np.r_[edges, len(tokens)], strict=True):
        assert sorted(out[a:b].tolist()) == sorted(tokens[a:b].tolist())


def clinical_like(n_sequences=30, seed=0):
    """BOS, then timestamps of 1-8 events each behind a time-gap token, then EOS."""
    rng = np.random.default_rng(seed)
    tokens, times, lengths = [], [], []
    for _ in range(n_sequences):
        seq, tm, now = [1], [0.0], 0.0
        for _ in range(rng.integers(3, 15)):
            now += float(rng.integers(1, 100))
            seq.append(3)
            tm.append(now)
            k = int(rng.integers(1, 9))
            seq.extend(rng.integers(6, 46, size=k).tolist())
            tm.extend([now] * k)
        seq.append(2)
        tm.append(now)
        tokens += seq
        times += tm
        lengths.append(len(seq))
    lengths = np.asarray(lengths, dtype=np.int64)
    return (
        np.asarray(tokens, np.uint16),
        np.asarray(times, np.float32),
        np.cumsum(lengths) - lengths,
        lengths,
    )


def loader(config, **kwargs):
    tokens, times, offsets, lengths = clinical_like()
    return BatchLoader(tokens, offsets, lengths, config, times=times, roles=ROLES, **kwargs)


def test_loader_reorders_training_rows_and_resumes_exactly():
    config = LoaderConfig(context=24, batch_size=4, seed=3, shuffle_simultaneous=True)
    plain = loader(LoaderConfig(context=24, batch_size=4, seed=3))
    straight = loader(config)
    steps = [straight.next_step() for _ in range(12)]
    plain_steps = [plain.next_step() for _ in range(12)]
    differ = 0
    for got, ref in zip(steps, plain_steps, strict=True):
        a, b = got.micro[0], ref.micro[0]
        # Each row holds the same tokens (its inputs and its last target), reordered.
        rows_a = torch.cat([a.idx, a.targets[:, -1:]], 1)
        rows_b = torch.cat([b.idx, b.targets[:, -1:]], 1)
        assert torch.equal(torch.sort(rows_a, 1).values, torch.sort(rows_b, 1).values)
        assert a.n_targets == b.n_targets
        differ += int(not torch.equal(a.idx, b.idx))
    assert differ > 6
    resumed = loader(config)
    resumed.seek(DataPosition(epoch=0, row=5 * 4))
    for step in steps[5:]:
        assert torch.equal(resumed.next_step().micro[0].idx, step.micro[0].idx)


def test_two_processes_see_what_one_process_sees():
    config = LoaderConfig(context=24, batch_size=4, seed=1, shuffle_simultaneous=True)
    whole = loader(config)
    half = LoaderConfig(context=24, batch_size=2, seed=1, shuffle_simultaneous=True)
    ranks = [loader(half, rank=r, world_size=2) for r in range(2)]
    for _ in range(5):
        full = whole.next_step().micro[0].idx
        parts = [r.next_step().micro[0].idx for r in ranks]
        assert torch.equal(torch.cat(parts), full)


def test_a_corpus_without_times_is_refused_in_words():
    tokens, _, offsets, lengths = clinical_like()
    config = LoaderConfig(context=24, batch_size=4, shuffle_simultaneous=True)
    with pytest.raises(ConfigError, match="times.bin"):
        BatchLoader(tokens, offsets, lengths, config, times=None, roles=ROLES)


@pytest.fixture(scope="module")
def small_mimic(tmp_path_factory):
    from helpers.demo_shards import small_demo

    from seqlm.ingest import ingest

    root = small_demo(tmp_path_factory.mktemp("demo"))
    return ingest("meds", [root], tmp_path_factory.mktemp("mimic") / "corpus")


def test_on_mimic_training_batches_reorder_and_tuning_batches_do_not(small_mimic):
    from seqlm.training.config import TrainConfig
    from seqlm.training.distributed import DistContext
    from seqlm.training.session import make_loaders

    corpus = small_mimic
    shuffled_run = TrainConfig(batch_size=8, shuffle_simultaneous=True)
    train, tuning = make_loaders(corpus, shuffled_run, 64, DistContext())
    plain_train, plain_tuning = make_loaders(corpus, TrainConfig(batch_size=8), 64, DistContext())
    moved = 0
    for _ in range(4):
        a, b = train.next_step().micro[0], plain_train.next_step().micro[0]
        rows_a = torch.cat([a.idx, a.targets[:, -1:]], 1)
        rows_b = torch.cat([b.idx, b.targets[:, -1:]], 1)
        assert torch.equal(torch.sort(rows_a, 1).values, torch.sort(rows_b, 1).values)
        moved += int((a.idx != b.idx).sum())
    assert moved > 100  # lab panels: most tokens of the demo share their time
    assert tuning is not None and plain_tuning is not None
    for _ in range(2):
        assert torch.equal(tuning.next_step().micro[0].idx, plain_tuning.next_step().micro[0].idx)


def test_a_corpus_with_no_simultaneous_events_is_told_the_option_moves_nothing():
    # Each event at its own time: nothing can move, and the user hears so.
    tokens = np.asarray([1, 6, 7, 8, 2, 1, 9, 10, 2], np.uint16)
    times = np.asarray([0, 0, 1, 2, 2, 5, 5, 6, 6], np.float32)
    offsets, lengths = np.asarray([0, 5]), np.asarray([5, 4])
    config = LoaderConfig(context=8, batch_size=2, shuffle_simultaneous=True)
    with pytest.warns(UserWarning, match="changes nothing"):
        BatchLoader(tokens, offsets, lengths, config, times=times, roles=ROLES)


def test_simultaneous_pairs_count_inside_a_sequence_only():
    # Events 8 (last of sequence 0) and 9 (first event of sequence 1, no BOS between
    # them) share a time but not a sequence; 6 and 7 share a time within one.
    tokens = np.asarray([6, 8, 9, 10, 6, 7], np.uint16)
    times = np.asarray([0, 3, 3, 4, 7, 7], np.float32)
    offsets, lengths = np.asarray([0, 2, 4]), np.asarray([2, 2, 2])
    assert not any_simultaneous(tokens, times, offsets[:2], lengths[:2], MOVABLE)
    assert any_simultaneous(tokens, times, offsets, lengths, MOVABLE)
    # the split's sequences only: sequence 2 alone holds the pair
    assert any_simultaneous(tokens, times, offsets[2:], lengths[2:], MOVABLE)
    assert not any_simultaneous(tokens, times, offsets[:0], lengths[:0], MOVABLE)


def test_pairs_across_the_check_s_chunks_are_found(monkeypatch):
    import seqlm.corpus.simultaneous as simultaneous

    monkeypatch.setattr(simultaneous, "_CHUNK_TOKENS", 4)
    tokens = np.asarray([6, 7, 8, 9, 10, 11, 12, 13], np.uint16)
    for second in range(1, 8):  # the one pair ends at `second`
        times = np.arange(8, dtype=np.float32)
        times[second] = times[second - 1]
        found = simultaneous.any_simultaneous(tokens, times, [0], [8], MOVABLE)
        assert found, second


def test_the_demo_like_loader_gives_no_warning(recwarn):
    loader(LoaderConfig(context=24, batch_size=4, shuffle_simultaneous=True))
    assert not [w for w in recwarn if "changes nothing" in str(w.message)]
