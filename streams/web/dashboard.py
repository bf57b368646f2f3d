"""The live dashboard on the worker's web server: the page, its assets and two JSON routes.

    GET /                          the page (streams/web/static/dashboard.html)
    GET /static/{name}             its script and stylesheet (a fixed allow-list, no paths)
    GET /api/dashboard             top identities (tokens, cost) with sparklines, firing
                                   alerts, active throttles, pipeline counters
    GET /api/identities/{identity} one identity's last hour of minutes, alerts, throttle

Everything is read from Redis, so any worker answers for all identities. The shaping is in
streams/web/dashboard_view.py (pure); this module only reads and serves.
"""

from __future__ import annotations

import asyncio
from functools import cache
from importlib.resources import files
from typing import Any

import faust

from meterguard.models import utc_now
from meterguard.streams.store import Store
from meterguard.streams.store.history import RECENT_ALERTS
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


@cache
def _asset(name: str) -> str:
    return files("meterguard.streams.web").joinpath("static", name).read_text(encoding="utf-8")


def register_dashboard_routes(app: faust.App, store: Store) -> None:
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
        return web.json(await _dashboard(store), headers=dict(_API_HEADERS))

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


async def _dashboard(store: Store) -> dict[str, Any]:
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
    return view.dashboard(
        top_tokens=view.ranking(by_tokens, "tokens", windows, watermarks),
        top_cost=view.ranking(by_cost, "cost_usd", windows, watermarks, scale=1e9),
        recent=recent,
        throttles=throttles,
        stats=stats,
        now=utc_now(),
    )


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
