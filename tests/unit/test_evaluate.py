"""Detection-quality scoring (streams/evaluation/scoring.py): pure, on hand-made alerts and
labels."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from meterguard.models import Alert
from meterguard.streams.evaluation.config import detector_warmup_minutes, evaluation_config
from meterguard.streams.evaluation.scoring import identity_hours, score
from meterguard.streams.simulation.config import Incident
from meterguard.streams.simulation.incident_plan import plan_incidents
from tests.support.alerts import make_alert

T0 = datetime(2025, 1, 6, 10, 0, tzinfo=UTC)
GRACE = timedelta(minutes=5)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def incident(
    identity: str = "agent-a", start: float = 0, end: float = 15, kind: str = "runaway_agent"
):
    return Incident(kind=kind, identity=identity, start=at(start), end=at(end))


def alert(
    identity: str = "agent-a",
    minute: float = 1,
    *,
    delay_s: float = 40,
    status: str = "firing",
    detector: str = "spike",
    severity: str = "warning",
    episode: float | None = None,
) -> Alert:
    """A firing alert on the minute ending at `minute`, closed `delay_s` later."""
    return make_alert(
        identity,
        detector,
        alert_id=f"{identity}-{detector}-{minute}-{status}-{severity}",
        severity=severity,
        status=status,
        episode=_epoch_minute(minute - 1 if episode is None else episode),
        start=T0,
        minute=minute - 1,
        event_time=at(minute) + timedelta(seconds=delay_s),
    )


def _epoch_minute(minutes: float) -> int:
    return int(at(minutes).timestamp() // 60)


def test_alert_inside_the_incident_window_detects_it_with_ttd_from_its_event_time():
    report = score([alert(minute=2, delay_s=40)], [incident()], identity_hours=100)

    row = report.row("runaway_agent")
    assert (row.incidents, row.detected, row.recall) == (1, 1, 1.0)
    assert row.median_ttd_s == pytest.approx(160.0)
    assert report.overall.false_alerts == 0


def test_incident_without_a_matching_alert_is_missed_and_lowers_recall():
    incidents = [incident("agent-a"), incident("agent-b")]
    report = score([alert("agent-a", minute=3)], incidents, identity_hours=100)

    row = report.row("runaway_agent")
    assert (row.detected, row.recall) == (1, 0.5)
    assert row.recall_ok is False
    assert [o.ttd_s is None for o in report.outcomes] == [False, True]
    assert not report.passed


def test_alert_on_another_identity_neither_detects_nor_is_excused():
    report = score([alert("svc-other", minute=3)], [incident("agent-a")], identity_hours=100)

    assert report.row("runaway_agent").detected == 0
    assert [(f.identity, f.detector) for f in report.false_alerts] == [("svc-other", "spike")]


def test_alert_before_the_incident_starts_is_a_false_alert():
    report = score([alert(minute=-3)], [incident(start=0)], identity_hours=100)

    assert report.row("runaway_agent").detected == 0
    assert report.overall.false_alerts == 1


def test_grace_after_the_end_is_inclusive_and_one_second_more_is_false():
    on_edge = alert(minute=20)  # window_end == end + grace
    report = score([on_edge], [incident(end=15)], identity_hours=100, grace=GRACE)
    assert report.row("runaway_agent").detected == 1
    assert report.overall.false_alerts == 0

    late = alert(minute=20 + 1 / 60)
    report = score([late], [incident(end=15)], identity_hours=100, grace=GRACE)
    assert report.row("runaway_agent").detected == 0
    assert report.overall.false_alerts == 1


def test_escalation_of_a_false_episode_counts_once():
    first = alert("svc-calm", minute=50, episode=49)
    escalation = alert("svc-calm", minute=52, episode=49, severity="critical")
    second_episode = alert("svc-calm", minute=90, episode=89)

    report = score([first, escalation, second_episode], [], identity_hours=1000)

    assert report.overall.false_alerts == 2
    assert [f.window_end for f in report.false_alerts] == [at(50), at(90)]


def test_resolved_alerts_are_ignored():
    resolved = alert("svc-calm", minute=50, status="resolved")
    report = score([resolved], [incident(start=0)], identity_hours=100)

    assert report.overall.false_alerts == 0
    assert report.row("runaway_agent").detected == 0


def test_ttd_is_the_earliest_matching_alert_and_never_negative():
    # An alert whose minute ends at the start but whose event time is earlier clamps to 0.
    early = alert(minute=0, delay_s=-10)
    later = alert(minute=4, detector="retry_loop")
    report = score([later, early], [incident(start=0)], identity_hours=100)

    assert report.outcomes[0].ttd_s == 0.0
    assert report.outcomes[0].detector == "spike"


def test_median_and_p90_ttd_over_detected_incidents_only():
    incidents = [incident(f"agent-{i}", start=0) for i in range(5)]
    # TTDs of 60, 120, 180, 300 s; agent-4 is missed.
    alerts = [alert(f"agent-{i}", minute=m, delay_s=0) for i, m in enumerate([1, 2, 3, 5])]

    row = score(alerts, incidents, identity_hours=100).row("runaway_agent")

    assert row.recall == pytest.approx(0.8)
    assert row.median_ttd_s == pytest.approx(150.0)
    assert row.p90_ttd_s == pytest.approx(300.0)


def test_ttd_target_applies_to_spikes_and_retry_loops_only():
    incidents = [incident("a", kind="runaway_agent"), incident("b", kind="slow_ramp")]
    alerts = [alert("a", minute=5, delay_s=0), alert("b", minute=10, delay_s=0)]

    report = score(alerts, incidents, identity_hours=100)

    assert report.row("runaway_agent").ttd_ok is False  # 5 min > 3 min
    assert report.row("slow_ramp").ttd_ok is None
    assert report.row("slow_ramp").recall_ok is True
    assert not report.passed


def test_false_alert_rate_is_per_thousand_identity_hours_against_a_target_of_a_half():
    alerts = [alert(f"svc-{i}", minute=100) for i in range(3)]

    within = score(alerts, [], identity_hours=6000)
    over = score(alerts, [], identity_hours=2000)

    assert within.overall.false_per_1000h == pytest.approx(0.5)
    assert within.overall.ok and within.passed
    assert over.overall.false_per_1000h == pytest.approx(1.5)
    assert not over.overall.ok and not over.passed


def test_requested_kind_without_incidents_is_shown_but_not_judged():
    report = score([], [incident()], identity_hours=10, kinds=["retry_loop", "runaway_agent"])

    assert [r.kind for r in report.rows] == ["retry_loop", "runaway_agent"]
    empty = report.row("retry_loop")
    assert (empty.incidents, empty.recall, empty.recall_ok, empty.ttd_ok) == (0, None, None, None)


def test_alerts_as_json_dicts_score_like_alert_models():
    models = [alert(minute=2), alert("svc-x", minute=50)]
    dicts = [orjson.loads(a.model_dump_json()) for a in models]

    from_models = score(models, [incident()], identity_hours=100).to_dict()
    from_dicts = score(dicts, [incident()], identity_hours=100).to_dict()

    assert from_dicts == from_models
    assert from_dicts["kinds"][0]["detected"] == 1
    assert from_dicts["overall"]["false_alerts"] == 1


def test_report_json_carries_rows_overall_and_pass_flags():
    report = score([alert(minute=2)], [incident()], identity_hours=500)

    doc = orjson.loads(report.to_json())

    assert doc["passed"] is True
    assert doc["kinds"][0] == {
        "kind": "runaway_agent",
        "incidents": 1,
        "detected": 1,
        "recall": 1.0,
        "median_ttd_s": 160.0,
        "p90_ttd_s": 160.0,
        "ttd_target_s": 180.0,
        "recall_ok": True,
        "ttd_ok": True,
    }
    assert doc["overall"] == {
        "false_alerts": 0,
        "identity_hours": 500,
        "false_per_1000h": 0.0,
        "ok": True,
    }


def test_identity_hours_sums_each_identitys_first_to_last_event():
    events = [
        {"identity": "a", "event_time": "2025-01-06T10:30:00Z"},
        {"identity": "b", "event_time": "2025-01-06T10:00:00.000Z"},
        {"identity": "a", "event_time": "2025-01-06T10:00:00Z"},  # out of order: still first
        {"identity": "a", "event_time": 1736161200},  # epoch seconds, 2025-01-06T11:00Z
        {"identity": "b", "event_time": "2025-01-06T10:15:00+00:00"},
        {"identity": "c", "event_time": "2025-01-06T12:00:00Z"},  # one event: zero hours
    ]

    assert identity_hours(events) == pytest.approx(1.0 + 0.25)


def test_evaluation_incidents_start_after_the_detectors_warm_up_by_default():
    cfg, notes = evaluation_config(
        start=T0, identities=200, minutes=300, seed=3, kinds="all", incidents=None, traps=None
    )

    warmup = detector_warmup_minutes()
    assert warmup >= 20
    assert cfg.incident_after_minutes == warmup
    assert all(i.start >= T0 + timedelta(minutes=warmup) for i in plan_incidents(cfg))
    assert cfg.incidents == 3 * len(cfg.incident_kinds)
    assert any("warm-up" in note for note in notes)


def test_evaluation_refuses_an_unknown_incident_kind():
    with pytest.raises(ValueError, match="no_such_kind"):
        evaluation_config(
            start=T0,
            identities=60,
            minutes=240,
            seed=3,
            kinds="runaway_agent,no_such_kind",
            incidents=2,
            traps=None,
        )


def test_alerts_on_a_chain_bystander_during_the_incident_are_neither_false_nor_detections():
    chain = incident(identity="agent-root", start=0, end=15, kind="agent_chain")
    alerts = [alert("agent-helper", minute=3, detector="spike")]
    report = score(alerts, [chain], identity_hours=100.0, bystanders={chain: ("agent-helper",)})
    assert report.overall.false_alerts == 0
    assert report.outcomes[0].ttd_s is None  # the root itself was not alerted on


def test_budget_alert_after_an_incident_is_its_consequence_not_a_false_alert():
    burst = incident(identity="agent-a", start=0, end=15)
    late_budget = alert("agent-a", minute=90, detector="budget")
    late_spike = alert("agent-a", minute=95, detector="spike")
    report = score([late_budget, late_spike], [burst], identity_hours=100.0)
    assert [(f.identity, f.detector) for f in report.false_alerts] == [("agent-a", "spike")]
