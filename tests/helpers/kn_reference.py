"""A slow, obviously-correct Kneser-Ney model with dictionaries of tuples.

Written straight from the formulas in `seqlm.evaluation.ngram`'s docstring, sharing no
code with it, so the tests can check the fast array implementation against it.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict

BOS = 1
NEVER_PREDICTED = {0, 1}


def discounts_from(counts: Counter) -> tuple[float, float, float]:
    """Chen & Goodman's D1, D2, D3+ with the documented fallback for tiny data."""
    histogram = Counter(counts.values())
    n1, n2, n3, n4 = (histogram[k] for k in (1, 2, 3, 4))
    y = n1 / (n1 + 2 * n2) if n1 > 0 else 0.5

    def pick(value: float | None) -> float:
        return value if value is not None and value > 0 else y

    d1 = pick(1 - 2 * y * n2 / n1 if n1 else None)
    d2 = pick(2 - 3 * y * n3 / n2 if n2 else None)
    d3 = pick(3 - 4 * y * n4 / n3 if n3 else None)
    return d1, d2, d3


class ReferenceKneserNey:
    def __init__(self, train: list[list[int]], vocab_size: int, order: int) -> None:
        self.order = order
        self.vocab_size = vocab_size
        occurrences: dict[int, Counter] = {m: Counter() for m in range(1, order + 1)}
        for seq in train:
            padded = [BOS] * (order - 1) + list(seq)
            for j in range(order, len(padded)):  # padded[order-1] is the sequence's BOS
                for m in range(1, order + 1):
                    occurrences[m][tuple(padded[j - m + 1 : j + 1])] += 1
        self.levels = []
        for m in range(1, order + 1):
            if m == order:
                counts = occurrences[m]
            else:
                counts = Counter()
                for longer in occurrences[m + 1]:
                    counts[longer[1:]] += 1
            d = discounts_from(counts)
            total: dict[tuple, float] = defaultdict(float)
            by_kind: dict[tuple, list[int]] = defaultdict(lambda: [0, 0, 0])
            for gram, c in counts.items():
                total[gram[:-1]] += c
                by_kind[gram[:-1]][min(c, 3) - 1] += 1
            self.levels.append((counts, d, dict(total), dict(by_kind)))
        self.support = vocab_size - len(NEVER_PREDICTED)

    def prob(self, history: list[int], token: int) -> float:
        padded = [BOS] * (self.order - 1) + list(history)
        p = 0.0 if token in NEVER_PREDICTED else 1.0 / self.support
        for m in range(1, self.order + 1):
            counts, d, total, by_kind = self.levels[m - 1]
            context = tuple(padded[len(padded) - (m - 1) :]) if m > 1 else ()
            if context not in total:
                continue
            c = counts.get(context + (token,), 0)
            discounted = max(c - d[min(c, 3) - 1], 0.0) if c > 0 else 0.0
            n1, n2, n3 = by_kind[context]
            gamma = (d[0] * n1 + d[1] * n2 + d[2] * n3) / total[context]
            p = discounted / total[context] + gamma * p
        return p

    def log_probs(self, sequences: list[list[int]]) -> list[float]:
        out = []
        known: dict[tuple, float] = {}  # song repeats its contexts: compute each once
        for seq in sequences:
            for i in range(1, len(seq)):
                history = tuple(seq[max(0, i - self.order + 1) : i])  # all the context needs
                key = (history, seq[i])
                if key not in known:
                    known[key] = math.log(self.prob(list(history), seq[i]))
                out.append(known[key])
        return out
