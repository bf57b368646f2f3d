"""The live dashboard on the worker's web server: the page, its assets and two JSON routes.

    GET /                          the page (streams/web/static/dashboard.html)
    GET /static/{name}             its script and stylesheet (a fixed allow-list, no paths)
    GET /api/dashboard             top identities (tokens, cost) with sparklines, firing
                                   alerts, active throttles, pipeline counters; spend by
                                   team and the top cost-driven root agents over the last
                                   24 event-time hours
    GET /api/dashboard?team=<team> the same, plus that team's members with their spend and
                                   its group budget's state (`?team=`: the unassigned team)
    GET /api/identities/{identity} one identity's last hour of minutes, alerts, throttle

Everything is read from Redis, so any worker answers for all identities. The shaping is in
streams/web/dashboard_view.py (pure); this module only reads and serves. The spend panels
read the roll-ups' hour fields of the period only (HMGET, pipelined: showback_read.py), in
three rounds that run beside the rankings' reads: the indexes and the rankings' newest hour;
the teams', roots' and members' hours and the budget period's; the top roots' own hours.
"""

from __future__ import annotations

import asyncio
from functools import cache
from importlib.resources import files
from typing import Any

import faust

from meterguard.models import utc_now
from meterguard.streams.policy.config import GroupBudget, PolicyConfig
from meterguard.streams.store import Store
from meterguard.streams.store.driven import DIMENSION as DRIVEN
from meterguard.streams.store.history import RECENT_ALERTS
from meterguard.streams.store.showback import build
from meterguard.streams.store.showback_read import read_rows
from meterguard.streams.web import dashboard_view as view

_ASSETS = {
    "dashboard.js": "text/javascript",
    "dashboard.css": "text/css",
}
# Identities and every other string on the page come from metering events, i.e. from whoever
# can send one. The page only ever sets them as text; the policy is the second fence: no
# inline script or handler runs even if a bug let markup through.
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_API_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
MAX_TEAM = 256  # a team name's length limit (MeteringEvent's attribution fields)


@cache
def _asset(name: str) -> str:
    return files("meterguard.streams.web").joinpath("static", name).read_text(encoding="utf-8")


def register_dashboard_routes(
    app: faust.App, store: Store, policy: PolicyConfig | None = None
) -> None:
    budgets = (policy or PolicyConfig()).group_budgets

    @app.page("/")
    async def dashboard_page(web: Any, request: Any) -> Any:
        return web.html(_asset("dashboard.html"), headers=dict(_PAGE_HEADERS))

    @app.page("/static/{name}")
    async def dashboard_asset(web: Any, request: Any, name: str) -> Any:
        content_type = _ASSETS.get(name)
        if content_type is None:
            return web.json({"error": "no such file"}, status=404)
        headers = dict(_PAGE_HEADERS)
        return web.text(_asset(name), content_type=content_type, headers=headers)

    @app.page("/api/dashboard")
    async def dashboard_data(web: Any, request: Any) -> Any:
        team = request.query.get("team")  # None: no team chosen; "": the unassigned team
        if team is not None and len(team) > MAX_TEAM:
            error = f"team must be at most {MAX_TEAM} characters"
            return web.json({"error": error}, status=400, headers=dict(_API_HEADERS))
        team_budget = budgets.team.get(team) if team is not None else None
        doc = await _dashboard(store, team, team_budget)
        return web.json(doc, headers=dict(_API_HEADERS))

    # `.+`: an identity may hold "/" (the page sends it percent-encoded as %2F, aiohttp
    # decodes it into the match; a raw "/" from another client matches too).
    @app.page("/api/identities/{identity:.+}")
    async def identity_detail(web: Any, request: Any, identity: str) -> Any:
        detail = await _identity(store, identity)
        if detail is None:
            return web.json(
                {"error": f"no data for identity {identity!r}"},
                status=404,
                headers=dict(_API_HEADERS),
            )
        return web.json(detail, headers=dict(_API_HEADERS))


async def _dashboard(store: Store, team: str | None, budget: GroupBudget | None) -> dict[str, Any]:
    base, spend = await asyncio.gather(_rankings(store), _spend(store, team, budget))
    return view.dashboard(**base, spend=spend, now=utc_now())


async def _rankings(store: Store) -> dict[str, Any]:
    by_tokens, by_cost = await asyncio.gather(
        store.history.top_identities(view.TOP_N), store.history.top_by_cost(view.TOP_N)
    )
    ranked = list(dict.fromkeys([i for i, _ in by_tokens] + [i for i, _ in by_cost]))
    watermarks = await store.windows.watermarks(ranked)
    ranges = {
        identity: span
        for identity in ranked
        if (span := view.minute_range(watermarks.get(identity), view.SPARK_MINUTES))
    }
    windows, recent, throttles, stats = await asyncio.gather(
        store.windows.read_many(ranges),
        store.history.recent_alerts(RECENT_ALERTS),
        store.throttles.active(),
        store.stats.pipeline_counters(),
    )
    return {
        "top_tokens": view.ranking(by_tokens, "tokens", windows, watermarks),
        "top_cost": view.ranking(by_cost, "cost_usd", windows, watermarks, scale=1e9),
        "recent": recent,
        "throttles": throttles,
        "stats": stats,
    }


async def _spend(store: Store, team: str | None, budget: GroupBudget | None) -> dict[str, Any]:
    """Spend by team, the top cost-driven root agents and the chosen team (members, budget)
    over the dashboard's last SPEND_HOURS event-time hours."""
    chosen = [("team", team)] if team is not None else []
    newest, teams, roots, found = await asyncio.gather(
        store.history.newest_hour(),
        store.rollups.values("team"),
        store.traces.driven_identities(),
        store.rollups.members(chosen),
    )
    members = found[0] if found else []
    period = view.spend_period(newest)
    if period is None or newest is None:  # nothing counted yet
        team_doc = view.team_view(None, team, members, {}, None) if team is not None else None
        return view.spend_panels(None, None, teams, [], {}, team_doc)
    group = (
        view.team_budget_group(team, budget, newest)
        if team is not None and budget is not None
        else None
    )
    redis, rollups = store.redis, store.rollups
    team_rows, driven_rows, member_rows, budget_rows = await asyncio.gather(
        read_rows(redis, rollups, "team", teams, period),
        read_rows(redis, rollups, DRIVEN, roots, period),
        read_rows(redis, rollups, "identity", members, period),
        rollups.hour_totals([("team", group.value, group.period.hours)] if group else []),
    )
    ranked = view.rank_driven(driven_rows)
    missing = [identity for identity, _ in ranked if identity not in member_rows]
    own = {**member_rows, **await read_rows(redis, rollups, "identity", missing, period)}
    report = build("team", period, store.keys.prefix, team_rows, {})
    team_doc = None
    if team is not None:
        state = None
        if group is not None and budget is not None:
            spent, newest_minute = budget_rows[0]
            state = view.budget_state(group, budget, spent, newest_minute)
        team_doc = view.team_view(report, team, members, member_rows, state)
    return view.spend_panels(period, report, teams, ranked, own, team_doc)


async def _identity(store: Store, identity: str) -> dict[str, Any] | None:
    counters, recent, throttle = await asyncio.gather(
        store.windows.counters(identity),
        store.history.recent_alerts(RECENT_ALERTS),
        store.throttles.active_for(identity),
    )
    span = view.minute_range(counters.get("wm"), view.DETAIL_MINUTES)
    rows = (await store.windows.read_many({identity: span}))[identity] if span else []
    detail = view.identity_detail(
        identity=identity,
        counters=counters,
        rows=rows,
        recent=recent,
        throttle=throttle,
        now=utc_now(),
    )
    if not rows and not detail["alerts"] and detail["throttle"] is None:
        return None
    return detail
