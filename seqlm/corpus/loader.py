"""Training batches from the memory-mapped corpus: packed windows or padded rows.

Every epoch has a *plan*: a list of rows, each row a list of segments (a contiguous
stretch of `tokens.bin`) that fit in one window of `context + 1` tokens. The plan is a
pure function of (seed, epoch), so a data position is just `(epoch, row)` and resuming
there gives exactly the batches an uninterrupted run would have seen.

- A sequence no longer than the window is one segment (it starts with BOS).
- A longer sequence is cut into windows of exactly `context + 1` tokens at a random
  phase, so every token is covered about once an epoch and the start offsets differ
  from epoch to epoch.
- `packing="packed"`: short sequences are packed best-fit into rows (the largest
  waiting sequence that still fits), so every row starts on a segment start (BOS-aligned)
  and almost nothing is padding; `doc_ids` and `position_ids` let the model keep
  attention inside a segment and restart positions there.
- `packing="padded"`: one segment per row, padded to the longest row of the micro-batch.

Targets are the next token, or -100 where the next token belongs to another segment or
is padding. Rows of a step are dealt to processes and micro-batches in a fixed order, so
N processes with batch B see the same rows as one process with batch N x B.
"""

from __future__ import annotations

import bisect
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from seqlm.constants import IGNORE_INDEX
from seqlm.corpus.simultaneous import (
    any_simultaneous,
    check_shufflable,
    movable_roles,
    shuffle_simultaneous,
)
from seqlm.errors import ConfigError, CorpusError

PAD_ID = 0


@dataclass(frozen=True)
class LoaderConfig:
    """How rows are cut and dealt. `batch_size` is rows per micro-batch per process."""

    context: int
    batch_size: int
    packing: Literal["packed", "padded"] = "packed"
    seed: int = 0
    shuffle: bool = True
    # How many waiting sequences best-fit packing looks at when filling a row.
    pack_buffer: int = 256
    # Padded mode: pad every row to `context` instead of the micro-batch's longest.
    pad_to_context: bool = False
    # Events sharing a timestamp in a new random order each epoch (seqlm.corpus.simultaneous).
    shuffle_simultaneous: bool = False

    def __post_init__(self) -> None:
        if self.context < 1:
            raise ConfigError(f"context must be at least 1, got {self.context}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.packing not in ("packed", "padded"):
            raise ConfigError(f"packing must be 'packed' or 'padded', got {self.packing!r}")
        if self.pack_buffer < 1:
            raise ConfigError(f"pack_buffer must be at least 1, got {self.pack_buffer}")


@dataclass(frozen=True)
class DataPosition:
    """Where the next step's rows start: row `row` of epoch `epoch`'s plan."""

    epoch: int = 0
    row: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "row": self.row}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DataPosition:
        try:
            return cls(epoch=int(data["epoch"]), row=int(data["row"]))
        except (KeyError, TypeError, ValueError) as err:
            raise CorpusError(f"invalid data position {data!r}: {err}") from None


@dataclass(frozen=True)
class Batch:
    """One micro-batch on the CPU. `doc_ids`/`position_ids` are None when every row is
    one segment starting at position 0 (padded mode, or packed rows of long sequences),
    where the model's defaults mean the same.

    `n_targets` counts targets that are not -100; `n_tokens` counts tokens read, one
    less than each row's filled length (a full packed row counts `context`), so it does
    not depend on padding or on how rows are split between processes."""

    idx: torch.Tensor
    targets: torch.Tensor
    doc_ids: torch.Tensor | None
    position_ids: torch.Tensor | None
    n_targets: int
    n_tokens: int

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device, non_blocking=non_blocking)

        return Batch(
            idx=move(self.idx),
            targets=move(self.targets),
            doc_ids=move(self.doc_ids),
            position_ids=move(self.position_ids),
            n_targets=self.n_targets,
            n_tokens=self.n_tokens,
        )


@dataclass(frozen=True)
class StepBatches:
    """This process's micro-batches for one optimizer step, and counts over all processes
    (known locally because every process computes the same plan)."""

    micro: list[Batch]
    global_targets: int
    global_tokens: int


@dataclass(frozen=True)
class EpochPlan:
    """Rows of one epoch: row r holds segments `row_ptr[r]:row_ptr[r+1]`, each a stretch
    `seg_start : seg_start + seg_len` of the token file."""

    row_ptr: np.ndarray
    seg_start: np.ndarray
    seg_len: np.ndarray

    @property
    def n_rows(self) -> int:
        return len(self.row_ptr) - 1


def _window_starts(length: int, window: int, rng: np.random.Generator) -> np.ndarray:
    """Starts of windows tiling a sequence longer than `window`, at a random phase.

    Boundaries fall at j * window - phase; the first and last windows are clipped into
    the sequence, so every token is covered and the sequence's start (BOS) and end
    (EOS) are always seen.
    """
    phase = int(rng.integers(0, window))
    count = -(-(length + phase) // window)
    starts = np.clip(np.arange(count, dtype=np.int64) * window - phase, 0, length - window)
    return np.unique(starts)


def _best_fit_rows(lengths: np.ndarray, capacity: int, buffer: int) -> list[list[int]]:
    """Pack items (indices into `lengths`, taken in order) into rows of `capacity`.

    Each row starts with the largest waiting item and keeps taking the largest that
    still fits; ties go to the item that arrived first, so the result is deterministic.
    """
    waiting: list[tuple[int, int]] = []  # sorted (length, arrival)
    rows: list[list[int]] = []
    next_item = 0
    n = len(lengths)
    while next_item < n or waiting:
        while next_item < n and len(waiting) < buffer:
            bisect.insort(waiting, (int(lengths[next_item]), next_item))
            next_item += 1
        room = capacity
        row: list[int] = []
        while waiting:
            # Largest length <= room: the entry just before (room, +inf).
            pos = bisect.bisect_right(waiting, (room, n)) - 1
            if pos < 0:
                break
            length, item = waiting.pop(pos)
            row.append(item)
            room -= length
            if next_item < n:
                bisect.insort(waiting, (int(lengths[next_item]), next_item))
                next_item += 1
        rows.append(row)
    return rows


def plan_epoch(
    offsets: np.ndarray, lengths: np.ndarray, config: LoaderConfig, epoch: int
) -> EpochPlan:
    """The rows of one epoch; a pure function of the sequences, config, and epoch."""
    window = config.context + 1
    rng = np.random.default_rng([config.seed, epoch])
    order = rng.permutation(len(lengths)) if config.shuffle else np.arange(len(lengths))
    starts: list[int] = []
    seg_lengths: list[int] = []
    short: list[int] = []  # positions in starts/seg_lengths of whole short sequences
    for seq in order:
        offset, length = int(offsets[seq]), int(lengths[seq])
        if length > window:
            for start in _window_starts(length, window, rng):
                starts.append(offset + int(start))
                seg_lengths.append(window)
        else:
            short.append(len(starts))
            starts.append(offset)
            seg_lengths.append(length)
    seg_start = np.asarray(starts, dtype=np.int64)
    seg_len = np.asarray(seg_lengths, dtype=np.int64)
    if config.packing == "padded":
        rows = [[i] for i in range(len(seg_start))]
    else:
        is_short = np.zeros(len(seg_start), dtype=bool)
        is_short[short] = True
        short_idx = np.flatnonzero(is_short)
        packed = _best_fit_rows(seg_len[short_idx], window, config.pack_buffer)
        rows = [[int(i)] for i in np.flatnonzero(~is_short)]
        rows.extend([int(short_idx[j]) for j in row] for row in packed)
    if config.shuffle:
        rows = [rows[i] for i in rng.permutation(len(rows))]
    flat = [seg for row in rows for seg in row]
    row_ptr = np.zeros(len(rows) + 1, dtype=np.int64)
    row_ptr[1:] = np.cumsum([len(row) for row in rows])
    return EpochPlan(row_ptr=row_ptr, seg_start=seg_start[flat], seg_len=seg_len[flat])


def _ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenated aranges: start_i, start_i + 1, ..., start_i + count_i - 1."""
    total = int(counts.sum())
    first = np.cumsum(counts) - counts
    return np.repeat(starts - first, counts) + np.arange(total, dtype=np.int64)


class BatchLoader:
    """Deterministic, resumable batches over the sequences of one split.

    `tokens` is the corpus token array (a memmap is read lazily); `offsets`/`lengths`
    locate the split's sequences in it. Each call to `next_step()` takes
    `batch_size x world_size x accum_steps` rows from the plan (wrapping into the next
    epoch) and returns this process's `accum_steps` micro-batches.
    """

    def __init__(
        self,
        tokens: np.ndarray,
        offsets: np.ndarray,
        lengths: np.ndarray,
        config: LoaderConfig,
        *,
        rank: int = 0,
        world_size: int = 1,
        accum_steps: int = 1,
        source: str = "corpus",
        context_only_ids: np.ndarray | None = None,
        times: np.ndarray | None = None,
        roles: tuple[str, ...] = (),
    ) -> None:
        offsets = np.asarray(offsets, dtype=np.int64)
        lengths = np.asarray(lengths, dtype=np.int64)
        if len(offsets) != len(lengths):
            raise CorpusError(f"{source}: offsets and lengths differ in count")
        if len(lengths) == 0:
            raise CorpusError(f"{source}: the split has no sequences to train on")
        if (lengths < 2).any():
            raise CorpusError(f"{source}: a sequence is shorter than [BOS] [EOS]")
        if (offsets < 0).any() or int((offsets + lengths).max()) > len(tokens):
            raise CorpusError(f"{source}: index points past the end of tokens.bin")
        if not 0 <= rank < world_size or accum_steps < 1:
            raise ConfigError(f"invalid rank {rank} / world {world_size} / accum {accum_steps}")
        self.tokens = tokens
        self.offsets = offsets
        self.lengths = lengths
        self.config = config
        self.rank = rank
        self.world_size = world_size
        self.accum_steps = accum_steps
        self.source = source
        # Conditioning tokens: read as context, never a target (seqlm.corpus.conditioning).
        ids = np.asarray(context_only_ids if context_only_ids is not None else [], np.int64)
        self.context_only_ids = ids
        self._position = DataPosition()
        self._plans: dict[int, EpochPlan] = {}
        if config.shuffle_simultaneous:
            self.times = check_shufflable(times, source)
            self.movable, self.continues = movable_roles(roles)
            if not any_simultaneous(tokens, self.times, offsets, lengths, self.movable):
                warnings.warn(
                    f"{source}: train.shuffle_simultaneous changes nothing here: no two "
                    "events next to each other share a timestamp",
                    stacklevel=2,
                )

    @classmethod
    def from_corpus(
        cls, corpus: Any, split: str, config: LoaderConfig, **kwargs: Any
    ) -> BatchLoader:
        """Batches over `corpus.split(split)` (a `seqlm.corpus.Corpus`)."""
        rows = corpus.split(split)
        if rows.height == 0:
            raise CorpusError(f"{corpus.path}: split {split!r} has no sequences")
        return cls(
            corpus.tokens,
            rows["offset"].to_numpy(),
            rows["length"].to_numpy(),
            config,
            source=f"{corpus.path} [{split}]",
            context_only_ids=corpus.vocabulary.condition_ids,
            times=corpus.times,
            roles=corpus.vocabulary.roles if config.shuffle_simultaneous else (),
            **kwargs,
        )

    @property
    def rows_per_step(self) -> int:
        return self.config.batch_size * self.world_size * self.accum_steps

    @property
    def position(self) -> DataPosition:
        return self._position

    def seek(self, position: DataPosition) -> None:
        if position.epoch < 0 or position.row < 0:
            raise CorpusError(f"{self.source}: invalid data position {position}")
        if position.row > self.plan(position.epoch).n_rows:
            raise CorpusError(
                f"{self.source}: data position {position} is past the end of its epoch; "
                "was the corpus or the loader config changed since the checkpoint?"
            )
        self._position = position

    def plan(self, epoch: int) -> EpochPlan:
        if epoch not in self._plans:
            # Keep only the current and next epoch's plans; older ones are not revisited.
            for old in [e for e in self._plans if e < epoch - 1]:
                del self._plans[old]
            self._plans[epoch] = plan_epoch(self.offsets, self.lengths, self.config, epoch)
        return self._plans[epoch]

    def epoch_rows(self, epoch: int = 0) -> int:
        return self.plan(epoch).n_rows

    def _take_rows(self, count: int) -> list[tuple[EpochPlan, np.ndarray]]:
        """The next `count` rows as (plan, row numbers) chunks, advancing the position."""
        chunks = []
        epoch, row = self._position.epoch, self._position.row
        while count > 0:
            plan = self.plan(epoch)
            if row >= plan.n_rows:
                epoch, row = epoch + 1, 0
                continue
            take = min(count, plan.n_rows - row)
            chunks.append((plan, np.arange(row, row + take, dtype=np.int64)))
            row += take
            count -= take
        self._position = DataPosition(epoch, row)
        return chunks

    def next_step(self) -> StepBatches:
        epoch = self._position.epoch
        chunks = self._take_rows(self.rows_per_step)
        seg_start, seg_len, seg_row = _segments_of_rows(chunks)
        rows = self.rows_per_step
        b = self.config.batch_size
        micro = []
        for a in range(self.accum_steps):
            first = (a * self.world_size + self.rank) * b
            mine = (seg_row >= first) & (seg_row < first + b)
            micro.append(
                self._materialize(seg_start[mine], seg_len[mine], seg_row[mine] - first, b, epoch)
            )
        return StepBatches(
            micro=micro,
            global_targets=int((seg_len - 1).sum())
            - self._context_only_targets(seg_start, seg_len),
            global_tokens=int(seg_len.sum()) - rows,
        )

    def _context_only_targets(self, seg_start: np.ndarray, seg_len: np.ndarray) -> int:
        """Targets (every token of a segment but its first) that are context-only ids."""
        if self.context_only_ids.size == 0 or seg_len.size == 0:
            return 0
        targets = self.tokens[_ranges(seg_start + 1, seg_len - 1)]
        return int(np.isin(targets, self.context_only_ids).sum())

    def _row_width(self, fill: np.ndarray) -> int:
        if self.config.packing == "packed" or self.config.pad_to_context:
            return self.config.context + 1
        return int(fill.max())

    def _materialize(
        self,
        seg_start: np.ndarray,
        seg_len: np.ndarray,
        seg_row: np.ndarray,
        n_rows: int,
        epoch: int = 0,
    ) -> Batch:
        fill = np.bincount(seg_row, weights=seg_len, minlength=n_rows).astype(np.int64)
        width = self._row_width(fill)
        # Column of each segment's first token: segments are in row order already.
        row_first_seg = np.searchsorted(seg_row, np.arange(n_rows))
        seg_rank = np.arange(len(seg_row)) - row_first_seg[seg_row]
        before = np.cumsum(seg_len) - seg_len  # tokens of earlier segments in the step
        seg_col = before - before[row_first_seg[seg_row]]
        within = _ranges(np.zeros(len(seg_len), dtype=np.int64), seg_len)
        tok_row = np.repeat(seg_row, seg_len)
        tok_col = np.repeat(seg_col, seg_len) + within

        window = np.full((n_rows, width), PAD_ID, dtype=np.int64)
        window[tok_row, tok_col] = self._read(seg_start, seg_len, epoch)
        # Padding gets a segment id of its own, after the row's last segment.
        segments_in_row = np.bincount(seg_row, minlength=n_rows)
        doc = np.repeat(segments_in_row[:, None], width, axis=1)
        doc[tok_row, tok_col] = np.repeat(seg_rank, seg_len)
        pos = np.zeros((n_rows, width), dtype=np.int64)
        pos[tok_row, tok_col] = within
        is_token = np.zeros((n_rows, width), dtype=bool)
        is_token[tok_row, tok_col] = True

        same_segment = (doc[:, 1:] == doc[:, :-1]) & is_token[:, 1:]
        targets = np.where(same_segment, window[:, 1:], IGNORE_INDEX)
        if self.context_only_ids.size:
            targets[np.isin(targets, self.context_only_ids)] = IGNORE_INDEX
        # With one segment per row, positions are 0..T-1 and padding only follows the
        # segment, so the model's plain causal attention (its fast path) is the same.
        packed = self.config.packing == "packed" and int(segments_in_row.max()) > 1
        return Batch(
            idx=torch.from_numpy(window[:, :-1]),
            targets=torch.from_numpy(targets),
            doc_ids=torch.from_numpy(np.ascontiguousarray(doc[:, :-1])) if packed else None,
            position_ids=torch.from_numpy(np.ascontiguousarray(pos[:, :-1])) if packed else None,
            n_targets=int((seg_len - 1).sum()) - self._context_only_targets(seg_start, seg_len),
            n_tokens=int(fill.sum()) - n_rows,
        )

    def _read(self, seg_start: np.ndarray, seg_len: np.ndarray, epoch: int) -> np.ndarray:
        """The segments' tokens, simultaneous events reordered when the config asks."""
        positions = _ranges(seg_start, seg_len)
        tokens = np.asarray(self.tokens[positions])
        if not self.config.shuffle_simultaneous:
            return tokens
        segment = np.repeat(np.arange(len(seg_len)), seg_len)
        return shuffle_simultaneous(
            tokens,
            positions,
            np.asarray(self.times[positions]),
            segment,
            self.movable,
            self.continues,
            seed=self.config.seed,
            epoch=epoch,
        )

    def steps(self, count: int) -> Iterator[StepBatches]:
        for _ in range(count):
            yield self.next_step()


def _segments_of_rows(
    chunks: list[tuple[EpochPlan, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Segments of the taken rows, with each segment's row number within the step."""
    starts, lens, rows = [], [], []
    row_base = 0
    for plan, row_numbers in chunks:
        counts = plan.row_ptr[row_numbers + 1] - plan.row_ptr[row_numbers]
        seg = _ranges(plan.row_ptr[row_numbers], counts)
        starts.append(plan.seg_start[seg])
        lens.append(plan.seg_len[seg])
        rows.append(np.repeat(np.arange(len(row_numbers), dtype=np.int64) + row_base, counts))
        row_base += len(row_numbers)
    return np.concatenate(starts), np.concatenate(lens), np.concatenate(rows)
