"""Interpolated modified Kneser-Ney n-gram language model over token ids.

The smoothing is Chen & Goodman's *interpolated modified* Kneser-Ney:

    P_m(w | h) = (c_m(h w) - D_m(c_m(h w))) / c_m(h .) + gamma_m(h) * P_{m-1}(w | h')
    gamma_m(h) = (D_m1 N1(h .) + D_m2 N2(h .) + D_m3+ N3+(h .)) / c_m(h .)

for a context h of length m-1 seen in training (h' drops its oldest token); an unseen
context passes the lower order through unchanged, and P_0 is uniform over every id that
can be predicted (all but `[PAD]` and `[BOS]`), so held-out perplexity stays finite even
for ids never seen in training. `c_m` is the raw count at the model's own order and the
continuation count (how many distinct ids precede the n-gram) below it. The three
discounts per order come from that order's count-of-counts n1..n4:
Y = n1 / (n1 + 2 n2), D_k = k - (k+1) Y n_{k+1} / n_k; on tiny data, where n_k is zero or
D_k would not be positive, D_k falls back to Y (and Y to 0.5 when n1 is zero).

Contexts are padded with `[BOS]` at the sequence start, so every predicted position has
a full-length context and `[BOS] [BOS] a` is an ordinary trigram.

Speed: n-grams are never materialised as tuples. A context of length k is identified by
an integer id, built from its length-(k-1) suffix's id and the token added on the left
(key = suffix_id * V + token, made dense by `np.unique`), so every order costs a few
sorts of int64 arrays, exactly and without hash collisions.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from seqlm.errors import ConfigError, CorpusError
from seqlm.evaluation.scores import (
    NEVER_PREDICTED_IDS,
    PredictionTargets,
    TokenScores,
    prediction_targets,
)
from seqlm.progress import Progress, ensure_progress
from seqlm.vocabularies.scheme import BOS_ID

DEFAULT_MAX_ORDER = 8
# Distinct distributions are ranked in chunks of about this many sparse entries.
SPARSE_BUDGET_ENTRIES = 2_000_000
# Cells (rows x vocabulary) of one chunk of dense rows in `probability_rows`.
_DENSE_CELLS = 1 << 23


@dataclass(frozen=True)
class NgramCounts:
    """Every n-gram of orders 1..max_order in a training set.

    Per context length k (0..max_order-1): `context_keys[k]`, sorted, the key of each
    distinct context (its position in this array is its id). Per order m (index m-1):
    `ngram_keys` sorted keys `context_id * V + token`, so one context's n-grams are
    contiguous from `context_start[m-1][id]`; `raw_counts`; and `continuation_counts`
    (distinct left neighbours; absent for the top order, which has none stored).
    """

    vocab_size: int
    max_order: int
    n_targets: int
    context_keys: tuple[np.ndarray, ...]
    ngram_keys: tuple[np.ndarray, ...]
    context_start: tuple[np.ndarray, ...]
    raw_counts: tuple[np.ndarray, ...]
    continuation_counts: tuple[np.ndarray, ...]
    # Ids left out as targets (conditioning tokens: context only); a model built on these
    # counts gives them no probability, like [PAD] and [BOS].
    excluded_targets: tuple[int, ...] = ()

    def ngram_context(self, order: int) -> np.ndarray:
        return self.ngram_keys[order - 1] // self.vocab_size

    def ngram_token(self, order: int) -> np.ndarray:
        return self.ngram_keys[order - 1] % self.vocab_size


def count_ngrams(
    sequences: Sequence[np.ndarray],
    vocab_size: int,
    max_order: int = DEFAULT_MAX_ORDER,
    progress: Progress | None = None,
    context_only_ids: Sequence[int] | np.ndarray = (),
) -> NgramCounts:
    """Count the n-grams (orders 1..max_order) ending at every predicted position.

    Positions whose token is in `context_only_ids` are not counted as targets (they stay
    in the contexts of the tokens after them): a model that never has to predict a
    conditioning token should not spend probability on it, as the GPT does not.
    """
    if max_order < 1:
        raise ConfigError(f"n-gram order must be at least 1, got {max_order}")
    excluded = tuple(sorted({int(i) for i in np.asarray(context_only_ids).reshape(-1)}))
    targets = prediction_targets(sequences, vocab_size).without_tokens(excluded)
    if len(targets) == 0:
        raise CorpusError("no tokens to count: every training sequence is empty ([BOS] only)")
    bar = ensure_progress(progress)
    bar.start("counting n-grams", total=max_order)
    v = vocab_size
    context_id = np.zeros(len(targets), dtype=np.int64)
    context_keys: list[np.ndarray] = [np.zeros(1, dtype=np.int64)]
    ngram_keys: list[np.ndarray] = []
    raw_counts: list[np.ndarray] = []
    continuation: list[np.ndarray] = []
    previous_ngram_id: np.ndarray | None = None
    for order in range(1, max_order + 1):
        keys, ngram_id, counts = np.unique(
            context_id * v + targets.token, return_inverse=True, return_counts=True
        )
        ngram_keys.append(keys)
        raw_counts.append(counts.astype(np.int64))
        if previous_ngram_id is not None:
            # Each distinct n-gram of this order adds one left neighbour to its suffix.
            suffix_of = np.empty(keys.shape[0], dtype=np.int64)
            suffix_of[ngram_id] = previous_ngram_id
            n_lower = ngram_keys[order - 2].shape[0]
            continuation.append(np.bincount(suffix_of, minlength=n_lower).astype(np.int64))
        previous_ngram_id = ngram_id
        if order < max_order:
            extended = context_id * v + targets.context_token(order)
            unique_contexts, context_id = np.unique(extended, return_inverse=True)
            context_keys.append(unique_contexts)
        bar.advance()
    bar.finish()
    context_start = tuple(
        np.searchsorted(ngram_keys[k], np.arange(context_keys[k].shape[0] + 1) * v)
        for k in range(max_order)
    )
    return NgramCounts(
        vocab_size=v,
        max_order=max_order,
        n_targets=len(targets),
        context_keys=tuple(context_keys),
        ngram_keys=tuple(ngram_keys),
        context_start=context_start,
        raw_counts=tuple(raw_counts),
        continuation_counts=tuple(continuation),
        excluded_targets=excluded,
    )


def _log(probabilities: np.ndarray) -> np.ndarray:
    """Natural log; an excluded target (probability 0) gets -inf, which callers drop
    with `TokenScores.without_tokens` before any metric."""
    with np.errstate(divide="ignore"):
        return np.log(probabilities)


def modified_kn_discounts(counts: np.ndarray) -> np.ndarray:
    """The three discounts (for counts 1, 2, 3+) from one order's count-of-counts."""
    n = [int(np.count_nonzero(counts == k)) for k in (1, 2, 3, 4)]
    y = n[0] / (n[0] + 2 * n[1]) if n[0] > 0 else 0.5
    discounts = []
    for k in (1, 2, 3):
        d = k - (k + 1) * y * n[k] / n[k - 1] if n[k - 1] > 0 else 0.0
        discounts.append(d if d > 0 else y)
    return np.array(discounts, dtype=np.float64)


class KneserNeyModel:
    """An order-n interpolated modified Kneser-Ney model; a `Scorer`.

    Fit with `KneserNeyModel.fit(train_sequences, vocab_size, order)`, or share one
    `count_ngrams` pass between several orders with `KneserNeyModel(counts, order)`.
    """

    def __init__(
        self,
        counts: NgramCounts,
        order: int,
        never_predicted: Sequence[int] = NEVER_PREDICTED_IDS,
        name: str | None = None,
    ) -> None:
        if not 1 <= order <= counts.max_order:
            raise ConfigError(f"order must be in 1..{counts.max_order}, got {order}")
        self.counts = counts
        self.order = order
        self.name = name or f"{order}-gram KN"
        v = counts.vocab_size
        self.uniform = np.ones(v, dtype=np.float64)
        never = {*never_predicted, *counts.excluded_targets}
        self.uniform[[i for i in never if 0 <= i < v]] = 0.0
        self.uniform /= self.uniform.sum()
        discounts, alphas, gammas = [], [], []
        for m in range(1, order + 1):
            c = counts.raw_counts[m - 1] if m == order else counts.continuation_counts[m - 1]
            d = modified_kn_discounts(c)
            context = counts.ngram_context(m)
            n_contexts = counts.context_keys[m - 1].shape[0]
            per_ngram = d[np.minimum(c, 3) - 1]
            total = np.bincount(context, weights=c, minlength=n_contexts)
            alphas.append((c - per_ngram) / total[context])
            gammas.append(np.bincount(context, weights=per_ngram, minlength=n_contexts) / total)
            discounts.append(d)
        self.discounts = np.array(discounts)  # (order, 3): D1, D2, D3+ per order
        self._alpha = alphas
        self._gamma = gammas
        self._alpha_unigram = np.zeros(v, dtype=np.float64)
        self._alpha_unigram[counts.ngram_token(1)] = alphas[0]
        # Background levels for ranking: distinct alpha_1 values over predictable ids,
        # ascending, and how many ids sit at or above each level.
        support = np.flatnonzero(self.uniform > 0)
        self._levels, level_sizes = np.unique(self._alpha_unigram[support], return_counts=True)
        self._tail = np.concatenate([np.cumsum(level_sizes[::-1])[::-1], [0]])
        self._support_uniform = float(self.uniform[support[0]])

    @classmethod
    def fit(
        cls,
        sequences: Sequence[np.ndarray],
        vocab_size: int,
        order: int = 3,
        progress: Progress | None = None,
    ) -> KneserNeyModel:
        return cls(count_ngrams(sequences, vocab_size, order, progress), order)

    # -- probabilities --------------------------------------------------------------

    def _context_ids(self, preceding: np.ndarray) -> np.ndarray:
        """Ids of each row's contexts of length 0..order-1, -1 where unseen in training.

        `preceding[:, k-1]` is the id k places before the predicted position.
        """
        v = self.counts.vocab_size
        ids = np.empty((preceding.shape[0], self.order), dtype=np.int64)
        current = np.zeros(preceding.shape[0], dtype=np.int64)
        ids[:, 0] = 0
        for k in range(1, self.order):
            keys = self.counts.context_keys[k]
            wanted = current * v + preceding[:, k - 1]
            at = np.minimum(np.searchsorted(keys, wanted), keys.shape[0] - 1)
            current = np.where((current >= 0) & (keys[at] == wanted), at, -1)
            ids[:, k] = current
        return ids

    def _preceding(self, targets: PredictionTargets) -> np.ndarray:
        columns = [targets.context_token(k) for k in range(1, self.order)]
        return np.stack(columns, axis=1) if columns else np.zeros((len(targets), 0), np.int64)

    def _true_probs(self, context_ids: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """P(token | context) by the interpolation recursion, lowest order first."""
        v = self.counts.vocab_size
        probs = self.uniform[tokens]
        for m in range(1, self.order + 1):
            context = context_ids[:, m - 1]
            seen = context >= 0
            keys = self.counts.ngram_keys[m - 1]
            wanted = context * v + tokens
            at = np.minimum(np.searchsorted(keys, wanted), keys.shape[0] - 1)
            alpha = np.where(seen & (keys[at] == wanted), self._alpha[m - 1][at], 0.0)
            gamma = np.where(seen, self._gamma[m - 1][np.maximum(context, 0)], 1.0)
            probs = alpha + gamma * probs
        return probs

    def _row_weights(self, context_ids: np.ndarray) -> np.ndarray:
        """w_m per row: the product of the gammas of the orders above m (w_0 for uniform).

        Unrolling the recursion, a row is w_0 * uniform + sum_m w_m * alpha_m.
        """
        n = context_ids.shape[0]
        weights = np.empty((n, self.order + 1), dtype=np.float64)
        running = np.ones(n, dtype=np.float64)
        for m in range(self.order, 0, -1):
            weights[:, m] = running
            context = context_ids[:, m - 1]
            gamma = self._gamma[m - 1][np.maximum(context, 0)]
            running = running * np.where(context >= 0, gamma, 1.0)
        weights[:, 0] = running
        return weights

    def _sparse_terms(self, context_ids: np.ndarray, weights: np.ndarray, order: int):
        """(row, token, w_m * alpha_m) for every n-gram of `order` continuing a row's
        context; (row, token) pairs are distinct within one order."""
        seen = np.flatnonzero(context_ids[:, order - 1] >= 0)
        context = context_ids[seen, order - 1]
        starts = self.counts.context_start[order - 1][context]
        lengths = self.counts.context_start[order - 1][context + 1] - starts
        row_of = np.repeat(seen, lengths)
        first = np.repeat(np.cumsum(lengths) - lengths, lengths)
        ngram = np.repeat(starts, lengths) + np.arange(row_of.shape[0]) - first
        token = self.counts.ngram_keys[order - 1][ngram] % self.counts.vocab_size
        return row_of, token, weights[row_of, order] * self._alpha[order - 1][ngram]

    def _background(self, weights: np.ndarray, rows: np.ndarray, tokens: np.ndarray):
        """Row value of tokens from orders 1 and 0 only, rounded exactly as the dense row."""
        return (
            weights[rows, 1] * self._alpha_unigram[tokens] + weights[rows, 0] * self.uniform[tokens]
        )

    def _dense_rows(self, context_ids: np.ndarray) -> np.ndarray:
        """Full next-token distributions, one row per context-id row: the dense orders 1
        and 0, then each higher order's sparse continuations added in turn."""
        weights = self._row_weights(context_ids)
        rows = np.outer(weights[:, 1], self._alpha_unigram)
        rows += np.outer(weights[:, 0], self.uniform)
        for m in range(2, self.order + 1):
            row_of, token, value = self._sparse_terms(context_ids, weights, m)
            rows[row_of, token] += value
        return rows

    def probability_rows(
        self, sequences: Sequence[np.ndarray], progress: Progress | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(target rows, ascending; their full distributions) in chunks of target order:
        what `sequence_history` mixes a sequence's history into."""
        targets = prediction_targets(sequences, self.counts.vocab_size)
        ids = self._context_ids(self._preceding(targets))
        step = max(1, _DENSE_CELLS // self.counts.vocab_size)
        for low in range(0, len(targets), step):  # fast: no progress bar of its own
            rows = np.arange(low, min(low + step, len(targets)))
            yield rows, self._dense_rows(ids[rows])

    def next_token_distribution(self, preceding: Sequence[int]) -> np.ndarray:
        """P(. | preceding) over the whole vocabulary; `preceding` is the sequence so far
        (oldest first), padded with [BOS] on the left when shorter than the context."""
        history = list(preceding)[-(self.order - 1) :] if self.order > 1 else []
        padded = [BOS_ID] * (self.order - 1 - len(history)) + history
        row = np.array(padded[::-1], dtype=np.int64).reshape(1, self.order - 1)
        return self._dense_rows(self._context_ids(row))[0]

    def log_prob(self, sequences: Sequence[np.ndarray]) -> np.ndarray:
        """Natural log-probability of every predicted token, in sequence order."""
        targets = prediction_targets(sequences, self.counts.vocab_size)
        ids = self._context_ids(self._preceding(targets))
        return _log(self._true_probs(ids, targets.token))

    def perplexity(self, sequences: Sequence[np.ndarray]) -> float:
        log_prob = self.log_prob(sequences)
        if log_prob.size == 0:
            raise CorpusError("no tokens to score: every sequence is [BOS] only")
        return float(np.exp(-np.mean(log_prob)))

    # -- scoring --------------------------------------------------------------------

    def score(
        self, sequences: Sequence[np.ndarray], progress: Progress | None = None
    ) -> TokenScores:
        """Log-probability, rank counts and top-1 confidence of every predicted token.

        Positions are grouped by the deepest context seen in training, which alone fixes
        the distribution; each distinct distribution is handled once, without building
        its dense row (see `_rank_chunk`).
        """
        targets = prediction_targets(sequences, self.counts.vocab_size)
        n = len(targets)
        ids = self._context_ids(self._preceding(targets))
        log_prob = _log(self._true_probs(ids, targets.token))
        depth = np.count_nonzero(ids >= 0, axis=1) - 1
        distribution_key = ids[np.arange(n), depth] * self.order + depth
        _, first, inverse = np.unique(distribution_key, return_index=True, return_inverse=True)
        by_distribution = np.argsort(inverse, kind="stable")
        members_start = np.concatenate([[0], np.cumsum(np.bincount(inverse))])
        # Chunk the distinct distributions so their sparse entries stay within budget.
        sparse_size = np.ones(first.shape[0], dtype=np.int64)
        for m in range(2, self.order + 1):
            context = ids[first, m - 1]
            starts = self.counts.context_start[m - 1]
            seen = context >= 0
            sparse_size[seen] += starts[context[seen] + 1] - starts[context[seen]]
        cumulative = np.cumsum(sparse_size)
        bounds = [0]
        while bounds[-1] < first.shape[0]:
            limit = (cumulative[bounds[-1] - 1] if bounds[-1] else 0) + SPARSE_BUDGET_ENTRIES
            bounds.append(max(bounds[-1] + 1, int(np.searchsorted(cumulative, limit, "right"))))
        n_greater = np.empty(n, dtype=np.int64)
        n_tied = np.empty(n, dtype=np.int64)
        max_prob = np.empty(n, dtype=np.float64)
        bar = ensure_progress(progress)
        bar.start(f"scoring {self.name}", total=n)
        for low, high in zip(bounds[:-1], bounds[1:], strict=True):
            members = by_distribution[members_start[low] : members_start[high]]
            greater, tied, top = self._rank_chunk(
                ids[first[low:high]], inverse[members] - low, targets.token[members]
            )
            n_greater[members] = greater
            n_tied[members] = tied
            max_prob[members] = top
            bar.advance(members.shape[0])
        bar.finish()
        return TokenScores.of_targets(targets, log_prob, n_greater, n_tied, max_prob)

    def _rank_chunk(
        self, context_ids: np.ndarray, row: np.ndarray, token: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rank counts and top-1 probability for positions whose distribution is row
        `row` of `context_ids`; equal to comparing against the dense rows.

        A row is a background (orders 1 and 0, monotone in alpha_1, whose distinct values
        `_levels` are sorted once for all rows) plus sparse entries: the followers of
        the row's bigram context, which include every higher order's followers. Ids above
        a threshold = background ids above it (binary search over the levels) - sparse
        ids whose background is above it + sparse ids whose full value is above it.
        """
        v = self.counts.vocab_size
        weights = self._row_weights(context_ids)
        entry_row = np.zeros(0, dtype=np.int64)
        entry_token = np.zeros(0, dtype=np.int64)
        value = np.zeros(0, dtype=np.float64)
        if self.order >= 2:
            entry_row, entry_token, bigram_part = self._sparse_terms(context_ids, weights, 2)
        entry_keys = entry_row * v + entry_token  # sorted: rows ascend, tokens within rows
        background = self._background(weights, entry_row, entry_token)
        if self.order >= 2:
            value = background + bigram_part
        for m in range(3, self.order + 1):  # order by order, as the dense row adds them
            part_row, part_token, part = self._sparse_terms(context_ids, weights, m)
            value[np.searchsorted(entry_keys, part_row * v + part_token)] += part

        # The true id's value in its row: sparse when an entry exists, else background.
        threshold = self._background(weights, row, token)
        if entry_keys.size:
            want = row * v + token
            at = np.minimum(np.searchsorted(entry_keys, want), entry_keys.shape[0] - 1)
            found = entry_keys[at] == want
            threshold[found] = value[at[found]]

        def level_value(index: np.ndarray, level: np.ndarray) -> np.ndarray:
            r = row[index]
            return weights[r, 1] * self._levels[level] + weights[r, 0] * self._support_uniform

        n_levels = np.full(row.shape[0], self._levels.shape[0], dtype=np.int64)
        zero = np.zeros(row.shape[0], dtype=np.int64)
        above = self._tail[
            _first_true(zero, n_levels, lambda i, j: level_value(i, j) > threshold[i])
        ]
        at_least = self._tail[
            _first_true(zero, n_levels, lambda i, j: level_value(i, j) >= threshold[i])
        ]
        # Sparse corrections, comparing each position with its row's entries directly.
        segment = np.searchsorted(entry_row, np.arange(context_ids.shape[0] + 1))
        corrections = _sparse_corrections(row, segment, threshold, value, background)
        value_above, value_at_least, background_above, background_at_least = corrections
        n_greater = above - background_above + value_above
        n_equal = (at_least - above) - (background_at_least - background_above)
        n_equal += value_at_least - value_above

        row_max = weights[:, 1] * self._levels[-1] + weights[:, 0] * self._support_uniform
        has_entries = np.flatnonzero(segment[1:] > segment[:-1])
        if has_entries.size:
            row_max[has_entries] = np.maximum(
                row_max[has_entries], np.maximum.reduceat(value, segment[has_entries])
            )
        return n_greater, n_equal - 1, row_max[row]


def _sparse_corrections(
    row: np.ndarray,
    segment: np.ndarray,
    threshold: np.ndarray,
    value: np.ndarray,
    background: np.ndarray,
) -> np.ndarray:
    """Per position, how many sparse entries of its row have a full value > and >= its
    threshold, and a background value > and >= it: a (4, positions) count array.

    Row r's entries are `segment[r]:segment[r + 1]`. Positions are taken in chunks of
    about `SPARSE_BUDGET_ENTRIES` entries so the expanded arrays stay small.
    """
    corrections = np.zeros((4, row.shape[0]), dtype=np.int64)
    lengths = segment[row + 1] - segment[row]
    ends = np.cumsum(lengths)
    begin = 0
    while begin < row.shape[0]:
        done = ends[begin - 1] if begin else 0
        end = max(begin + 1, int(np.searchsorted(ends, done + SPARSE_BUDGET_ENTRIES, "right")))
        span = lengths[begin:end]
        owner = np.repeat(np.arange(begin, end), span)
        entry = np.repeat(segment[row[begin:end]], span)
        entry += np.arange(owner.shape[0]) - np.repeat(ends[begin:end] - span - done, span)
        limit = threshold[owner]
        # Each position's entries are contiguous, so per-position sums are reduceat.
        filled = np.flatnonzero(span > 0)
        starts = (ends[begin:end] - span - done)[filled]
        full, base = value[entry], background[entry]
        for k, hit in enumerate((full > limit, full >= limit, base > limit, base >= limit)):
            if starts.size:
                corrections[k, begin + filled] = np.add.reduceat(hit, starts, dtype=np.int64)
        begin = end
    return corrections


def _first_true(low: np.ndarray, high: np.ndarray, predicate) -> np.ndarray:
    """Per element, the first index in [low, high) where `predicate(element, index)`
    holds (high when nowhere); the predicate must be monotone (False... then True...)."""
    low, high = low.copy(), high.copy()
    active = np.flatnonzero(low < high)
    while active.size:
        middle = (low[active] + high[active]) // 2
        holds = predicate(active, middle)
        high[active[holds]] = middle[holds]
        low[active[~holds]] = middle[~holds] + 1
        active = active[low[active] < high[active]]
    return low
