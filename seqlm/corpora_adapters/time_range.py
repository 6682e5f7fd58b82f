"""Plausible time ranges: a timestamp outside them is a counted reject, not an event.

One far-future date (year 9999) or a 1e13 s timestamp would otherwise stretch a
sequence's time axis by millennia; time-gap tokens are capped (`[TIME//long]`), but
such a time is almost always a data error, so adapters reject the row with the reason
`TIME_RANGE_REASON` and the bounds are options (`earliest_time`, `latest_time` for
datetimes, `max_abs_seconds` for numeric times).
"""

from __future__ import annotations

from datetime import datetime

import polars as pl

from seqlm.errors import ConfigError

TIME_RANGE_REASON = "time outside plausible range"
# Wide enough for shifted research extracts (MIMIC dates run to about 2210).
DEFAULT_EARLIEST = "1800-01-01"
DEFAULT_LATEST = "2400-01-01"
# About 3,170 years in seconds: epoch seconds fit, epoch milliseconds (1.7e12) do not.
DEFAULT_MAX_ABS_SECONDS = 1e11

EARLIEST_HELP = "rows timed before this date (ISO 8601) are rejected as implausible"
LATEST_HELP = "rows timed after this date (ISO 8601) are rejected as implausible"
MAX_SECONDS_HELP = "rows whose numeric time exceeds this many seconds (either sign) are rejected"


def parse_bound(text: str, option: str) -> datetime:
    """An ISO 8601 date or datetime option, or a ConfigError naming the option."""
    try:
        return datetime.fromisoformat(str(text)).replace(tzinfo=None)
    except ValueError:
        raise ConfigError(f"option {option!r}: {text!r} is not an ISO 8601 date") from None


def check_bounds(earliest: str, latest: str) -> None:
    if parse_bound(earliest, "earliest_time") >= parse_bound(latest, "latest_time"):
        raise ConfigError(f"option 'earliest_time' ({earliest}) must be before 'latest_time'")


def datetime_outside(time: pl.Expr, earliest: str, latest: str) -> pl.Expr:
    """True where a (naive UTC) datetime lies outside [earliest, latest]; null stays null."""
    low = pl.lit(parse_bound(earliest, "earliest_time"), dtype=pl.Datetime("us"))
    high = pl.lit(parse_bound(latest, "latest_time"), dtype=pl.Datetime("us"))
    return (time < low) | (time > high)


def seconds_outside(time: pl.Expr, max_abs_seconds: float) -> pl.Expr:
    """True where a numeric time in seconds exceeds `max_abs_seconds` in magnitude."""
    return time.abs() > max_abs_seconds
