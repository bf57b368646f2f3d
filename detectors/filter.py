"""Decide whether a scored minute may teach the model (pure).

Like river's ThresholdFilter: a minute that scores as anomalous is not learnt, so a spike
does not teach the baseline that spikes are normal. A level that stays "anomalous" for
`adapt_after_minutes` in a row is accepted as the new normal (a service that legitimately
doubled its traffic should not alert forever).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from detectors.base import Detector, Verdict
from detectors.features import MinuteWindow


@dataclass
class LearningFilter:
    detector: Detector
    learn_below: float = 0.6
    adapt_after_minutes: int = 45
    refused_in_a_row: int = 0

    def process(self, window: MinuteWindow) -> Verdict:
        verdict = self.detector.score_one(window)
        if (
            verdict.cold
            or verdict.score < self.learn_below
            or self.refused_in_a_row >= self.adapt_after_minutes
        ):
            self.detector.learn_one(window)
            self.refused_in_a_row = 0
        else:
            self.refused_in_a_row += 1
        return verdict

    def to_state(self) -> dict[str, Any]:
        return {"model": self.detector.to_state(), "refused_in_a_row": self.refused_in_a_row}
