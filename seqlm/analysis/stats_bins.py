"""Bins for the attention statistics: token-distance edges, log-spaced elapsed-time edges
(sub-second for song, clock and calendar units for clinical events) and their labels."""

from __future__ import annotations

import math

from seqlm.durations import format_seconds  # re-exported: analysis callers import it here
from seqlm.errors import ConfigError


def distance_bin_edges(context: int) -> tuple[int, ...]:
    """Bin edges for token distances 0..context-1: one bin per distance up to 16, then
    half-octave edges (16, 23, 32, 45, 64, ...) below `context`.

    Unit bins near zero let a planted dependency at distance d show as a peak at d; the
    coarser bins further out keep the table short for long contexts.
    """
    if context < 1:
        raise ConfigError(f"context must be at least 1, got {context}")
    edges = list(range(min(context, 17)))
    exponent = 8  # 2 ** (8 / 2) = 16
    while True:
        exponent += 1
        edge = round(2 ** (exponent / 2))
        if edge >= context:
            break
        edges.append(edge)
    return tuple(edges)


def chosen_distance_edges(edges: tuple[int, ...]) -> tuple[int, ...]:
    """Distance bin edges a user chose (e.g. (3990, 4010), a band around a planted
    distance): 0 is put first when missing; they must be >= 0 and increase."""
    if not edges:
        raise ConfigError("--distance-edges: give at least one edge, e.g. 3990,4010")
    values = list(edges) if edges[0] == 0 else [0, *edges]
    if any(b <= a for a, b in zip(values, values[1:], strict=False)):
        raise ConfigError(f"--distance-edges: {list(edges)} must be positive and increase")
    return tuple(values)


# Above 10 s the ladder follows clock and calendar units (so labels read "6 h", "2 d",
# "30 d"), still about three steps per decade: 10 s ... 1 min ... 1 h ... 1 d ... 1 y.
_CLOCK_EDGES: tuple[float, ...] = tuple(
    float(v)
    for v in (
        *(10, 20, 30),
        *(m * 60 for m in (1, 2, 5, 10, 20, 30)),
        *(h * 3600 for h in (1, 2, 6, 12)),
        *(d * 86400 for d in (1, 2, 4, 7, 14, 30, 60, 180)),
        *(y * 365 * 86400 for y in (1, 2, 5, 10, 20, 50, 100)),
    )
)


def time_bin_edges(shortest: float, longest: float, unit: str = "s") -> tuple[float, ...]:
    """0, then log-spaced edges from the largest ladder value <= `shortest` to the largest
    <= `longest` (seconds): 1-2-5 per decade below 10 s (sub-second for song), clock and
    calendar units above (minutes, hours, days for clinical events). The last bin is
    open: [last edge, inf). With `unit = "index"` (unitless time) the ladder is 1-2-5 per
    decade throughout."""
    if not (math.isfinite(shortest) and math.isfinite(longest)) or shortest <= 0:
        raise ConfigError(f"time bins need 0 < shortest <= longest, got {shortest}, {longest}")
    longest = max(longest, shortest)
    low = min(math.floor(math.log10(shortest)) - 1, 0)
    high = 1 if unit != "index" else max(math.ceil(math.log10(longest)) + 1, 1)
    # parsed from decimal text, so 5e-3 is exactly the float a person would type
    ladder = [float(f"{step}e{decade}") for decade in range(low, high) for step in (1, 2, 5)]
    if unit != "index":
        ladder += list(_CLOCK_EDGES)
        ladder += [
            _CLOCK_EDGES[-1] * 2**k for k in range(1, 64) if _CLOCK_EDGES[-1] * 2**k <= longest
        ]
    tolerance = 1 + 1e-9
    first = max((edge for edge in ladder if edge <= shortest * tolerance), default=ladder[0])
    return (0.0, *(edge for edge in ladder if first <= edge <= longest * tolerance))


def format_time(value: float, unit: str = "s") -> str:
    """`format_seconds` for times in seconds; a plain number for unitless (index) time."""
    if unit != "index":
        return format_seconds(value)
    return "inf" if not math.isfinite(value) else f"{value:.3g}"


def time_axis_unit(unit: str = "s") -> str:
    """The unit as axis labels and headers name it: `s`, or `index units`."""
    return "index units" if unit == "index" else "s"
