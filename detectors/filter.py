"""Decide whether a scored minute may teach the model (pure).

Like river's ThresholdFilter: a minute that scores as anomalous does not move the baseline,
so a spike does not teach the model that spikes are normal (it is passed on flagged, so a
detector can still learn a *schedule* from it: see SpikeDetector.learn_one). A level that
stays "anomalous" for `adapt_after_minutes` in a row is accepted as the new normal (a service
that legitimately doubled its traffic should not alert forever).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from meterguard.detectors.base import Detector, Verdict
from meterguard.detectors.features import MinuteWindow


@dataclass
class LearningFilter:
    detector: Detector
    learn_below: float = 0.6
    adapt_after_minutes: int = 45
    refused_in_a_row: int = 0

    def process(self, window: MinuteWindow) -> Verdict:
        verdict = self.detector.score_one(window)
        anomalous = not verdict.cold and verdict.score >= self.learn_below
        self.refused_in_a_row = self.refused_in_a_row + 1 if anomalous else 0
        # Once a level has persisted `adapt_after_minutes`, every minute of it is learnt until
        # it no longer scores as anomalous.
        adapting = self.refused_in_a_row > self.adapt_after_minutes
        if self.refused_in_a_row == self.adapt_after_minutes + 1:
            # The new level is the new normal: a detector may re-anchor its baseline on the
            # minutes it refused, instead of creeping up to it for another hour.
            self.detector.rebase(self.adapt_after_minutes)
        self.detector.learn_one(window, anomalous=anomalous and not adapting)
        return verdict

    def to_state(self) -> dict[str, Any]:
        return {"model": self.detector.to_state(), "refused_in_a_row": self.refused_in_a_row}
