"""The training budget and the counters it is measured against, in one place.

A budget is any of steps, tokens or wall-clock minutes (the first limit reached ends
training). Its `progress` drives the learning-rate decay, so a budget in tokens or
minutes decays to zero at its end exactly as a budget in steps does. New budget kinds
(FLOPs, reference system time) add a counter here and a fraction in `fractions`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from seqlm.errors import ConfigError, CorpusError


@dataclass
class Counters:
    """How much training has been done, over all processes, since the run started.

    `tokens` counts tokens read (one less than each row's filled length: a full packed
    row counts `context`), `targets` the tokens the loss was taken on; `elapsed_s` is
    training wall-clock time, carried across resumes.
    """

    step: int = 0
    tokens: int = 0
    targets: int = 0
    elapsed_s: float = 0.0

    def advance(self, tokens: int, targets: int) -> None:
        self.step += 1
        self.tokens += tokens
        self.targets += targets

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Counters:
        try:
            return cls(
                step=int(data["step"]),
                tokens=int(data["tokens"]),
                targets=int(data["targets"]),
                elapsed_s=float(data["elapsed_s"]),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise CorpusError(f"invalid training counters {data!r}: {err}") from None


@dataclass(frozen=True)
class Budget:
    """Limits on training; None means no limit of that kind. At least one is set."""

    steps: int | None = None
    tokens: int | None = None
    seconds: float | None = None

    def __post_init__(self) -> None:
        limits = {"steps": self.steps, "tokens": self.tokens, "seconds": self.seconds}
        if all(v is None for v in limits.values()):
            raise ConfigError("a training budget needs steps, tokens or minutes")
        for name, value in limits.items():
            if value is not None and value <= 0:
                raise ConfigError(f"budget {name} must be positive, got {value}")

    @property
    def uses_wall_clock(self) -> bool:
        return self.seconds is not None

    def fractions(self, counters: Counters) -> dict[str, float]:
        """Fraction of each limit used so far."""
        used = {}
        if self.steps is not None:
            used["steps"] = counters.step / self.steps
        if self.tokens is not None:
            used["tokens"] = counters.tokens / self.tokens
        if self.seconds is not None:
            used["seconds"] = counters.elapsed_s / self.seconds
        return used

    def progress(self, counters: Counters) -> float:
        """How far through the budget training is, in [0, 1]: the most-used limit."""
        return min(1.0, max(self.fractions(counters).values()))

    def exhausted(self, counters: Counters) -> bool:
        return self.progress(counters) >= 1.0

    def bar_total(self) -> tuple[str, float]:
        """What a progress bar counts ("steps", "tokens" or "seconds") and its total."""
        if self.steps is not None:
            return "steps", float(self.steps)
        if self.tokens is not None:
            return "tokens", float(self.tokens)
        return "seconds", float(self.seconds or 0.0)

    def bar_position(self, counters: Counters) -> float:
        unit, _ = self.bar_total()
        return {
            "steps": float(counters.step),
            "tokens": float(counters.tokens),
            "seconds": counters.elapsed_s,
        }[unit]
