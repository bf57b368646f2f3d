"""What the spike detector computes per metric and minute, and how it words a verdict (pure)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

UNITS = {"calls": "calls/min", "tokens": "tokens/min", "cost_usd": "USD/min"}


@dataclass(frozen=True)
class Expected:
    """What one metric's minute should look like, and how lumpy it is."""

    mean: float  # expected value this minute (natural units)
    phi: float  # variance / mean: units of one independent arrival
    level: float = 0.0  # the expectation without the minute-of-hour schedule
    arrivals: float = 0.0  # independent arrivals in an ordinary minute (learnt dispersion)

    @property
    def scheduled(self) -> bool:
        """The minute-of-hour schedule raised the expectation."""
        return self.mean > self.level


@dataclass(frozen=True)
class Step:
    """One minute's effect on a metric's evidence (computed once, used to score and learn)."""

    value: float
    expected: Expected
    cusum: list[list[float]]
    score: float
    detail: dict[str, Any]
    hold: bool  # a rise is building: keep this minute out of the baseline
    rising: bool = False  # a rise may be starting: keep this minute out of the level


def ratio_of(a: float, b: float) -> float | None:
    if b > 0:
        return a / b
    return math.inf if a > 0 else None


def describe(metric: str, detail: dict[str, Any], cold: bool) -> str:
    unit = UNITS[metric]
    value, baseline = fmt(detail["value"]), fmt(detail["baseline"])
    ratio = detail["ratio"]
    times = f"{ratio:.1f}x" if math.isfinite(ratio) else "from nothing"
    against = "its peers' rate" if cold else "baseline"
    return f"{metric} {value} {unit} vs {against} {baseline} ({times}, sustained)"


def fmt(value: float) -> str:
    if value >= 100 or float(value).is_integer():
        return f"{value:,.0f}"
    return f"{value:.2f}"
