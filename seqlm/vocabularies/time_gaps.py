"""Time-gap tokens: the time between consecutive timed events, as `[TIME//<label>]` tokens.

Edges are durations with readable labels (`80ms`, `5m`, `2h`, `30d`, `6mo`). The rule
for a gap `g` (seconds) before an event, measured from the entity's previous timed
event (static rows have no time and get no gap):

- `g` below the first edge: no token (events close in time stay adjacent);
- otherwise the token of the largest edge `<= g`;
- gaps of at least the last edge `L` are written as `floor(g / L)` copies of the last
  token followed by the token of the remainder `g - floor(g / L) * L` (none when the
  remainder is below the first edge), so the tokens always add up to the gap to
  within one bin;
- but a gap of more than `max_repeats` last edges is one `[TIME//long]` token (as
  ETHOS and MEDS_EIC_AR cap theirs): a year-9999 date or a 1e13 s timestamp costs one
  token, not hundreds of thousands, and no count can overflow.

Clinical sequences use minutes to months; birdsong uses the same mechanism with
sub-second edges for the silences between syllables.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from seqlm.errors import ConfigError

# Time-gap tokens are `[TIME//<label>]`; scheme.py reads the prefix from here.
TIME_TOKEN_PREFIX = "[TIME//"

# Seconds per unit. A month is 30 days and a year 365 days: these are bin edges, not
# calendar arithmetic.
DURATION_UNITS: dict[str, float] = {
    "us": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "min": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 7 * 86400.0,
    "mo": 30 * 86400.0,
    "y": 365 * 86400.0,
}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$")


def is_unitless(label: str) -> bool:
    """A plain number (`4`, `0.5`): an edge for corpora whose time is unitless (index)."""
    match = _DURATION.match(str(label))
    return match is not None and match.group(2) == ""


def parse_duration(label: str) -> float:
    """Seconds in a duration label such as `80ms`, `1.5s`, `5m`, `2h`, `30d`, `6mo`; a
    plain number (`4`) is that many time units, for corpora with unitless (index) time."""
    match = _DURATION.match(str(label))
    if match is not None and match.group(2) == "":
        return float(match.group(1))
    if match is None or match.group(2) not in DURATION_UNITS:
        units = ", ".join(DURATION_UNITS)
        raise ConfigError(
            f"time-gap edge {label!r} is not a duration like 80ms, 5m or 2h (units: {units})"
        )
    return float(match.group(1)) * DURATION_UNITS[match.group(2)]


# Repeats of the last edge's token allowed per gap before the gap is one long-gap token
# (10 x 6 months = 5 years for the clinical edges).
DEFAULT_MAX_REPEATS = 10
LONG_GAP_LABEL = "long"  # never a duration label, so it cannot clash with an edge


def time_token(label: str) -> str:
    return f"{TIME_TOKEN_PREFIX}{label}]"


@dataclass(frozen=True)
class TimeGapTokens:
    """Gap edges in seconds (strictly increasing, positive), their labels, and how many
    last-edge tokens one gap may take before it is one long-gap token."""

    edges: tuple[float, ...]
    labels: tuple[str, ...]
    max_repeats: int = DEFAULT_MAX_REPEATS

    @classmethod
    def from_labels(
        cls, labels: tuple[str, ...] | list[str], max_repeats: int = DEFAULT_MAX_REPEATS
    ) -> TimeGapTokens:
        if not labels:
            raise ConfigError("time-gap tokens need at least one edge")
        if max_repeats < 1:
            raise ConfigError(f"time-gap max repeats must be at least 1, got {max_repeats}")
        clean = tuple(str(label).strip() for label in labels)
        edges = tuple(parse_duration(label) for label in clean)
        for label, edge in zip(clean, edges, strict=True):
            if edge <= 0:
                raise ConfigError(f"time-gap edge {label!r} must be longer than zero")
        for i in range(1, len(edges)):
            if edges[i] <= edges[i - 1]:
                raise ConfigError(
                    f"time-gap edges must increase: {clean[i - 1]!r} is not shorter "
                    f"than {clean[i]!r}"
                )
        return cls(edges=edges, labels=clean, max_repeats=max_repeats)

    @property
    def tokens(self) -> list[str]:
        """One token per edge, shortest first, then the long-gap token."""
        return [time_token(label) for label in self.labels] + [self.long_token]

    @property
    def long_token(self) -> str:
        return time_token(LONG_GAP_LABEL)

    @property
    def long_gap_seconds(self) -> float:
        """Gaps above this many seconds are one long-gap token."""
        return (self.max_repeats + 1) * self.edges[-1]

    def interval(self, token: str) -> tuple[float, float]:
        """The gaps in seconds `[low, high)` that one occurrence of `token` stands for.

        The last token stands for exactly its edge when repeated, and for gaps from its
        edge up to twice it otherwise; `high` is its edge's successor or the last edge
        doubled, so a gap can be rebuilt as the sum of interval centres.
        """
        if token not in self.tokens:
            raise ConfigError(f"{token!r} is not one of this scheme's time tokens")
        if token == self.long_token:  # open-ended: its centre is its lower edge
            return (self.long_gap_seconds, float("inf"))
        i = self.tokens.index(token)
        high = self.edges[i + 1] if i + 1 < len(self.edges) else 2 * self.edges[-1]
        return (self.edges[i], high)

    def gap_tokens(self, gap_seconds: float | None) -> list[str]:
        """The tokens for one gap (the rule in the module docstring)."""
        gap = np.array([np.nan if gap_seconds is None else gap_seconds], dtype=np.float64)
        repeats, remainder = self.split_gaps(gap)
        tokens = [self.tokens[len(self.edges) - 1]] * int(repeats[0])
        if remainder[0] >= 0:
            tokens.append(self.tokens[remainder[0]])
        return tokens

    def split_gaps(self, gaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Vectorised rule: per gap (seconds, NaN for none) the number of repeated last
        tokens (int64) and the index into `tokens` of the remainder's token (int64, -1 for
        none; the long-gap token's index for a gap beyond `max_repeats` last edges)."""
        gaps = np.asarray(gaps, dtype=np.float64)
        last = self.edges[-1]
        with np.errstate(invalid="ignore"):
            valid = ~np.isnan(gaps) & (gaps >= self.edges[0])
        # Only the gaps that get a token are worked on (most events share their time
        # with the one before: MIMIC, nine in ten).
        safe = gaps[valid]
        # Floats until capped: an infinite or huge gap never reaches an int64 cast.
        whole = np.floor(safe / last)
        long = whole > self.max_repeats
        counts = np.where(long, 0.0, whole).astype(np.int64)
        remainder = np.where(long, 0.0, safe - counts * last)
        found = np.searchsorted(np.asarray(self.edges), remainder, side="right") - 1
        repeats = np.zeros(len(gaps), dtype=np.int64)
        repeats[valid] = counts
        index = np.full(len(gaps), -1, dtype=np.int64)
        index[valid] = np.where(long, len(self.edges), found)
        return repeats, index
