"""The detector contract: two verbs, serialisable state, no I/O, no wall clock.

Like river's anomaly detectors, `score_one` never changes the model and `learn_one` never
scores; whether a scored minute is normal enough to learn is the filter's decision
(`detectors.filter`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Self

from meterguard.detectors.features import EventFacts, IdentityContext, MinuteWindow


@dataclass(frozen=True)
class Verdict:
    """A detector's answer for one minute: a calibrated score in [0, 1] and why."""

    score: float
    evidence: dict[str, Any] = field(default_factory=dict)
    # Short human phrase with the numbers, e.g. "calls 412/min vs baseline 9/min (46x)".
    reason: str = ""
    # Scored against cold-start floors, not a learnt baseline: always learnt from, or a new
    # identity that starts busy would never build a baseline of its own.
    cold: bool = False
    # "block": stop the identity whatever the environment's throttle rule (offboarded
    # identity, hard budget cap). None: the policy decides from the score.
    action: str | None = None
    # Per-minute excess over the detector's expectation, by metric ("calls", "tokens",
    # "cost_usd"), for the policy's materiality rule; None: the detector measures no volume.
    excess: dict[str, float] | None = None


class Detector(Protocol):
    name: str

    def configure(self, context: IdentityContext) -> None:
        """Per-identity facts from the policy, given before each batch."""
        ...

    def observe_one(self, facts: EventFacts) -> None:
        """Every new event of the identity, in arrival order (event-level evidence)."""
        ...

    def score_one(self, window: MinuteWindow) -> Verdict: ...

    def learn_one(self, window: MinuteWindow, *, anomalous: bool = False) -> None:
        """`anomalous`: the filter judged this minute an anomaly. A detector must not let it
        move its baseline; it may learn recurring structure from it (a schedule)."""
        ...

    def rebase(self, minutes: int) -> None:
        """The learning filter's verdict: the level of the last `minutes` is the new normal.
        A detector whose baseline would otherwise creep up to it re-anchors on it."""
        ...

    def to_state(self) -> dict[str, Any]: ...

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self: ...


class MinuteDetector:
    """Base for detectors that need only closed minutes: no event hook, no context."""

    def configure(self, context: IdentityContext) -> None:
        return None

    def observe_one(self, facts: EventFacts) -> None:
        return None

    def learn_one(self, window: MinuteWindow, *, anomalous: bool = False) -> None:
        return None

    def rebase(self, minutes: int) -> None:
        return None
