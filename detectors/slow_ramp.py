"""Slow ramp: usage drifting upward for tens of minutes to hours (pure).

A leaked key used a little more every hour never looks like a spike minute by minute: the
spike detector's one-hour level follows it. This detector compares a short average (~20 min)
with an *anchor*: the lowest long-run level (~4 h average) of the last three hours. The daily
rhythm moves the long level slowly, so its 3-hour minimum stays close to the current level;
a ramp leaves the anchor behind. Scored in square-root space like the spike detector, on
calls and tokens, with a minimum absolute excess.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

from meterguard.detectors.base import MinuteDetector, Verdict
from meterguard.detectors.features import MinuteWindow
from meterguard.detectors.robust import ratio_to_score
from meterguard.detectors.spike import from_space, to_space

METRICS = ("calls", "tokens")
SNAPSHOT_EVERY = 15  # minutes between anchor snapshots
SNAPSHOTS = 12  # 3 hours of snapshots
RISING_SNAPSHOTS = 3  # a ramp has been rising for 45 minutes at least


@dataclass(frozen=True)
class RampConfig:
    short_span: int = 20
    long_span: int = 240
    warmup_minutes: int = 90
    ratio_half: float = 2.0  # short/anchor that scores 0.5; 4x -> 0.8
    min_excess: tuple[float, float] = (15.0, 15_000.0)  # calls/min, tokens/min
    # A ramp is gradual: the short average may at most double within 15-30 minutes. A step
    # (a runaway agent) is the spike detector's to report, not this one's.
    max_step: float = 2.0


class SlowRampDetector(MinuteDetector):
    name = "slow_ramp"

    def __init__(self, config: RampConfig | None = None) -> None:
        self.config = config or RampConfig()
        self.minutes = 0
        self.short = dict.fromkeys(METRICS, 0.0)
        self.long = dict.fromkeys(METRICS, 0.0)
        self.snapshots: dict[str, list[float]] = {m: [] for m in METRICS}
        self.short_snapshots: dict[str, list[float]] = {m: [] for m in METRICS}

    def score_one(self, window: MinuteWindow) -> Verdict:
        if self.minutes < self.config.warmup_minutes:
            return Verdict(score=0.0)
        best = Verdict(score=0.0)
        for metric, min_excess in zip(METRICS, self.config.min_excess, strict=True):
            short = from_space(
                metric, self._ew(self.short[metric], window, metric, self.config.short_span)
            )
            anchor = from_space(metric, min([self.long[metric], *self.snapshots[metric]]))
            if short - anchor < min_excess or not self._gradual(metric, short):
                continue
            ratio = short / anchor if anchor > 0 else math.inf
            score = ratio_to_score(ratio, self.config.ratio_half)
            if score > best.score:
                evidence = {
                    "metric": metric,
                    "recent_per_min": round(short, 2),
                    "anchor_per_min": round(anchor, 2),
                    "ratio": round(ratio, 2) if math.isfinite(ratio) else None,
                }
                ratio_text = f"{ratio:.1f}x" if math.isfinite(ratio) else "from zero"
                reason = (
                    f"{metric} rose to {short:,.0f}/min over the last ~20 min vs "
                    f"{anchor:,.0f}/min three hours' low ({ratio_text})"
                )
                best = Verdict(score=score, evidence=evidence, reason=reason)
        return best

    def _gradual(self, metric: str, short: float) -> bool:
        """Rising for the last 45 minutes at least (three 15-minute snapshots), by at most
        `max_step` per snapshot: a deploy that doubles traffic in 10 minutes is a step."""
        path = [from_space(metric, y) for y in self.short_snapshots[metric]] + [short]
        if len(path) < RISING_SNAPSHOTS + 1:
            return False
        steps = list(itertools.pairwise(path))
        return all(b >= a and b <= self.config.max_step * a for a, b in steps)

    def _ew(self, current: float, window: MinuteWindow, metric: str, span: int) -> float:
        alpha = max(2.0 / (span + 1), 1.0 / (self.minutes + 1))
        return current + alpha * (to_space(metric, window.metric(metric)) - current)

    def learn_one(self, window: MinuteWindow, *, anomalous: bool = False) -> None:
        # The short average always follows (it *is* the evidence); the long one and the
        # anchor do not learn from minutes flagged anomalous, or a ramp would drag them up.
        for metric in METRICS:
            self.short[metric] = self._ew(
                self.short[metric], window, metric, self.config.short_span
            )
            if not anomalous:
                self.long[metric] = self._ew(
                    self.long[metric], window, metric, self.config.long_span
                )
            if window.minute % SNAPSHOT_EVERY == 0:
                self.snapshots[metric] = [*self.snapshots[metric], self.long[metric]][-SNAPSHOTS:]
                recent = [*self.short_snapshots[metric], self.short[metric]]
                self.short_snapshots[metric] = recent[-RISING_SNAPSHOTS:]
        self.minutes += 1

    def to_state(self) -> dict[str, Any]:
        return {
            "minutes": self.minutes,
            "short": self.short,
            "long": self.long,
            "snapshots": self.snapshots,
            "short_snapshots": self.short_snapshots,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> SlowRampDetector:
        d = cls()
        d.minutes = int(state["minutes"])
        d.short = {m: float(state["short"][m]) for m in METRICS}
        d.long = {m: float(state["long"][m]) for m in METRICS}
        d.snapshots = {m: [float(v) for v in state["snapshots"][m]] for m in METRICS}
        d.short_snapshots = {m: [float(v) for v in state["short_snapshots"][m]] for m in METRICS}
        return d
