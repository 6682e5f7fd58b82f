"""Events that share a timestamp, read in a fresh random order every epoch (training only).

For sources that list the events of one timestamp in an arbitrary order (streams merged
into one entity, an export that does not keep the order it was given), a model trained
on the one order of the file spends capacity on it and sees each timestamp in only one
of its many orders; shown a new order each epoch, it learns which events a time holds.
Off by default: on the MIMIC-IV demo the file's order within a timestamp is *not*
arbitrary enough, and training on shuffled orders was worse on the file's order
(held-out perplexity 324 against 264 at 1M tokens, top-10 22.5% against 25.2%;
docs/training.md, "Simultaneous events in a random order").

Only training batches are reordered; tuning and held-out scoring read the file's order,
so what is scored does not change. The order is a pure function of (seed, epoch, the
event's place in `tokens.bin`): a resumed run and any split of a step between processes
see the same batches.

What moves: event tokens (and unknowns, which stand for events) with the same time,
contiguous within one window segment. A value token (`value_mode = "separate"`) moves
with the event before it. Specials, time-gap and conditioning tokens stay where they are
and so bound the runs.
"""

from __future__ import annotations

import numpy as np

from seqlm.errors import ConfigError

# Tokens read at a time when looking for simultaneous events (bounds the memory of the
# check on a memory-mapped tokens.bin of any size).
_CHUNK_TOKENS = 1 << 23

_MOVABLE_ROLES = frozenset({"event", "unknown", "value"})
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def movable_roles(roles: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Per token id: may it move, and does it continue the event before it (a value)."""
    role = np.asarray(roles)
    return np.isin(role, list(_MOVABLE_ROLES)), role == "value"


def check_shufflable(times: np.ndarray | None, source: str) -> np.ndarray:
    if times is None:
        raise ConfigError(
            f"{source}: train.shuffle_simultaneous needs the corpus's times.bin, and this "
            "corpus has none (its events carry no time)"
        )
    return times


def any_simultaneous(
    tokens: np.ndarray,
    times: np.ndarray,
    offsets: np.ndarray,
    lengths: np.ndarray,
    movable: np.ndarray,
) -> bool:
    """Whether two movable tokens next to each other in one of the sequences
    (`offsets`, `lengths` into `tokens`) share their time: if none do, shuffling moves
    nothing. Reads the sequences in chunks and stops at the first such pair."""
    order = np.argsort(offsets, kind="stable")
    starts = np.asarray(offsets, dtype=np.int64)[order]
    ends = starts + np.asarray(lengths, dtype=np.int64)[order]
    begin, stop = (int(starts[0]), int(ends.max())) if len(starts) else (0, 0)
    for lo in range(begin, stop, _CHUNK_TOKENS):
        hi = min(lo + _CHUNK_TOKENS + 1, stop)  # one token of overlap: pairs across chunks
        ids = np.asarray(tokens[lo:hi], dtype=np.int64)
        at = np.asarray(times[lo:hi])
        pair = movable[ids[1:]] & movable[ids[:-1]] & (at[1:] == at[:-1])
        second = lo + 1 + np.flatnonzero(pair)  # place of each pair's second token
        seq = np.searchsorted(starts, second, side="right") - 1
        inside = (seq >= 0) & (second > starts[np.maximum(seq, 0)])
        inside &= second < ends[np.maximum(seq, 0)]
        if inside.any():
            return True
    return False


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a well-spread 64-bit key from a counter."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def shuffle_simultaneous(
    tokens: np.ndarray,
    positions: np.ndarray,
    times: np.ndarray,
    segment: np.ndarray,
    movable: np.ndarray,
    continues: np.ndarray,
    *,
    seed: int,
    epoch: int,
) -> np.ndarray:
    """`tokens` (read from `positions` of `tokens.bin`, segment by segment) with every
    run of simultaneous events in a random order; everything else in place."""
    n = len(tokens)
    if n < 2:
        return tokens
    moves = movable[tokens]
    same_run = np.zeros(n, dtype=bool)
    same_run[1:] = (
        moves[1:] & moves[:-1] & (segment[1:] == segment[:-1]) & (times[1:] == times[:-1])
    )
    run = np.cumsum(~same_run)
    # An event starts a unit; a value token stays with the event it follows.
    unit_start = ~(same_run & continues[tokens])
    unit = np.cumsum(unit_start) - 1
    with np.errstate(over="ignore"):
        salt = np.uint64(seed & 0xFFFFFFFF) * _GOLDEN + np.uint64(epoch + 1) * np.uint64(
            0xD1B54A32D192ED03
        )
        unit_key = _mix(positions[unit_start].astype(np.uint64) + salt)
    order = np.lexsort((positions, unit_key[unit], run))
    return tokens[order]
