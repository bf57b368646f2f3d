"""Budgets of teams, business units and environments (pure, event time; the policy file's
`group_budgets`, models in config.py; the pipeline's side: runtime/group_budget_check.py).

For each group with a budget the batch touched (`touched`), in each period its events fall
in, after the batch's roll-ups: `assess` (fraction spent, fractions crossed, forecast),
`wanted` (the marks that asks for: "a|<fraction>", "a|cap"; "c|<identity>" per member to
command at the cap), then `alerts` and `commands` for the marks the store let it claim
(store/budget_marks.py keeps them once per period). Ids are functions of the group, the
period's start and the mark, never of the batch: the same events give the same ids however
batched (an alert's figures are those of the batch that crossed).

Periods: UTC calendar hour, day or month of event time. Forecast: the burn rate of the
period so far (spent / time from its start to the end of the group's newest minute), the
moment it reaches the cap, else the spend projected at the period's end.

Alerts: identity `<dimension>:<value>` (`team:payments`), detector `group_budget`, `warning`
per fraction, `critical` at the cap; one `episode_id` per group's period (Slack threads it).
At the cap, `throttle` / `block`: one command per member, alert_id = the cap alert's,
expiring at the period's end. A block's version is the period's end (ms): no command of the
period can weaken it. A throttle's is the group's newest minute end + the lateness, as a
detector's, so an identity's own detectors may replace it (their command then expires on
its own terms).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from meterguard.models import (
    Alert,
    MeteringEvent,
    Severity,
    ThrottleCommand,
    ThrottleLimits,
    episode_id_for,
    stable_id,
)
from meterguard.streams.policy.config import (
    GROUP_DIMENSIONS,
    GroupBudget,
    GroupBudgets,
    PolicyConfig,
)
from meterguard.streams.policy.registry import Registry, attribute
from meterguard.timeutil import MINUTE_MS, from_ms, to_ms

GROUP_DETECTOR = "group_budget"
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
CAP_MARK = "a|cap"
_ADJECTIVE = {"hour": "hourly", "day": "daily", "month": "monthly"}
_DIMENSION_TEXT = {"team": "Team", "business_unit": "Business unit", "environment": "Environment"}


@dataclass(frozen=True, order=True)
class Period:
    kind: str  # hour, day, month
    start_ms: int
    end_ms: int

    @property
    def hours(self) -> range:
        """The epoch hours of the period (its roll-up rows `h<hour>`)."""
        return range(self.start_ms // HOUR_MS, self.end_ms // HOUR_MS)


def period_of(kind: str, at_ms: int) -> Period:
    """The UTC calendar hour, day or month holding the instant `at_ms`."""
    if kind == "hour":
        start = at_ms - at_ms % HOUR_MS
        return Period(kind, start, start + HOUR_MS)
    if kind == "day":
        start = at_ms - at_ms % DAY_MS
        return Period(kind, start, start + DAY_MS)
    moment = from_ms(at_ms)
    first = datetime(moment.year, moment.month, 1, tzinfo=UTC)
    following = datetime(moment.year + moment.month // 12, moment.month % 12 + 1, 1, tzinfo=UTC)
    return Period(kind, to_ms(first), to_ms(following))


@dataclass(frozen=True, order=True)
class GroupPeriod:
    """One group (dimension, value) in one of its budget's periods."""

    dimension: str
    value: str
    period: Period

    @property
    def label(self) -> str:
        """The alerts' identity: `team:payments`."""
        return f"{self.dimension}:{self.value or '(unassigned)'}"


def touched(
    events: Iterable[MeteringEvent], registry: Registry, budgets: GroupBudgets
) -> list[GroupPeriod]:
    """The groups with a budget that these events count towards, per period they fall in
    (duplicates included: re-evaluating is harmless, and a redelivery after a crash must)."""
    found: set[GroupPeriod] = set()
    for event in events:
        owner = attribute(event, registry)
        for dimension in GROUP_DIMENSIONS:
            value = owner.of(dimension)
            budget = budgets.of(dimension).get(value)
            if budget is not None:
                period = period_of(budget.period, event.event_time_ms)
                found.add(GroupPeriod(dimension, value, period))
    return sorted(found)


@dataclass(frozen=True)
class Spend:
    """A group's period so far, from its roll-up: the hour rows summed, and its newest minute
    (the roll-up's `hi`; None when it has none)."""

    cost_nano_usd: int
    tokens: int
    newest_minute: int | None


@dataclass(frozen=True)
class Assessment:
    group: GroupPeriod
    budget: GroupBudget
    spent_usd: float
    spent_tokens: int
    fraction: float  # the larger of the USD and token fractions of the limits
    as_of_ms: int  # the end of the group's newest minute, within the period
    cap_at_ms: int | None  # the cap at the period's rate so far (None: not within the period)
    projected_usd: float  # at the period's end, at that rate
    projected_tokens: int

    @property
    def at_cap(self) -> bool:
        return self.fraction >= 1.0

    @property
    def over(self) -> bool:
        """The period has ended (late events evaluated an old period): nothing to enforce."""
        return self.as_of_ms >= self.group.period.end_ms

    @property
    def crossed(self) -> tuple[float, ...]:
        return tuple(f for f in self.budget.warn_at if self.fraction >= f)

    @property
    def burn_usd_per_hour(self) -> float:
        return self.spent_usd * HOUR_MS / self._elapsed_ms

    @property
    def burn_tokens_per_hour(self) -> float:
        return self.spent_tokens * HOUR_MS / self._elapsed_ms

    @property
    def _elapsed_ms(self) -> int:
        return max(self.as_of_ms - self.group.period.start_ms, MINUTE_MS)


def assess(group: GroupPeriod, budget: GroupBudget, spend: Spend) -> Assessment:
    period = group.period
    newest = spend.newest_minute
    as_of = period.start_ms + MINUTE_MS if newest is None else (newest + 1) * MINUTE_MS
    as_of = min(max(as_of, period.start_ms + MINUTE_MS), period.end_ms)
    elapsed = as_of - period.start_ms
    spent_usd = spend.cost_nano_usd / 1e9
    fractions = [0.0]
    cap_at: list[int] = []
    if budget.limit_usd is not None:
        fractions.append(spent_usd / budget.limit_usd)
        cap_at += _cap_at(spent_usd, budget.limit_usd, elapsed, as_of, period.end_ms)
    if budget.limit_tokens is not None:
        fractions.append(spend.tokens / budget.limit_tokens)
        cap_at += _cap_at(spend.tokens, budget.limit_tokens, elapsed, as_of, period.end_ms)
    scale = (period.end_ms - period.start_ms) / elapsed
    return Assessment(
        group=group,
        budget=budget,
        spent_usd=spent_usd,
        spent_tokens=spend.tokens,
        fraction=max(fractions),
        as_of_ms=as_of,
        cap_at_ms=min(cap_at) if cap_at else None,
        projected_usd=spent_usd * scale,
        projected_tokens=round(spend.tokens * scale),
    )


def _cap_at(spent: float, limit: float, elapsed_ms: int, as_of: int, end: int) -> list[int]:
    """When `spent` reaches `limit` at its rate so far, if before the period's end."""
    if spent <= 0 or spent >= limit:
        return []
    at = as_of + math.ceil((limit - spent) * elapsed_ms / spent)
    return [at] if at < end else []


def wanted(assessment: Assessment) -> list[str]:
    """The alert marks this state asks for, fractions first (a batch may cross several)."""
    marks = [fraction_mark(f) for f in assessment.crossed]
    return [*marks, CAP_MARK] if assessment.at_cap else marks


def needs_members(assessment: Assessment) -> bool:
    """At the cap of a running period, with an action that commands every member."""
    return assessment.at_cap and assessment.budget.at_cap != "alert" and not assessment.over


def fraction_mark(fraction: float) -> str:
    return f"a|{float(fraction)!r}"


def command_mark(identity: str) -> str:
    return f"c|{identity}"


def members_of(found: Iterable[str], registry: Registry, dimension: str, value: str) -> list[str]:
    """The identities seen in the group (its roll-up's members) that the registry has not
    since named another group of that dimension."""
    out = []
    for identity in found:
        entry = registry.identities.get(identity)
        named = getattr(entry, dimension) if entry is not None else None
        if named is None or named == value:
            out.append(identity)
    return sorted(out)


def alert_id(group: GroupPeriod, mark: str) -> str:
    return stable_id(GROUP_DETECTOR, group.dimension, group.value, group.period.start_ms, mark)


def alerts(assessment: Assessment, marks: Sequence[str], commanded: int = 0) -> list[Alert]:
    """The alerts of the alert marks claimed (`commanded`: the members commanded now)."""
    return [_alert(assessment, mark, commanded) for mark in marks if mark.startswith("a|")]


def _alert(a: Assessment, mark: str, commanded: int) -> Alert:
    group, period, budget = a.group, a.group.period, a.budget
    cap = mark == CAP_MARK
    threshold = 1.0 if cap else float(mark[2:])
    severity: Severity = "critical" if cap else "warning"
    what = _DIMENSION_TEXT[group.dimension]
    name = group.value or "(unassigned)"
    adjective = _ADJECTIVE[period.kind]
    spent = _spent_text(a)
    if cap:
        title = f"{what} budget reached: {name}"
        summary = (
            f"{what.lower()} {name}: {adjective} budget reached ({spent}) by "
            f"{_when(a.as_of_ms)}; {_action_text(a, commanded)}."
        )
    else:
        title = f"{what} budget {threshold:.0%} spent: {name}"
        summary = (
            f"{what.lower()} {name}: {a.fraction:.0%} of the {adjective} budget spent ({spent}) "
            f"by {_when(a.as_of_ms)}; {_forecast_text(a)}."
        )
    evidence = {
        "dimension": group.dimension,
        "value": group.value,
        "period": period.kind,
        "period_start": _iso(period.start_ms),
        "period_end": _iso(period.end_ms),
        "threshold": threshold,
        "fraction": round(a.fraction, 4),
        "spent_usd": round(a.spent_usd, 6),
        "limit_usd": budget.limit_usd,
        "spent_tokens": a.spent_tokens,
        "limit_tokens": budget.limit_tokens,
        "burn_usd_per_hour": round(a.burn_usd_per_hour, 6),
        "burn_tokens_per_hour": round(a.burn_tokens_per_hour),
        "forecast_cap_at": None if a.cap_at_ms is None else _iso(a.cap_at_ms),
        "projected_usd": round(a.projected_usd, 6),
        "projected_tokens": a.projected_tokens,
        "as_of": _iso(a.as_of_ms),
        "at_cap": budget.at_cap,
        "episode_start_minute": period.start_ms // MINUTE_MS,
    }
    if cap:
        evidence["identities_commanded"] = commanded
    return Alert(
        alert_id=alert_id(group, mark),
        identity=group.label,
        detector=GROUP_DETECTOR,
        severity=severity,
        score=round(min(a.fraction, 1.0), 4),
        status="firing",
        title=title,
        summary=summary,
        evidence=evidence,
        window_start=from_ms(period.start_ms),
        window_end=from_ms(a.as_of_ms),
        event_time=from_ms(a.as_of_ms),
        team=group.value if group.dimension == "team" else None,
        environment=group.value if group.dimension == "environment" else None,
        episode_id=episode_id_for(group.label, GROUP_DETECTOR, period.start_ms // MINUTE_MS),
    )


def commands(
    assessment: Assessment, identities: Iterable[str], policy: PolicyConfig, lateness_ms: int
) -> list[ThrottleCommand]:
    """The cap's throttle or block for each of `identities` (members not commanded yet)."""
    a, budget = assessment, assessment.budget
    if budget.at_cap == "alert" or a.over:
        return []
    group, period = a.group, a.group.period
    cause = alert_id(group, CAP_MARK)
    limits = _limits(budget, policy)
    # A block outranks every command of the period; a throttle is as recent as the group.
    version = period.end_ms if budget.at_cap == "block" else a.as_of_ms + lateness_ms
    reason = (
        f"{group.dimension.replace('_', ' ')} {group.value or '(unassigned)'} reached its "
        f"{_ADJECTIVE[period.kind]} budget of {_limit_text(budget)} "
        f"(period from {_when(period.start_ms)})"
    )
    return [
        ThrottleCommand(
            command_id=stable_id(identity, budget.at_cap, GROUP_DETECTOR, period.start_ms, cause),
            identity=identity,
            action=budget.at_cap,
            limits=limits,
            reason=reason,
            alert_id=cause,
            issued_at=from_ms(a.as_of_ms),
            expires_at=from_ms(period.end_ms),
            version=version,
        )
        for identity in sorted(identities)
    ]


def _limits(budget: GroupBudget, policy: PolicyConfig) -> ThrottleLimits:
    if budget.at_cap == "block":
        return ThrottleLimits(requests_per_minute=0, tokens_per_minute=0)
    given = budget.throttle
    requests = given.requests_per_minute if given is not None else None
    tokens = given.tokens_per_minute if given is not None else None
    return ThrottleLimits(
        requests_per_minute=requests if requests is not None else policy.min_requests_per_minute,
        tokens_per_minute=tokens if tokens is not None else policy.min_tokens_per_minute,
    )


def _action_text(a: Assessment, commanded: int) -> str:
    if a.over:
        return "the period has ended"
    if a.budget.at_cap == "alert":
        return "alert only (at_cap: alert)"
    done = "blocked" if a.budget.at_cap == "block" else "throttled"
    return f"its identities are {done} until {_when(a.group.period.end_ms)} ({commanded} now)"


def _forecast_text(a: Assessment) -> str:
    b = a.budget
    rate = _both(b, f"${a.burn_usd_per_hour:,.2f}/h", f"{a.burn_tokens_per_hour:,.0f} tokens/h")
    if a.at_cap:
        return f"the cap is already reached, at {rate} over the period so far"
    if a.cap_at_ms is not None:
        return f"at {rate} the cap is reached ~{_when(a.cap_at_ms)}, before the period ends"
    if a.over:
        return "the period has ended"
    fractions = [0.0]
    if b.limit_usd is not None:
        fractions.append(a.projected_usd / b.limit_usd)
    if b.limit_tokens is not None:
        fractions.append(a.projected_tokens / b.limit_tokens)
    return f"at {rate} the period ends at {max(fractions):.0%} of the budget"


def _spent_text(a: Assessment) -> str:
    b = a.budget
    usd = f"${a.spent_usd:,.2f} of ${b.limit_usd or 0:,.2f}"
    return _both(b, usd, f"{a.spent_tokens:,} of {b.limit_tokens or 0:,} tokens", ", ")


def _limit_text(b: GroupBudget) -> str:
    return _both(b, f"${b.limit_usd or 0:,.2f}", f"{b.limit_tokens or 0:,} tokens", " / ")


def _both(budget: GroupBudget, usd: str, tokens: str, separator: str = " and ") -> str:
    """The USD and / or the tokens figure: those the budget has a limit for."""
    parts = [usd] if budget.limit_usd is not None else []
    return separator.join([*parts, tokens] if budget.limit_tokens is not None else parts)


def _when(ms: int) -> str:
    return from_ms(ms).strftime("%Y-%m-%d %H:%M UTC")


def _iso(ms: int) -> str:
    return from_ms(ms).isoformat().replace("+00:00", "Z")
