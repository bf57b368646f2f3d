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


def new_filter(name: str) -> LearningFilter:
    make, _ = REGISTRY[name]
    return LearningFilter(make())


def filter_from_state(name: str, state: dict[str, Any] | None) -> LearningFilter:
    if state is None:
        return new_filter(name)
    _, restore = REGISTRY[name]
    return LearningFilter(restore(state["model"]), refused_in_a_row=int(state["refused_in_a_row"]))
