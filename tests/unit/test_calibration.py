"""What a score threshold means (streams/evaluation/calibration.py): pure, on hand-made score
lines and scored minutes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from meterguard.streams.evaluation.calibration import (
    MAX_UNSEEN_GAP,
    calibrate,
    minute_scores,
    pool,
)
from meterguard.streams.simulation.config import Incident

T0 = datetime(2025, 1, 6, 10, 0, tzinfo=UTC)
M0 = int(T0.timestamp() // 60)  # epoch minute of T0
GRACE = timedelta(minutes=5)


def line(identity: str, second: float, scores: dict[str, float], status: str = "new") -> dict:
    at = T0 + timedelta(seconds=second)
    return {
        "event_id": f"{identity}-{second}",
        "identity": identity,
        "event_time": at.isoformat().replace("+00:00", "Z"),
        "status": status,
        "scores": scores,
    }


def minutes(identity: str, values: dict[int, float], detector: str = "spike"):
    """Scored minutes (run minute -> score) of one identity, as minute_scores returns them."""
    return {identity: {M0 + m: {detector: v} for m, v in values.items()}}


def incident(identity: str, start: float, end: float) -> Incident:
    begin, finish = T0 + timedelta(minutes=start), T0 + timedelta(minutes=end)
    return Incident("runaway_agent", identity, begin, finish)


def row(cal, threshold: float):
    return next(r for r in cal.rows if r.threshold == threshold)


def test_a_line_shows_the_scores_of_its_identitys_latest_final_minute():
    lines = [
        line("a", 10, {}),  # first event: nothing final, nothing scored
        line("a", 95, {"spike": 0.1}),  # watermark 1:35 -> minute 0 final (1:30 = 1:00 + 30 s)
        line("a", 100, {"spike": 0.1}),  # same minute again
        line("a", 145, {"spike": 0.9}),  # 2:25: still minute 0 (minute 1 final at 2:30)
        line("a", 150, {"spike": 0.7}),  # 2:30: minute 1
        line("a", 20, {"spike": 0.7}, status="late"),  # late: the watermark stays
        line("a", 400, {"spike": 0.7}, status="duplicate"),  # duplicate: it stays too
        line("b", 400, {"spike": 0.5}),  # another identity's first line: minute 5
    ]
    seen = minute_scores(lines, lateness_s=30)
    assert seen["a"] == {M0: {"spike": 0.9}, M0 + 1: {"spike": 0.7}}
    assert seen["b"] == {M0 + 5: {"spike": 0.5}}


def test_a_run_of_minutes_above_the_threshold_is_one_false_episode():
    scores = minutes("a", {10: 0.85, 11: 0.9, 12: 0.82, 13: 0.2, 20: 0.81, 21: 0.5})
    cal = calibrate(scores, [], identity_hours=100, grace=GRACE)
    assert row(cal, 0.8).false_episodes == 2
    assert row(cal, 0.8).by_detector == {"spike": 2}
    assert row(cal, 0.8).per_identity_hour == pytest.approx(0.02)
    assert row(cal, 0.9).false_episodes == 1
    assert row(cal, 0.95).false_episodes == 0
    assert row(cal, 0.5).false_episodes == 2  # 10-12 and 20-21: minute 13 breaks them
    assert cal.seen_minutes == 6 and cal.coverage == pytest.approx(6 / 6000)


def test_unseen_minutes_join_a_run_up_to_the_policys_calm_period():
    within = minutes("a", {10: 0.9, 11 + MAX_UNSEEN_GAP: 0.9})  # 5 unseen minutes between
    beyond = minutes("a", {10: 0.9, 12 + MAX_UNSEEN_GAP: 0.9})  # 6 unseen minutes between
    assert row(calibrate(within, [], 10, GRACE), 0.8).false_episodes == 1
    assert row(calibrate(beyond, [], 10, GRACE), 0.8).false_episodes == 2


def test_a_run_touching_an_incident_plus_or_minus_grace_is_not_false():
    # Minute 3 ends at 4:00, within 5 minutes before the incident's start at 8:00: excused.
    # Minute 29 ends at 30:00 = end + grace: excused; minute 30 ends at 31:00 and 50 at 51:00.
    scores = minutes("a", {3: 0.9, 4: 0.1, 29: 0.9, 30: 0.9, 31: 0.1, 50: 0.9, 51: 0.1, 60: 0.9})
    labels = [incident("a", 8, 25)]
    cal = calibrate(scores, labels, identity_hours=10, grace=GRACE)
    assert row(cal, 0.8).false_episodes == 2  # the runs at 50 and 60; 29-30 touches the grace
    other = calibrate(minutes("b", {3: 0.9}), labels, identity_hours=10, grace=GRACE)
    assert row(other, 0.8).false_episodes == 1  # another identity's incident excuses nothing


def test_budget_runs_after_an_incident_began_are_its_consequence():
    scores = minutes("a", {200: 0.95}, detector="budget")
    cal = calibrate(scores, [incident("a", 8, 25)], identity_hours=10, grace=GRACE)
    assert row(cal, 0.8).false_episodes == 0


def test_an_incident_is_detected_at_a_threshold_its_window_reached():
    scores = {
        **minutes("a", {9: 0.85, 40: 0.99}),  # 40 ends long after the incident
        **minutes("b", {12: 0.65}),
        **minutes("c", {7: 0.99}),  # ends at 8:00, the incident's start: counts
    }
    labels = [incident("a", 8, 25), incident("b", 8, 25), incident("c", 8, 25)]
    cal = calibrate(scores, labels, identity_hours=10, grace=GRACE)
    assert [(r.threshold, r.detected) for r in cal.rows] == [
        (0.5, 3), (0.6, 3), (0.7, 2), (0.8, 2), (0.9, 1), (0.95, 1)
    ]  # fmt: skip
    assert row(cal, 0.8).detected_share == pytest.approx(2 / 3)
    assert row(cal, 0.8).incidents == 3


def test_detectors_count_their_episodes_separately():
    scores = {"a": {M0 + 1: {"spike": 0.9, "slow_ramp": 0.95}, M0 + 2: {"spike": 0.1}}}
    cal = calibrate(scores, [], identity_hours=1, grace=GRACE)
    assert row(cal, 0.8).by_detector == {"slow_ramp": 1, "spike": 1}
    assert row(cal, 0.8).false_episodes == 2


def test_pooled_calibrations_add_counts_and_recompute_rates():
    one = calibrate(minutes("a", {1: 0.9}), [incident("b", 0, 10)], 100, GRACE)
    two = calibrate(minutes("a", {1: 0.9, 3: 0.1, 4: 0.9}), [], 300, GRACE)
    pooled = pool([one, two])
    r = row(pooled, 0.8)
    assert (r.false_episodes, r.identity_hours, r.incidents, r.detected) == (3, 400, 1, 0)
    assert r.per_identity_hour == pytest.approx(3 / 400)
    assert pooled.seen_minutes == 4
