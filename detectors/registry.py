"""Every detector meterguard runs, by name. `streams/` builds them from here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from meterguard.detectors.agent_chain import AgentChainDetector
from meterguard.detectors.base import Detector
from meterguard.detectors.budget import BudgetDetector
from meterguard.detectors.drift import DriftDetector
from meterguard.detectors.filter import LearningFilter
from meterguard.detectors.retry_loop import RetryLoopDetector
from meterguard.detectors.slow_ramp import SlowRampDetector
from meterguard.detectors.spike import SpikeDetector

# name -> (fresh detector, detector from saved state)
REGISTRY: dict[str, tuple[Callable[[], Detector], Callable[[dict[str, Any]], Detector]]] = {
    cls.name: (cls, cls.from_state)
    for cls in (
        SpikeDetector,
        SlowRampDetector,
        RetryLoopDetector,
        AgentChainDetector,
        DriftDetector,
        BudgetDetector,
    )
}


# How long a level may stay anomalous before it is the new normal, where a detector's own
# horizon is longer than the filter's default: a slow ramp is sustained by definition, and its
# anchor (the lowest level of the last three hours) already moves on after three hours.
ADAPT_AFTER_MINUTES = {"slow_ramp": 180}


def _filter(name: str, detector: Detector, refused_in_a_row: int = 0) -> LearningFilter:
    adapt = ADAPT_AFTER_MINUTES.get(name)
    if adapt is None:
        return LearningFilter(detector, refused_in_a_row=refused_in_a_row)
    return LearningFilter(detector, adapt_after_minutes=adapt, refused_in_a_row=refused_in_a_row)


def new_filter(name: str) -> LearningFilter:
    make, _ = REGISTRY[name]
    return _filter(name, make())


def filter_from_state(name: str, state: dict[str, Any] | None) -> LearningFilter:
    if state is None:
        return new_filter(name)
    _, restore = REGISTRY[name]
    return _filter(name, restore(state["model"]), int(state["refused_in_a_row"]))
