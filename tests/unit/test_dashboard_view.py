"""The dashboard's pure data assembly: firing episodes, sparkline series, detail rows, and
the spend panels (teams, root agents, one team's members and budget)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from meterguard.detectors.features import MinuteWindow
from meterguard.models import ThrottleCommand
from meterguard.streams.policy.config import GroupBudget
from meterguard.streams.store.showback import GroupRows, Usage, build
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
    # No spend read yet: the panels are there, empty.
    assert doc["spend_period"] is None and doc["spend_totals"] is None
    assert (doc["spend_by_team"], doc["top_driven"], doc["team"]) == ([], [], None)


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


# -- spend panels ----------------------------------------------------------------------------
HOUR = MINUTE // 60  # 2026-01-05 09:00 UTC as an epoch hour


def usage(calls: int, cost_nano: int, errors: int = 0, tokens: int = 0) -> Usage:
    return Usage(calls, tokens, 0, 0, cost_nano, errors)


def held(hours: dict[int, Usage], late: dict[int, Usage] | None = None) -> GroupRows:
    return GroupRows(hours=hours, late=late or {})


def test_spend_period_is_the_24_event_time_hours_ending_with_the_newest_one():
    period = view.spend_period(HOUR)
    assert period is not None
    assert (period.start_hour, period.end_hour) == (HOUR - 23, HOUR + 1)
    assert period.to_dict() == {
        "from": "2026-01-04T10:00:00Z",
        "to": "2026-01-05T10:00:00Z",
        "hours": 24,
    }
    assert view.spend_period(None) is None


def test_spend_by_team_is_the_showback_report_by_cost_with_late_parts_and_unassigned():
    period = view.spend_period(HOUR)
    assert period is not None
    groups = {
        "payments": held(
            {HOUR: usage(10, 3_000_000, errors=1, tokens=500), HOUR - 1: usage(5, 1_000_000)},
            late={HOUR - 1: usage(2, 400_000)},
        ),
        "": held({HOUR: usage(3, 7_000_000, tokens=90)}),
        "search": held({HOUR - 30: usage(99, 99_000_000)}),  # before the period: left out
        "ops": held({HOUR - 23: usage(1, 5)}),  # the period's first hour: in
    }
    report = build("team", period, "mg", groups, {})
    panels = view.spend_panels(period, report, ["", "ops", "payments", "search"], [], {}, None)
    rows = panels["spend_by_team"]
    assert [(r["team"], r["value"]) for r in rows] == [
        ("(unassigned)", ""),
        ("payments", "payments"),
        ("ops", "ops"),
    ]
    payments = rows[1]
    assert payments["calls"] == 15 and payments["tokens"] == 500 and payments["errors"] == 1
    assert payments["cost_nano_usd"] == 4_000_000 and payments["cost_usd"] == 0.004
    assert (payments["late_calls"], payments["late_cost_nano_usd"]) == (2, 400_000)
    assert payments["late_cost_usd"] == 0.0004
    totals = panels["spend_totals"]
    assert (totals["calls"], totals["cost_nano_usd"]) == (19, 11_000_005)
    assert panels["spend_period"]["hours"] == 24 and panels["spend_hours"] == 24


def test_root_agents_rank_by_cost_driven_and_show_their_own_cost():
    driven = {
        "agent-small": held({HOUR: usage(2, 1_000)}),
        "agent-big": held({HOUR: usage(4, 6_000), HOUR - 2: usage(1, 4_000)}),
        "agent-none": held({}),  # credited once, but not in this period
        "agent-free": held({HOUR: usage(3, 0)}),  # drove free calls: still listed, last
    }
    ranked = view.rank_driven(driven)
    assert [i for i, _ in ranked] == ["agent-big", "agent-small", "agent-free"]
    assert [i for i, _ in view.rank_driven(driven, n=1)] == ["agent-big"]
    own = {"agent-big": held({HOUR: usage(7, 2_500)}, late={HOUR: usage(1, 500)})}
    rows = view.root_agents(ranked, own)
    big = rows[0]
    assert big["identity"] == "agent-big"
    assert (big["driven"]["calls"], big["driven"]["cost_nano_usd"]) == (5, 10_000)
    assert (big["own"]["calls"], big["own"]["cost_nano_usd"]) == (7, 2_500)
    assert big["own"]["late_cost_nano_usd"] == 500
    assert big["driven_per_own"] == 4.0
    small = rows[1]  # its own rows were not read (or it has none): zero, no ratio
    assert small["own"]["cost_nano_usd"] == 0 and small["driven_per_own"] is None


def test_team_view_lists_members_by_spend_with_the_teams_line_and_budget():
    period = view.spend_period(HOUR)
    assert period is not None
    report = build("team", period, "mg", {"payments": held({HOUR: usage(9, 900)})}, {})
    members = ["svc-a", "svc-b", "svc-idle"]
    rows = {
        "svc-a": held({HOUR: usage(3, 100)}),
        "svc-b": held({HOUR: usage(6, 800)}, late={HOUR: usage(1, 50)}),
    }
    budget = {"fraction": 0.5}
    team = view.team_view(report, "payments", members, rows, budget)
    assert (team["team"], team["value"], team["members_count"]) == ("payments", "payments", 3)
    assert (team["calls"], team["cost_nano_usd"]) == (9, 900)
    assert [m["identity"] for m in team["members"]] == ["svc-b", "svc-a", "svc-idle"]
    assert team["members"][0]["late_cost_nano_usd"] == 50
    assert team["members"][2]["calls"] == 0
    assert team["budget"] == budget
    many = [f"svc-{i:03d}" for i in range(view.TEAM_MEMBERS_N + 5)]
    capped = view.team_view(report, "payments", many, {}, None)
    assert capped["members_count"] == view.TEAM_MEMBERS_N + 5
    assert len(capped["members"]) == view.TEAM_MEMBERS_N
    unknown = view.team_view(report, "", [], {}, None)
    assert (unknown["team"], unknown["value"], unknown["calls"]) == ("(unassigned)", "", 0)
    assert view.team_view(None, "x", ["a"], {}, None)["members"][0]["identity"] == "a"


def test_budget_state_is_spent_over_limit_in_the_period_holding_the_newest_hour():
    budget = GroupBudget(limit_usd=10, period="day")
    group = view.team_budget_group("payments", budget, HOUR)
    assert group.period.kind == "day"
    assert group.period.start_ms == (HOUR - 9) * 3_600_000  # 2026-01-05 00:00 UTC
    spent = MinuteWindow(0, calls=4, input_tokens=100, cost_nano_usd=2_500_000_000)
    state = view.budget_state(group, budget, spent, MINUTE + 30)
    assert state == {
        "period": "day",
        "from": "2026-01-05T00:00:00Z",
        "to": "2026-01-06T00:00:00Z",
        "spent_usd": 2.5,
        "spent_nano_usd": 2_500_000_000,
        "limit_usd": 10,
        "spent_tokens": 100,
        "limit_tokens": None,
        "fraction": 0.25,
    }
    by_tokens = GroupBudget(limit_usd=10, limit_tokens=200, period="month")
    month = view.team_budget_group("payments", by_tokens, HOUR)
    state = view.budget_state(month, by_tokens, spent, None)
    assert state["from"] == "2026-01-01T00:00:00Z" and state["to"] == "2026-02-01T00:00:00Z"
    assert state["fraction"] == 0.5  # the larger of the two fractions
