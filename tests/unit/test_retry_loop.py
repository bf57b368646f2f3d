"""retry_loop judged against the identity's own failures, at every volume (issue 10)."""

from __future__ import annotations

import numpy as np

from meterguard.detectors.features import EventFacts, MinuteWindow
from meterguard.detectors.registry import filter_from_state, new_filter
from meterguard.detectors.retry_loop import RetryLoopDetector

T0 = 29_000_040


def minute(runner, m: int, calls: list[tuple[str, bool]]) -> float:
    """Observe one minute's calls (fingerprint, failed) and score it."""
    for i, (fp, failed) in enumerate(calls):
        runner.detector.observe_one(
            EventFacts(time_ms=m * 60_000 + i, minute=m, is_error=failed, fingerprint=fp)
        )
    errors = sum(failed for _, failed in calls)
    return runner.process(MinuteWindow(m, calls=len(calls), errors=errors)).score


def quiet_key(seed: int, minutes: int = 240):
    """0.05 calls/min, ten request shapes, 2 % failing."""
    rng = np.random.default_rng(seed)
    runner = new_filter("retry_loop")
    for m in range(minutes):
        calls = [
            (f"req-{rng.integers(10)}", bool(rng.random() < 0.02)) for _ in range(rng.poisson(0.05))
        ]
        minute(runner, T0 + m, calls)
    return runner


def test_a_once_a_minute_loop_on_a_quiet_key_alerts_within_four_minutes() -> None:
    for seed in range(5):
        runner = quiet_key(seed)
        scores = [minute(runner, T0 + 240 + i, [("stuck", True)]) for i in range(4)]
        assert scores[0] < 0.8  # one minute is never conclusive
        assert max(scores) >= 0.8, scores


def test_a_backoff_that_gives_up_does_not_alert() -> None:
    """1, 2, 4, 8, 16, 32 s: six failures in the first minute, one in the next, then success."""
    for seed in range(5):
        runner = quiet_key(seed)
        scores = [
            minute(runner, T0 + 240, [("flaky", True)] * 6),
            minute(runner, T0 + 241, [("flaky", True), ("flaky", False)]),
            *(minute(runner, T0 + 242 + i, []) for i in range(5)),
        ]
        assert max(scores) < 0.8, (seed, scores)


def test_a_busy_services_ordinary_failures_never_alert_and_its_loop_does() -> None:
    """300 calls/min over three request shapes, 1 % failing: its top request fails every
    minute, which is its normal, not a loop."""
    rng = np.random.default_rng(7)
    runner = new_filter("retry_loop")
    ordinary = []
    for m in range(360):
        calls = [
            (f"req-{rng.integers(3)}", bool(rng.random() < 0.01)) for _ in range(rng.poisson(300))
        ]
        ordinary.append(minute(runner, T0 + m, calls))
    assert max(ordinary[60:]) < 0.8
    loop = [
        minute(
            runner, T0 + 360 + i, [(f"req-{rng.integers(3)}", False)] * 300 + [("stuck", True)] * 60
        )
        for i in range(3)
    ]
    assert loop[-1] >= 0.8, loop


def test_state_round_trips_mid_run() -> None:
    runner = quiet_key(1)
    minute(runner, T0 + 240, [("stuck", True)])
    restored = filter_from_state("retry_loop", runner.to_state())
    assert isinstance(restored.detector, RetryLoopDetector)
    a = minute(runner, T0 + 241, [("stuck", True)])
    b = minute(restored, T0 + 241, [("stuck", True)])
    assert a == b > 0


def test_a_loop_faster_than_any_backoff_alerts_in_its_second_minute() -> None:
    """30 failures a minute: more than an exponential backoff can make (BACKOFF_ATTEMPTS)."""
    for seed in range(5):
        runner = quiet_key(seed)
        first = minute(runner, T0 + 240, [("stuck", True)] * 30)
        second = minute(runner, T0 + 241, [("stuck", True)] * 30)
        assert first < 0.8 <= second, (first, second)
