"""Budgets of teams, business units and environments: the policy file's `group_budgets` and
the pure decisions (streams/policy/group_budgets.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from meterguard.models import MeteringEvent
from meterguard.streams.policy.config import GroupBudget, PolicyConfig
from meterguard.streams.policy.group_budgets import (
    CAP_MARK,
    DAY_MS,
    GROUP_DETECTOR,
    GroupPeriod,
    Period,
    Spend,
    alert_id,
    alerts,
    assess,
    commands,
    fraction_mark,
    members_of,
    needs_members,
    period_of,
    touched,
    wanted,
)
from meterguard.streams.policy.registry import Ownership, Registry
from meterguard.timeutil import MINUTE_MS, to_ms

DAY = datetime(2026, 3, 2, tzinfo=UTC)
DAY_START = to_ms(DAY)
NANO = 1_000_000_000
REGISTRY = Registry(
    identities={
        "agent-a": Ownership(team="payments", business_unit="retail"),
        "agent-b": Ownership(team="payments", environment="prod"),
        "agent-c": Ownership(team="search"),
    }
)


def day_group(dimension: str = "team", value: str = "payments") -> GroupPeriod:
    return GroupPeriod(dimension, value, period_of("day", DAY_START))


def spend_at(usd: float, minute_of_day: int, tokens: int = 0) -> Spend:
    return Spend(round(usd * NANO), tokens, DAY_START // MINUTE_MS + minute_of_day)


# -- the policy file -------------------------------------------------------------------------


def test_group_budgets_load_from_the_policy_file(tmp_path: Path) -> None:
    path = tmp_path / "meterguard.yaml"
    path.write_text(
        "group_budgets:\n"
        "  team:\n"
        "    payments: {limit_usd: 5000, period: month, warn_at: [0.5, 0.8, 0.95], "
        "at_cap: block}\n"
        "    search:\n"
        "      limit_usd: 200\n"
        "      limit_tokens: 50000000\n"
        "      period: day\n"
        "      at_cap: throttle\n"
        "      throttle: {requests_per_minute: 5}\n"
        "  business_unit:\n"
        "    retail: {limit_usd: 20000}\n"
        "  environment:\n"
        "    staging: {limit_tokens: 1000000, period: day}\n"
    )
    policy = PolicyConfig.load(str(path))
    budgets = policy.group_budgets
    assert budgets.configured
    assert budgets.team["payments"] == GroupBudget(
        limit_usd=5000, period="month", warn_at=(0.5, 0.8, 0.95), at_cap="block"
    )
    search = budgets.of("team")["search"]
    assert (search.limit_tokens, search.period, search.at_cap) == (50_000_000, "day", "throttle")
    assert search.throttle is not None and search.throttle.requests_per_minute == 5
    retail = budgets.business_unit["retail"]
    assert (retail.period, retail.warn_at, retail.at_cap) == ("month", (0.5, 0.8, 0.95), "alert")
    assert budgets.environment["staging"].limit_usd is None
    assert not PolicyConfig().group_budgets.configured


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("team: {payments: {limit_usd: 10, warn_at: [0.5, 1.0]}}", "not a fraction in (0, 1)"),
        ("team: {payments: {limit_usd: 10, warn_at: [0, 0.5]}}", "not a fraction in (0, 1)"),
        ("team: {payments: {limit_usd: 10, warn_at: [0.8, 0.5]}}", "fractions must increase"),
        ("team: {payments: {limit_usd: 10, warn_at: [0.5, 0.5]}}", "fractions must increase"),
        ("team: {payments: {period: week, limit_usd: 10}}", "group_budgets.team.payments.period"),
        ("team: {payments: {limit_usd: 10, at_cap: page}}", "at_cap"),
        ("team: {payments: {limit_usd: 0}}", "limit_usd"),
        ("team: {payments: {limit_usd: 10, limt_tokens: 5}}", "limt_tokens"),
        ("team: {payments: {period: day}}", "needs limit_usd, limit_tokens or both"),
        ("squad: {payments: {limit_usd: 10}}", "squad"),
        (
            "team: {payments: {limit_usd: 10, throttle: {requests_per_minute: 5}}}",
            "only used with at_cap: throttle",
        ),
        (
            "team: {payments: {limit_usd: 10, at_cap: throttle, throttle: {rpm: 5}}}",
            "throttle.rpm",
        ),
    ],
)
def test_bad_group_budgets_are_clear_errors(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "meterguard.yaml"
    path.write_text("group_budgets:\n  " + text + "\n")
    with pytest.raises(ValueError, match="invalid policy file") as info:
        PolicyConfig.load(str(path))
    assert needle in str(info.value)


def test_the_shipped_example_policy_has_group_budgets() -> None:
    example = Path(__file__).parents[2] / "deploy" / "meterguard.yaml"
    policy = PolicyConfig.load(str(example))
    assert policy.group_budgets.configured


# -- periods ---------------------------------------------------------------------------------


def test_periods_are_utc_calendar_hours_days_and_months() -> None:
    at = to_ms(datetime(2026, 3, 2, 17, 42, 5, tzinfo=UTC))
    assert period_of("hour", at) == Period(
        "hour",
        to_ms(datetime(2026, 3, 2, 17, tzinfo=UTC)),
        to_ms(datetime(2026, 3, 2, 18, tzinfo=UTC)),
    )
    assert period_of("day", at) == Period("day", DAY_START, DAY_START + DAY_MS)
    march = period_of("month", at)
    assert (march.start_ms, march.end_ms) == (
        to_ms(datetime(2026, 3, 1, tzinfo=UTC)),
        to_ms(datetime(2026, 4, 1, tzinfo=UTC)),
    )
    assert len(march.hours) == 31 * 24
    december = period_of("month", to_ms(datetime(2025, 12, 31, 23, 59, tzinfo=UTC)))
    assert december.end_ms == to_ms(datetime(2026, 1, 1, tzinfo=UTC))
    leap = period_of("month", to_ms(datetime(2028, 2, 29, 12, tzinfo=UTC)))
    assert len(leap.hours) == 29 * 24
    # The first instant of a period is in it; the last instant of the one before is not.
    assert period_of("day", DAY_START).start_ms == DAY_START
    assert period_of("day", DAY_START - 1).end_ms == DAY_START


def test_touched_lists_the_budgeted_groups_of_the_events_per_period() -> None:
    policy = PolicyConfig.model_validate(
        {
            "group_budgets": {
                "team": {"payments": {"limit_usd": 10, "period": "day"}},
                "business_unit": {"retail": {"limit_usd": 100}},
            }
        }
    )

    def event(identity: str, at: datetime, **fields: str) -> MeteringEvent:
        return MeteringEvent(
            event_id=f"{identity}-{at}", identity=identity, event_time=at, **fields
        )

    events = [
        event("agent-a", DAY + timedelta(hours=23, minutes=59)),
        event("agent-b", DAY + timedelta(days=1, minutes=1)),
        event("agent-c", DAY),  # search: no budget
        event("stray", DAY, team="payments"),  # not registered: its own field counts
        event("agent-c", DAY, team="payments"),  # the registry wins: search
    ]
    found = touched(events, REGISTRY, policy.group_budgets)
    assert found == sorted(
        [
            GroupPeriod("business_unit", "retail", period_of("month", DAY_START)),
            GroupPeriod("team", "payments", period_of("day", DAY_START)),
            GroupPeriod("team", "payments", period_of("day", DAY_START + DAY_MS)),
        ]
    )


# -- fractions, forecast ---------------------------------------------------------------------


def test_fractions_crossed_and_the_cap() -> None:
    budget = GroupBudget(limit_usd=10, period="day", warn_at=(0.5, 0.8, 0.95))
    group = day_group()
    assert wanted(assess(group, budget, spend_at(4.99, 600))) == []
    assert wanted(assess(group, budget, spend_at(5.0, 600))) == ["a|0.5"]
    assert wanted(assess(group, budget, spend_at(9.6, 600))) == ["a|0.5", "a|0.8", "a|0.95"]
    capped = assess(group, budget, spend_at(10.0, 600))
    assert wanted(capped) == ["a|0.5", "a|0.8", "a|0.95", CAP_MARK]
    assert capped.at_cap and not capped.over


def test_the_larger_of_usd_and_tokens_counts() -> None:
    budget = GroupBudget(limit_usd=100, limit_tokens=1_000_000, period="day")
    a = assess(day_group(), budget, spend_at(10.0, 600, tokens=820_000))
    assert a.fraction == pytest.approx(0.82)
    assert wanted(a) == ["a|0.5", "a|0.8"]
    tokens_only = GroupBudget(limit_tokens=1_000, period="day")
    assert assess(day_group(), tokens_only, spend_at(1e6, 600, tokens=999)).fraction == 0.999


def test_forecast_is_the_burn_rate_of_the_period_so_far() -> None:
    budget = GroupBudget(limit_usd=10, period="day")
    # $5 in the first 6 hours: $0.833/h, the other $5 take 6 more hours -> 12:00 UTC.
    a = assess(day_group(), budget, spend_at(5.0, 6 * 60 - 1))
    assert a.as_of_ms == DAY_START + 6 * 60 * MINUTE_MS
    assert a.burn_usd_per_hour == pytest.approx(5 / 6)
    assert a.cap_at_ms == DAY_START + 12 * 60 * MINUTE_MS
    assert a.projected_usd == pytest.approx(20.0)
    (alert,) = alerts(a, ["a|0.5"])
    assert alert.evidence["forecast_cap_at"] == "2026-03-02T12:00:00Z"
    assert "cap is reached ~2026-03-02 12:00 UTC, before the period ends" in alert.summary
    assert "$0.83/h" in alert.summary
    # $5 by 18:00: the day ends at $6.67, under the cap: no cap time, the projection instead.
    slow = assess(day_group(), budget, spend_at(5.0, 18 * 60 - 1))
    assert slow.cap_at_ms is None
    assert slow.projected_usd == pytest.approx(20 / 3)
    (alert,) = alerts(slow, ["a|0.5"])
    assert alert.evidence["forecast_cap_at"] is None
    assert "the period ends at 67% of the budget" in alert.summary


def test_a_period_that_ended_alerts_but_commands_nothing() -> None:
    """Late events can push yesterday over: the alert says so, nothing is enforced."""
    budget = GroupBudget(limit_usd=10, period="day", at_cap="block")
    a = assess(day_group(), budget, spend_at(11.0, 2 * 24 * 60))  # the group is a day ahead
    assert a.as_of_ms == DAY_START + DAY_MS and a.over and a.at_cap
    assert not needs_members(a)
    assert commands(a, ["agent-a"], PolicyConfig(), 30_000) == []
    cap = alerts(a, [CAP_MARK])[0]
    assert "the period has ended" in cap.summary


# -- alerts ----------------------------------------------------------------------------------


def test_alert_ids_depend_on_group_period_and_fraction_only() -> None:
    budget = GroupBudget(limit_usd=10, period="day")
    early = assess(day_group(), budget, spend_at(8.1, 600))
    late = assess(day_group(), budget, spend_at(9.0, 900))  # another batching, same crossing
    (one,) = alerts(early, [fraction_mark(0.8)])
    (two,) = alerts(late, [fraction_mark(0.8)])
    assert one.alert_id == two.alert_id == alert_id(day_group(), "a|0.8")
    assert one.evidence["spent_usd"] != two.evidence["spent_usd"]
    ids = {
        alert_id(day_group(), "a|0.5"),
        alert_id(day_group(), "a|0.8"),
        alert_id(day_group(), CAP_MARK),
        alert_id(day_group("team", "search"), "a|0.8"),
        alert_id(day_group("environment", "payments"), "a|0.8"),
        alert_id(GroupPeriod("team", "payments", period_of("day", DAY_START + DAY_MS)), "a|0.8"),
    }
    assert len(ids) == 6


def test_a_group_alert_names_the_group_and_shares_the_periods_episode() -> None:
    budget = GroupBudget(limit_usd=10, period="day", at_cap="block")
    a = assess(day_group(), budget, spend_at(10.5, 600))
    warning, cap = alerts(a, ["a|0.95", CAP_MARK], commanded=3)
    assert warning.identity == cap.identity == "team:payments"
    assert warning.detector == cap.detector == GROUP_DETECTOR
    assert (warning.severity, cap.severity) == ("warning", "critical")
    assert (warning.team, warning.environment) == ("payments", None)
    assert warning.episode_id == cap.episode_id
    assert warning.alert_id != cap.alert_id
    assert cap.score == 1.0 and cap.status == "firing"
    assert cap.title == "Team budget reached: payments"
    assert warning.title == "Team budget 95% spent: payments"
    assert cap.evidence["identities_commanded"] == 3
    assert cap.evidence["threshold"] == 1.0 and warning.evidence["threshold"] == 0.95
    assert "blocked until 2026-03-03 00:00 UTC (3 now)" in cap.summary
    assert "the cap is already reached" in warning.summary  # one batch crossed 0.95 and 1
    assert warning.window_start == DAY
    env = alerts(assess(day_group("environment", "prod"), budget, spend_at(6, 60)), ["a|0.5"])
    assert (env[0].identity, env[0].team, env[0].environment) == ("environment:prod", None, "prod")
    unassigned = alerts(assess(day_group("team", ""), budget, spend_at(6, 60)), ["a|0.5"])
    assert unassigned[0].identity == "team:(unassigned)"


# -- commands at the cap ---------------------------------------------------------------------


def test_block_at_the_cap_commands_every_member_until_the_period_ends() -> None:
    budget = GroupBudget(limit_usd=10, period="day", at_cap="block")
    a = assess(day_group(), budget, spend_at(10.0, 600))
    assert needs_members(a)
    made = commands(a, ["agent-b", "agent-a"], PolicyConfig(), 30_000)
    assert [c.identity for c in made] == ["agent-a", "agent-b"]
    for c in made:
        assert c.action == "block"
        assert (c.limits.requests_per_minute, c.limits.tokens_per_minute) == (0, 0)
        assert c.alert_id == alert_id(day_group(), CAP_MARK)
        assert c.expires_at == DAY + timedelta(days=1)
        assert c.version == DAY_START + DAY_MS  # outranks every command of the day
        assert "team payments reached its daily budget of $10.00" in c.reason
    # Another batching of the same crossing: the same commands.
    again = commands(
        assess(day_group(), budget, spend_at(12.0, 700)), ["agent-a"], PolicyConfig(), 0
    )
    assert (again[0].command_id, again[0].version) == (made[0].command_id, made[0].version)


def test_throttle_at_the_cap_uses_the_budgets_limits_or_the_policy_floors() -> None:
    policy = PolicyConfig(min_requests_per_minute=12, min_tokens_per_minute=3_000)
    given = GroupBudget.model_validate(
        {
            "limit_usd": 10,
            "period": "day",
            "at_cap": "throttle",
            "throttle": {"tokens_per_minute": 500},
        }
    )
    a = assess(day_group(), given, spend_at(10.0, 600))
    (c,) = commands(a, ["agent-a"], policy, 30_000)
    assert c.action == "throttle"
    assert (c.limits.requests_per_minute, c.limits.tokens_per_minute) == (12, 500)
    assert c.version == a.as_of_ms + 30_000
    assert c.expires_at == DAY + timedelta(days=1)
    floors = GroupBudget(limit_usd=10, period="day", at_cap="throttle")
    (f,) = commands(assess(day_group(), floors, spend_at(10.0, 600)), ["agent-a"], policy, 0)
    assert (f.limits.requests_per_minute, f.limits.tokens_per_minute) == (12, 3_000)


def test_alert_only_at_the_cap_commands_nobody() -> None:
    budget = GroupBudget(limit_usd=10, period="day")
    a = assess(day_group(), budget, spend_at(10.0, 600))
    assert a.at_cap and not needs_members(a)
    assert commands(a, ["agent-a"], PolicyConfig(), 0) == []
    assert "alert only" in alerts(a, [CAP_MARK])[0].summary


def test_members_the_registry_moved_to_another_group_are_not_commanded() -> None:
    seen = ["agent-a", "agent-b", "agent-c", "stray"]
    # agent-c was in payments once; the registry now says search. stray is not registered.
    assert members_of(seen, REGISTRY, "team", "payments") == ["agent-a", "agent-b", "stray"]
    # agent-a names no environment: the registry says nothing against it.
    assert members_of(seen, REGISTRY, "environment", "staging") == ["agent-a", "agent-c", "stray"]
