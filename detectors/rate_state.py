"""The spike detector's per-metric state: exponentially weighted sums, the minute-of-hour
profile, the last hour of minutes and the evidence bank, exactly serialisable (pure)."""

from __future__ import annotations

import math
from itertools import chain
from typing import Any

import numpy as np

from meterguard.detectors.robust import pack_array, unpack_array

SLOTS = 60  # minute-of-hour slots
RECENT = 60  # at most an hour of "recent" minutes


class Ew:
    """Exponentially weighted sums: mean = x / n, with a natural start (plain average)."""

    __slots__ = ("n", "x")

    def __init__(self, x: float = 0.0, n: float = 0.0) -> None:
        self.x, self.n = x, n

    def add(self, value: float, span: int) -> None:
        keep = 1.0 - 2.0 / (span + 1)
        self.x = self.x * keep + value
        self.n = self.n * keep + 1.0

    @property
    def mean(self) -> float:
        return self.x / self.n if self.n > 0 else 0.0


class MetricState:
    """Learnt baseline plus the running evidence of one metric."""

    def __init__(self, bank: int) -> None:
        self.level, self.prior, self.var = Ew(), Ew(), Ew()
        # Amount per call in minutes with calls, and its square: E[t²]/E[t] is the size of
        # one lump (heavy-tailed prompts make it several times the mean).
        self.per_call, self.per_call_sq = Ew(), Ew()
        # Lag-1 autocovariance of the minutes' deviations (sessions spill, levels wander).
        self.cov = Ew()
        # Plain lists, not arrays: a handful of floats touched per minute, where numpy's
        # per-call overhead was most of the detector's time (roll, scalar indexing).
        # The last minutes' values and expected values, oldest first.
        self.recent = [[0.0] * RECENT, [0.0] * RECENT]
        # Per minute-of-hour slot: EW mean, samples, and the burst it held an hour ago (0 if
        # none): one burst at :07 makes :07 an hour later expected, a schedule in the making.
        self.profile = [[0.0] * SLOTS, [0.0] * SLOTS, [0.0] * SLOTS]
        # Per k: evidence S, the run's sum of values and of expected values, and the evidence
        # that the rise is over (a reverse CUSUM).
        self.cusum = [[0.0] * bank for _ in range(4)]
        # Deviations of the last minutes, not yet learnt by `var` and `cov` (oldest first).
        self.pending: list[float] = []

    def to_state(self) -> dict[str, Any]:
        ews = [self.level, self.prior, self.var, self.per_call, self.per_call_sq, self.cov]
        return {
            "ew": [[e.x, e.n] for e in ews],
            "recent": _pack(self.recent),
            "profile": _pack(self.profile),
            "cusum": _pack(self.cusum),
            "pending": self.pending,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], bank: int) -> MetricState:
        m = cls(bank)
        ews = [Ew(float(x), float(n)) for x, n in state["ew"]]
        m.level, m.prior, m.var, m.per_call, m.per_call_sq = ews[:5]
        m.cov = ews[5] if len(ews) > 5 else Ew()  # absent before: learnt from now on
        m.recent = _unpack(state["recent"], 2, RECENT)
        m.profile = _unpack(state["profile"], 3, SLOTS)
        m.cusum = _unpack(state["cusum"], 4, bank)
        m.pending = [float(x) for x in state.get("pending", [])]  # absent before: none
        return m


def _pack(rows: list[list[float]]) -> list[float] | str:
    """Rows of floats as one flat JSON list: orjson writes a float's shortest exact form, and
    reading a list needs no base64 or numpy (checkpoint reads were 8 % of a replay's time).
    Rows holding an infinity or NaN, which JSON cannot carry, are packed as before."""
    flat = list(chain.from_iterable(rows))
    # A finite sum means every value is finite (an overflow only takes the slower packing).
    if math.isfinite(sum(flat)):
        return flat
    return pack_array(np.array(flat))


def _unpack(saved: list[float] | str, count: int, width: int) -> list[list[float]]:
    """`count` rows of `width` floats, from either packing."""
    flat = unpack_array(saved, count * width).tolist() if isinstance(saved, str) else list(saved)
    if len(flat) != count * width:
        raise ValueError(f"expected {count * width} values in a packed array, found {len(flat)}")
    return [flat[i * width : (i + 1) * width] for i in range(count)]
