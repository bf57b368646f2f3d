"""The spike detector's per-metric state: exponentially weighted sums, the minute-of-hour
profile, the last hour of minutes and the evidence bank, exactly serialisable (pure)."""

from __future__ import annotations

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
            "recent": pack_array(np.array(self.recent).ravel()),
            "profile": pack_array(np.array(self.profile).ravel()),
            "cusum": pack_array(np.array(self.cusum).ravel()),
            "pending": self.pending,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], bank: int) -> MetricState:
        m = cls(bank)
        ews = [Ew(float(x), float(n)) for x, n in state["ew"]]
        m.level, m.prior, m.var, m.per_call, m.per_call_sq = ews[:5]
        m.cov = ews[5] if len(ews) > 5 else Ew()  # absent before: learnt from now on
        m.recent = unpack_array(state["recent"], 2 * RECENT).reshape(2, RECENT).tolist()
        m.profile = unpack_array(state["profile"], 3 * SLOTS).reshape(3, SLOTS).tolist()
        m.cusum = unpack_array(state["cusum"], 4 * bank).reshape(4, bank).tolist()
        m.pending = [float(x) for x in state.get("pending", [])]  # absent before: none
        return m
