"""The dashboard's pure data assembly: firing episodes, sparkline series, detail rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from meterguard.detectors.features import MinuteWindow
from meterguard.models import ThrottleCommand
from meterguard.streams.web import dashboard_view as view
from tests.support.alerts import make_alert

NOW = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
MINUTE = 29_460_060  # 2026-01-05 09:00 UTC as an epoch minute


def alert(
    identity: str = "agent-a",
    detector: str = "spike",
    start: int | None = MINUTE,
    status: str = "firing",
    severity: str = "warning",
    minute: int = MINUTE,
    alert_id: str | None = None,
) -> dict[str, Any]:
    """An alert as the Redis list of recent alerts holds it: JSON, on epoch minute `minute`."""
    evidence: dict[str, Any] = {"minute": minute}
    if start is not None:
        evidence["episode_start_minute"] = start
    opened = datetime.fromtimestamp(minute * 60, UTC)
    return make_alert(
        identity,
        detector,
        alert_id=alert_id or f"{identity}-{detector}-{start}-{status}-{severity}-{minute}",
        severity=severity,
        status=status,
        start=opened,
        evidence=evidence,
        event_time=opened + timedelta(minutes=1),
    ).model_dump(mode="json")


def command(identity: str = "agent-a", minutes_left: float = 10) -> ThrottleCommand:
    return ThrottleCommand(
        command_id=f"cmd-{identity}",
        identity=identity,
        action="throttle",
        reason="spike",
        issued_at=NOW - timedelta(minutes=1),
        expires_at=NOW + timedelta(minutes=minutes_left),
        version=1,
    )


def test_an_episode_whose_latest_alert_resolved_is_not_firing():
    recent = [  # newest first, as the Redis list holds them
        alert(status="resolved", severity="info", minute=MINUTE + 7),
        alert(minute=MINUTE),
    ]
    assert view.firing_alerts(recent) == []


def test_an_escalated_episode_fires_once_with_its_latest_severity():
    recent = [alert(severity="critical", minute=MINUTE + 1), alert(minute=MINUTE)]
    firing = view.firing_alerts(recent)
    assert [(a["severity"], a["evidence"]["minute"]) for a in firing] == [("critical", MINUTE + 1)]


def test_a_new_episode_of_the_same_detector_fires_after_an_old_one_resolved():
    recent = [
        alert(start=MINUTE + 20, minute=MINUTE + 20),
        alert(status="resolved", severity="info", minute=MINUTE + 7),
        alert(minute=MINUTE),
    ]
    firing = view.firing_alerts(recent)
    assert [a["evidence"]["episode_start_minute"] for a in firing] == [MINUTE + 20]


def test_firing_is_judged_by_event_time_not_by_list_order():
    # A redelivered firing alert pushed after its resolution must not reopen the episode.
    recent = [alert(minute=MINUTE), alert(status="resolved", severity="info", minute=MINUTE + 7)]
    assert view.firing_alerts(recent) == []


def test_episodes_are_told_apart_by_identity_detector_and_start():
    recent = [
        alert("agent-a", "spike"),
        alert("agent-a", "retry_loop", severity="critical"),
        alert("agent-b", "spike"),
        alert("agent-a", "spike", status="resolved", severity="info", start=MINUTE - 50),
    ]
    firing = view.firing_alerts(recent)
    keys = [(a["identity"], a["detector"]) for a in firing]
    assert keys == [("agent-a", "retry_loop"), ("agent-a", "spike"), ("agent-b", "spike")]


def test_an_alert_without_an_episode_start_counts_as_its_own_episode():
    recent = [alert(start=None, alert_id="x"), alert(start=None, alert_id="y")]
    assert {a["alert_id"] for a in view.firing_alerts(recent)} == {"x", "y"}


def test_identity_alerts_are_newest_first_one_per_id_and_capped():
    recent = [
        alert("agent-a", minute=MINUTE + 2),
        alert("agent-b", minute=MINUTE + 2),
        alert("agent-a", minute=MINUTE + 2),  # a redelivery of the same alert
        alert("agent-a", minute=MINUTE + 1),
        alert("agent-a", minute=MINUTE),
    ]
    mine = view.identity_alerts(recent, "agent-a", limit=2)
    assert [a["evidence"]["minute"] for a in mine] == [MINUTE + 2, MINUTE + 1]


def test_sparkline_range_ends_at_the_identitys_watermark_minute():
    watermark_ms = (MINUTE + 5) * 60_000 + 12_345
    assert view.minute_range(watermark_ms, 30) == (MINUTE - 24, MINUTE + 5)
    assert view.minute_range(None, 30) is None


def test_sparkline_series_are_per_minute_tokens_and_cost_in_usd():
    rows = [
        MinuteWindow(MINUTE, calls=2, input_tokens=300, output_tokens=100, cost_nano_usd=1_500),
        MinuteWindow(MINUTE + 1),
    ]
    assert view.series(rows, "tokens") == [400.0, 0.0]
    assert view.series(rows, "cost_usd") == [1.5e-6, 0.0]


def test_ranking_rows_carry_total_series_and_watermark():
    rows = {"a": [MinuteWindow(MINUTE, input_tokens=7), MinuteWindow(MINUTE + 1)]}
    ranked = view.ranking(
        [("a", 2_500_000_000.0), ("gone", 1.0)], "tokens", rows, {"a": 123}, scale=1e9
    )
    assert ranked[0] == {
        "identity": "a",
        "total": 2.5,
        "series": [7.0, 0.0],
        "start_minute": MINUTE,
        "watermark_ms": 123,
    }
    assert ranked[1]["series"] == [] and ranked[1]["watermark_ms"] is None


def test_detail_marks_minutes_after_the_final_one_as_open():
    rows = [MinuteWindow(MINUTE), MinuteWindow(MINUTE + 1, calls=3)]
    out = view.window_rows(rows, final_through=MINUTE)
    assert [(r["minute"], r["open"], r["calls"]) for r in out] == [
        (MINUTE, False, 0),
        (MINUTE + 1, True, 3),
    ]


def test_dashboard_drops_expired_throttles_and_counts_what_it_shows():
    doc = view.dashboard(
        top_tokens=[],
        top_cost=[],
        recent=[alert()],
        throttles=[command("live", 10), command("stale", -1)],
        stats={"events_new": 5},
        now=NOW,
    )
    assert [t["identity"] for t in doc["throttles"]] == ["live"]
    assert doc["throttles"][0]["seconds_left"] == 600
    assert doc["stats"] == {"events_new": 5, "alerts_firing": 1, "throttles_active": 1}


def test_identity_detail_leaves_out_an_expired_throttle():
    detail = view.identity_detail(
        identity="agent-a",
        counters={"wm": 1, "fin": MINUTE, "new": 4},
        rows=[],
        recent=[alert(), alert("agent-b")],
        throttle=command("agent-a", -5),
        now=NOW,
    )
    assert detail["throttle"] is None
    assert detail["events"] == {"new": 4, "dup": 0, "late": 0}
    assert [a["identity"] for a in detail["alerts"]] == ["agent-a"]
