"""Per-identity spike detector on calls, tokens and cost per minute (pure).

Per metric, values are compared in square-root space: it stabilises the variance of counts
(Poisson noise of a 3-calls/min key does not look like a spike, as it does in log space) while
a large identity's proportional swings are not magnified as in linear space. Two baselines:

* a level: exponentially weighted mean and deviation over the last ~hour, which follows the
  daily rhythm because it moves slowly;
* an hour-of-clock profile: one slot per minute of the hour, so a cron-style job that bursts
  at :00 every hour is normal at :00 after one occurrence.

A minute is judged against whichever baseline explains it best (the smaller z): a spike is a
minute that neither explains. The score is the smaller of two calibrated scores: how
improbable (robust z) and how large (ratio to baseline) the excess is, so a statistically sure
but modest rise (1.5x on a very steady service) does not page anyone. A spike must also be
material (a minimum absolute excess), so 1 -> 6 calls on a quiet key is not an incident.
A new identity is judged against conservative absolute floors until it has
`warmup_minutes` of history.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from meterguard.detectors.base import MinuteDetector, Verdict
from meterguard.detectors.features import MinuteWindow
from meterguard.detectors.robust import (
    MAD_TO_SIGMA,
    EwStat,
    pack_array,
    ratio_to_score,
    unpack_array,
    z_to_score,
)

METRICS = ("calls", "tokens", "cost_usd")
SLOTS = 60
PRIOR_SAMPLES = 3.0

UNITS = {"calls": "calls/min", "tokens": "tokens/min", "cost_usd": "USD/min"}


@dataclass(frozen=True)
class SpikeConfig:
    level_span_minutes: int = 60
    # One full hour-of-clock cycle: until the profile has seen every minute of the hour, an
    # hourly job's first burst would look like a spike.
    warmup_minutes: int = 60
    z_half: float = 4.0  # robust z that scores 0.5; 8 -> 0.8
    ratio_half: float = 3.0  # value/baseline that scores 0.5; ~6x -> 0.73, 10x -> 0.81
    # Never trust a baseline tighter than this fraction of its own level (sqrt space):
    # 0.1 means a doubling is ~4 sigma even on a perfectly steady identity.
    relative_sigma_floor: float = 0.1
    profile_alpha: float = 0.3
    # A spike must exceed the baseline by at least this much (per minute) to count.
    min_excess: dict[str, float] = field(
        default_factory=lambda: {"calls": 30.0, "tokens": 30_000.0, "cost_usd": 0.5}
    )
    # Cold start: a new identity scores 0.5 at these rates, 0.8 at twice these.
    cold_floor: dict[str, float] = field(
        default_factory=lambda: {"calls": 300.0, "tokens": 500_000.0, "cost_usd": 10.0}
    )


def to_space(metric: str, value: float) -> float:
    """Variance-stabilising transform: Anscombe for call counts, sqrt for amounts."""
    if metric == "calls":
        return 2.0 * math.sqrt(value + 0.375)
    if metric == "cost_usd":
        return math.sqrt(value * 1e6)  # micro-dollars: same footing as token counts
    return math.sqrt(value)


def from_space(metric: str, y: float) -> float:
    if metric == "calls":
        return max((y / 2.0) ** 2 - 0.375, 0.0)
    if metric == "cost_usd":
        return y * y / 1e6
    return y * y


class _Profile:
    """Minute-of-hour slots of (mean, dev, n) in the transformed space."""

    def __init__(self, data: np.ndarray | None = None) -> None:
        self.data = data if data is not None else np.zeros((3, SLOTS))

    def candidates(self, slot: int, level_dev: float) -> list[tuple[float, float]]:
        """(mean, dev) of the minute-of-hour slot, if it has been seen.

        Only the slot itself: the profile also learns anomalous minutes (a schedule must be
        learnt from minutes that first look anomalous), so a neighbouring slot would "explain"
        minute two of a runaway by minute one. A slot has one sample an hour, so its own
        deviation is noisy for hours; it is shrunk towards the level's (`PRIOR_SAMPLES`
        pseudo-samples) so that two lucky Poisson draws cannot make a slot "explain" a runaway.
        """
        mean, dev, n = (float(v) for v in self.data[:, slot % SLOTS])
        if n < 1:
            return []
        return [(mean, (n * dev + PRIOR_SAMPLES * level_dev) / (n + PRIOR_SAMPLES))]

    def update(self, slot: int, y: float, alpha: float) -> None:
        mean, dev, n = (float(v) for v in self.data[:, slot])
        weight = max(alpha, 1.0 / (n + 1))
        if n == 0:
            self.data[0, slot] = y
        else:
            self.data[1, slot] = dev + weight * (abs(y - mean) - dev)
            self.data[0, slot] = mean + weight * (y - mean)
        self.data[2, slot] = n + 1


class SpikeDetector(MinuteDetector):
    name = "spike"

    def __init__(self, config: SpikeConfig | None = None) -> None:
        self.config = config or SpikeConfig()
        self.level = {m: EwStat() for m in METRICS}
        self.profile = {m: _Profile() for m in METRICS}
        self.minutes_seen = 0

    # -- scoring ---------------------------------------------------------------------------
    def score_one(self, window: MinuteWindow) -> Verdict:
        best: tuple[float, str, dict[str, Any]] = (0.0, "", {})
        evidence: dict[str, Any] = {}
        for metric in METRICS:
            score, detail = self._score_metric(metric, window)
            evidence[metric] = detail
            if score > best[0]:
                best = (score, metric, detail)
        score, metric, detail = best
        reason = _describe(metric, detail) if metric else ""
        cold = self.minutes_seen < self.config.warmup_minutes
        evidence = {"metric": metric, **evidence}
        return Verdict(score=score, evidence=evidence, reason=reason, cold=cold)

    def _score_metric(self, metric: str, window: MinuteWindow) -> tuple[float, dict[str, Any]]:
        cfg = self.config
        value = window.metric(metric)
        if self.minutes_seen < cfg.warmup_minutes:
            ratio = value / cfg.cold_floor[metric]
            score = ratio * ratio / (1 + ratio * ratio)
            return score, {"value": value, "cold_floor": cfg.cold_floor[metric], "cold": True}
        y = to_space(metric, value)
        level = self.level[metric]
        slots = self.profile[metric].candidates(_slot(window), level.dev)
        options = [(level.mean, level.dev), *slots]
        z, mean = min((self._z(y, m, d), m) for m, d in options)
        baseline = from_space(metric, mean)
        ratio = value / baseline if baseline > 0 else math.inf
        score = 0.0
        if value - baseline >= cfg.min_excess[metric]:
            score = min(z_to_score(z, cfg.z_half), ratio_to_score(ratio, cfg.ratio_half))
        detail = {
            "value": value,
            "baseline": round(baseline, 6),
            "ratio": round(ratio, 2) if math.isfinite(ratio) else None,
            "z": round(z, 2),
        }
        return score, detail

    def _z(self, y: float, mean: float, dev: float) -> float:
        sigma = max(dev * MAD_TO_SIGMA, self.config.relative_sigma_floor * abs(mean), 1.0)
        return (y - mean) / sigma

    # -- learning --------------------------------------------------------------------------
    def learn_one(self, window: MinuteWindow, *, anomalous: bool = False) -> None:
        """Learn a minute. An anomalous one still teaches the hour-of-clock profile (what
        recurs at :07 every hour is a schedule, and only the profile can learn it), never the
        level: a one-off burst leaves the baseline as it was."""
        alpha = 2.0 / (self.config.level_span_minutes + 1)
        for metric in METRICS:
            y = to_space(metric, window.metric(metric))
            if not anomalous:
                self.level[metric].update(y, alpha)
            self.profile[metric].update(_slot(window), y, self.config.profile_alpha)
        if not anomalous:
            self.minutes_seen += 1

    def baseline(self, metric: str) -> float:
        """The level baseline in the metric's own units (for throttle limits)."""
        return from_space(metric, self.level[metric].mean)

    # -- state -----------------------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        return {
            "minutes_seen": self.minutes_seen,
            "level": {m: self.level[m].to_list() for m in METRICS},
            "profile": {m: pack_array(self.profile[m].data.ravel()) for m in METRICS},
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], config: SpikeConfig | None = None) -> SpikeDetector:
        detector = cls(config)
        detector.minutes_seen = int(state["minutes_seen"])
        for m in METRICS:
            detector.level[m] = EwStat.from_list(state["level"][m])
            packed = unpack_array(state["profile"][m], 3 * SLOTS)
            detector.profile[m] = _Profile(packed.reshape(3, SLOTS))
        return detector


def _slot(window: MinuteWindow) -> int:
    return window.minute % SLOTS


def _describe(metric: str, detail: dict[str, Any]) -> str:
    unit = UNITS[metric]
    value = _fmt(detail["value"])
    if detail.get("cold"):
        floor = _fmt(detail["cold_floor"])
        return f"{metric} {value} {unit} on a new identity (cold-start floor {floor})"
    ratio = f" ({detail['ratio']}x)" if detail.get("ratio") else ""
    return f"{metric} {value} {unit} vs baseline {_fmt(detail['baseline'])}{ratio}"


def _fmt(value: float) -> str:
    if value >= 100 or float(value).is_integer():
        return f"{value:,.0f}"
    return f"{value:.2f}"
