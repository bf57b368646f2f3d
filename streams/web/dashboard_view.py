"""What the live dashboard shows, assembled from plain data (pure: no Redis, no HTTP).

`streams/web/dashboard.py` reads Redis through the Store and hands the pieces here; the
page (`streams/web/static/dashboard.*`) only draws what these functions return.

Time on the dashboard is event time: an identity's sparkline ends at the minute of its own
watermark (the newest event time seen), not at the wall clock, so a replay of last month's
events draws the same pictures as the live run did. The spend panels (teams, root agents, one
team's members and budget) cover the SPEND_HOURS event-time hours that end with the
rankings' newest hour (store/history.py `{top}:hours`), the same "now" as the top lists.
Their sums are the showback report's (store/showback.py `build`), over the same roll-ups.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from meterguard.detectors.features import MinuteWindow
from meterguard.models import ThrottleCommand, episode_id_of
from meterguard.streams.policy.config import GroupBudget
from meterguard.streams.policy.group_budgets import HOUR_MS, GroupPeriod, Spend, assess, period_of
from meterguard.streams.store.rollups import UNASSIGNED_LABEL
from meterguard.streams.store.showback import GroupRows, Period, Report, Usage, hour_text
from meterguard.timeutil import MINUTE_MS

SPARK_MINUTES = 30
DETAIL_MINUTES = 60
TOP_N = 10
SPEND_HOURS = 24  # the spend panels' period: event-time hours ending with the newest one
TEAM_MEMBERS_N = 100  # members listed in a team's view (by cost); the count says how many
_SEVERITY_RANK = {"critical": 0, "warning": 1, "info": 2}


def minute_range(watermark_ms: int | None, minutes: int) -> tuple[int, int] | None:
    """The `minutes` epoch minutes ending with the watermark's minute (None: no events yet)."""
    if watermark_ms is None or watermark_ms < 0:
        return None
    last = watermark_ms // MINUTE_MS
    return last - minutes + 1, last


def series(rows: Sequence[MinuteWindow], metric: str) -> list[float]:
    """One number per minute, in minute order; cost in USD (what the page prints)."""
    if metric == "tokens":
        return [float(r.tokens) for r in rows]
    if metric == "cost_usd":
        return [r.cost_nano_usd / 1e9 for r in rows]
    if metric == "calls":
        return [float(r.calls) for r in rows]
    raise KeyError(f"unknown sparkline metric {metric!r}")


def ranking(
    top: Sequence[tuple[str, float]],
    metric: str,
    windows: Mapping[str, Sequence[MinuteWindow]],
    watermarks: Mapping[str, int],
    scale: float = 1.0,
) -> list[dict[str, Any]]:
    """Rows of a "top identities" table: total (score / scale), sparkline, last event."""
    out = []
    for identity, score in top:
        rows = windows.get(identity, ())
        out.append(
            {
                "identity": identity,
                "total": score / scale,
                "series": series(rows, metric),
                "start_minute": rows[0].minute if rows else None,
                "watermark_ms": watermarks.get(identity),
            }
        )
    return out


def _latest_first(alerts: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Newest first by event time; the Redis list's own order (newest pushed first) breaks
    ties, and at equal times a resolution outranks the firing it closes."""
    indexed = list(enumerate(alerts))
    indexed.sort(
        key=lambda pair: (
            str(pair[1].get("window_end", "")),
            pair[1].get("status") == "resolved",
            -pair[0],
        ),
        reverse=True,
    )
    return [a for _, a in indexed]


def firing_alerts(recent: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Episodes whose latest alert still fires: the latest status per `episode_id` (an
    escalation is a second firing alert of the same episode, a resolution closes it; stored
    alerts from before `episode_id` get it derived, see models.episode_id_of). Most severe
    first, then newest."""
    seen: set[str] = set()
    firing: list[dict[str, Any]] = []
    for alert in _latest_first(recent):
        key = episode_id_of(alert)
        if key in seen:
            continue
        seen.add(key)
        if alert.get("status") == "firing":
            firing.append(dict(alert))
    firing.sort(key=lambda a: str(a.get("event_time", "")), reverse=True)
    firing.sort(key=lambda a: _SEVERITY_RANK.get(str(a.get("severity")), 3))
    return firing


def identity_alerts(
    recent: Iterable[Mapping[str, Any]], identity: str, limit: int = 20
) -> list[dict[str, Any]]:
    """One identity's alerts, newest first, each id once (redeliveries repeat ids)."""
    mine = [a for a in recent if a.get("identity") == identity]
    out: list[dict[str, Any]] = []
    ids: set[Any] = set()
    for alert in _latest_first(mine):
        if alert.get("alert_id") in ids:
            continue
        ids.add(alert.get("alert_id"))
        out.append(dict(alert))
        if len(out) == limit:
            break
    return out


def throttle_view(command: ThrottleCommand, now: datetime) -> dict[str, Any]:
    """A command as JSON plus seconds left, from the server's clock (keys expire by it)."""
    doc = command.model_dump(mode="json")
    doc["seconds_left"] = max(0, int((command.expires_at - now).total_seconds()))
    return doc


def window_rows(rows: Sequence[MinuteWindow], final_through: int | None) -> list[dict[str, Any]]:
    """Rows of the detail chart; `open` marks minutes still taking events (not yet scored)."""
    return [
        {
            "minute": r.minute,
            "calls": r.calls,
            "tokens": r.tokens,
            "input_tokens": r.input_tokens,
            "output_tokens": r.output_tokens,
            "cost_usd": r.cost_nano_usd / 1e9,
            "errors": r.errors,
            "open": final_through is None or r.minute > final_through,
        }
        for r in rows
    ]


def dashboard(
    *,
    top_tokens: list[dict[str, Any]],
    top_cost: list[dict[str, Any]],
    recent: Sequence[Mapping[str, Any]],
    throttles: Sequence[ThrottleCommand],
    stats: Mapping[str, int],
    now: datetime,
    spend: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The page's JSON; `spend`: spend_panels() (none yet: empty panels)."""
    firing = firing_alerts(recent)
    active = [throttle_view(c, now) for c in throttles if not c.is_expired(now)]
    active.sort(key=lambda c: c["expires_at"])
    return {
        "server_time": now.isoformat(),
        "spark_minutes": SPARK_MINUTES,
        "top_tokens": top_tokens,
        "top_cost": top_cost,
        "firing": firing,
        "throttles": active,
        "stats": {**stats, "alerts_firing": len(firing), "throttles_active": len(active)},
        **(spend if spend is not None else spend_panels(None, None, [], [], {}, None)),
    }


def identity_detail(
    *,
    identity: str,
    counters: Mapping[str, int],
    rows: Sequence[MinuteWindow],
    recent: Sequence[Mapping[str, Any]],
    throttle: ThrottleCommand | None,
    now: datetime,
) -> dict[str, Any]:
    live = throttle if throttle is not None and not throttle.is_expired(now) else None
    return {
        "identity": identity,
        "server_time": now.isoformat(),
        "watermark_ms": counters.get("wm"),
        "events": {k: counters.get(k, 0) for k in ("new", "dup", "late")},
        "minutes": window_rows(rows, counters.get("fin")),
        "alerts": identity_alerts(recent, identity),
        "throttle": throttle_view(live, now) if live is not None else None,
    }


# -- spend: teams, root agents, one team -------------------------------------------------------
def spend_period(newest_hour: int | None) -> Period | None:
    """The SPEND_HOURS event-time hours ending with the rankings' newest hour (None: no
    usage counted yet)."""
    if newest_hour is None:
        return None
    return Period(newest_hour - SPEND_HOURS + 1, newest_hour + 1)


def usage_row(usage: Usage, late: Usage | None = None) -> dict[str, Any]:
    """Calls, tokens (input + output), cost (USD for the page, nano-USD exact), errors, and
    the late part: what arrived after its minute was final (README, showback)."""
    late = late or Usage()
    return {
        "calls": usage.calls,
        "tokens": usage.input_tokens + usage.output_tokens,
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cached_tokens": usage.cached_tokens,
        "cost_usd": usage.cost_nano_usd / 1e9,
        "cost_nano_usd": usage.cost_nano_usd,
        "errors": usage.errors,
        "late_calls": late.calls,
        "late_cost_usd": late.cost_nano_usd / 1e9,
        "late_cost_nano_usd": late.cost_nano_usd,
    }


def _team_value(label: str, values: Iterable[str]) -> str:
    """The team a report line is about: its label, but "" for "(unassigned)" (the filter's
    `?team=`), unless a team is really called so and none is unassigned."""
    return "" if label == UNASSIGNED_LABEL and "" in values else label


def spend_by_team(report: Report, values: Sequence[str]) -> list[dict[str, Any]]:
    """The report's lines (by cost, highest first): `team` to show, `value` to filter by."""
    return [
        {
            "team": line.group,
            "value": _team_value(line.group, values),
            **usage_row(line.usage, line.late),
        }
        for line in report.rows
    ]


def rank_driven(driven: Mapping[str, GroupRows], n: int = TOP_N) -> list[tuple[str, Usage]]:
    """The `n` identities that drove the most cost downstream in the period (their
    `driven` roll-up's hours), highest first; none that drove nothing."""
    totals = [(identity, rows.total()) for identity, rows in driven.items()]
    found = [(i, u) for i, u in totals if u.cost_nano_usd > 0 or u.calls > 0]
    found.sort(key=lambda pair: (-pair[1].cost_nano_usd, -pair[1].calls, pair[0]))
    return found[:n]


def root_agents(
    ranked: Sequence[tuple[str, Usage]], own: Mapping[str, GroupRows]
) -> list[dict[str, Any]]:
    """Rows of "top cost-driven root agents": what each drove (others' spans in chains it
    started), its own use, and how many times its own cost it drove (None: no own cost)."""
    out = []
    for identity, driven in ranked:
        mine = own[identity].total() if identity in own else Usage()
        ratio = driven.cost_nano_usd / mine.cost_nano_usd if mine.cost_nano_usd else None
        out.append(
            {
                "identity": identity,
                "driven": usage_row(driven),
                "own": usage_row(mine, own[identity].late_total() if identity in own else None),
                "driven_per_own": ratio,
            }
        )
    return out


def team_budget_group(team: str, budget: GroupBudget, newest_hour: int) -> GroupPeriod:
    """The team's budget period (UTC hour, day or month) holding the newest event-time hour."""
    return GroupPeriod("team", team, period_of(budget.period, newest_hour * HOUR_MS))


def budget_state(
    group: GroupPeriod, budget: GroupBudget, spent: MinuteWindow, newest_minute: int | None
) -> dict[str, Any]:
    """Spent / limit and the fraction (policy/group_budgets.py `assess`: the larger of the
    USD and token fractions) of the group's period so far."""
    a = assess(group, budget, Spend(spent.cost_nano_usd, spent.tokens, newest_minute))
    period = group.period
    return {
        "period": period.kind,
        "from": hour_text(period.start_ms // HOUR_MS),
        "to": hour_text(period.end_ms // HOUR_MS),
        "spent_usd": a.spent_usd,
        "spent_nano_usd": spent.cost_nano_usd,
        "limit_usd": budget.limit_usd,
        "spent_tokens": a.spent_tokens,
        "limit_tokens": budget.limit_tokens,
        "fraction": a.fraction,
    }


def team_view(
    report: Report | None,
    value: str,
    members: Sequence[str],
    rows: Mapping[str, GroupRows],
    budget: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """One team (`/?team=`): its line of the period, its members (the roll-up's members set:
    identities seen in the team) by cost with their own use in the period, its budget."""
    label = value or UNASSIGNED_LABEL
    line = next((r for r in report.rows if r.group == label), None) if report else None
    listed = []
    for identity in members:
        held = rows.get(identity, GroupRows())
        listed.append({"identity": identity, **usage_row(held.total(), held.late_total())})
    listed.sort(key=lambda m: (-m["cost_nano_usd"], -m["calls"], m["identity"]))
    return {
        "team": label,
        "value": value,
        **(usage_row(line.usage, line.late) if line else usage_row(Usage())),
        "members_count": len(members),
        "members": listed[:TEAM_MEMBERS_N],
        "budget": budget,
    }


def spend_panels(
    period: Period | None,
    report: Report | None,
    teams: Sequence[str],
    ranked: Sequence[tuple[str, Usage]],
    own: Mapping[str, GroupRows],
    team: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The spend part of the dashboard's JSON (`teams`: the team values the roll-ups hold)."""
    totals = report.totals if report else None
    return {
        "spend_hours": SPEND_HOURS,
        "spend_period": period.to_dict() if period else None,
        "spend_by_team": spend_by_team(report, teams) if report else [],
        "spend_totals": usage_row(totals.usage, totals.late) if totals else None,
        "top_driven": root_agents(ranked, own),
        "team": dict(team) if team is not None else None,
    }
