"""Robust online location/scale estimates in log space, exactly serialisable (pure)."""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

# E|X - mu| = sigma * sqrt(2/pi) for a normal X: multiply a mean absolute deviation by this.
MAD_TO_SIGMA = math.sqrt(math.pi / 2)


@dataclass
class EwStat:
    """Exponentially weighted mean and mean absolute deviation of one series.

    Early on (n small) the weight is 1/(n+1), i.e. a plain average, so the first minutes of
    a new identity do not anchor the baseline at whatever the very first value was.
    """

    mean: float = 0.0
    dev: float = 0.0
    n: int = 0

    def update(self, value: float, alpha: float) -> None:
        weight = max(alpha, 1.0 / (self.n + 1))
        if self.n == 0:
            self.mean = value
        else:
            self.dev += weight * (abs(value - self.mean) - self.dev)
            self.mean += weight * (value - self.mean)
        self.n += 1

    def sigma(self, floor: float) -> float:
        return max(self.dev * MAD_TO_SIGMA, floor)

    def to_list(self) -> list[float]:
        return [self.mean, self.dev, float(self.n)]

    @classmethod
    def from_list(cls, values: list[float]) -> EwStat:
        return cls(mean=float(values[0]), dev=float(values[1]), n=int(values[2]))


def pack_array(values: np.ndarray) -> str:
    """float64 array -> base64 text: exact (a replay must not drift through rounding)."""
    return base64.b64encode(np.ascontiguousarray(values, dtype="<f8").tobytes()).decode("ascii")


def unpack_array(text: str, size: int) -> np.ndarray:
    values = np.frombuffer(base64.b64decode(text), dtype="<f8").copy()
    if values.size != size:
        raise ValueError(f"expected {size} values in packed array, found {values.size}")
    return values


def z_to_score(z: float, z_half: float) -> float:
    """Map a robust z (how many sigmas above baseline) to a calibrated score in [0, 1).

    z = z_half gives 0.5, 2*z_half gives 0.8, 3*z_half 0.9; below zero gives 0.
    """
    if not z > 0:
        return 0.0
    return z * z / (z * z + z_half * z_half)


def ratio_to_score(ratio: float, ratio_half: float) -> float:
    """Map value/baseline to [0, 1): `ratio_half` gives 0.5; no rise gives 0."""
    if not ratio > 1:
        return 0.0
    if math.isinf(ratio):
        return 1.0
    r, h = math.log(ratio), math.log(ratio_half)
    return r * r / (r * r + h * h)


@dataclass
class FirstContact:
    """An identity's learning period for habit-based detectors (drift, agent chains):
    `minutes` of event time and `events` events since its first event."""

    minutes: int
    events: int
    first_minute: int | None = None
    seen: int = 0

    def observe(self, minute: int) -> bool:
        """Count one event at `minute`; True while the identity is still being learnt."""
        if self.first_minute is None:
            self.first_minute = minute
        learning = minute - self.first_minute < self.minutes or self.seen < self.events
        self.seen += 1
        return learning

    def to_state(self) -> dict[str, int | None]:
        return {"first_minute": self.first_minute, "events": self.seen}

    def restore(self, state: dict[str, Any]) -> None:
        self.first_minute, self.seen = state["first_minute"], int(state["events"])
