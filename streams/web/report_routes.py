"""Showback and chargeback over HTTP: the report of `meterguard report`, from this worker's
namespace (streams/store/showback.py builds it, showback_read.py reads it).

    GET /api/report?by=team&from=T&to=T&format=json|csv   (or last=24h|7d|30d instead of
                                   from/to; defaults: by=team, last=24h, format=json)
    GET /api/report/unregistered   the identities a configured registry does not list, with
                                   what each used in the period (same period parameters)

Periods are whole event-time hours (`to` exclusive), at most 400 days (the roll-ups' hours
are kept that long). Bad parameters answer 400 with {"error"}. Write instants with `Z`: a
`+` in a query string is a space.
"""

from __future__ import annotations

from typing import Any

import faust

from meterguard.models import utc_now
from meterguard.streams.store import Store
from meterguard.streams.store.showback import DIMENSIONS, Period, csv_text, json_bytes, parse_period
from meterguard.streams.store.showback_read import load_report, read_rows

MAX_HOURS = 400 * 24
_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


def _period(query: Any) -> Period:
    return parse_period(
        query.get("from"), query.get("to"), query.get("last"), utc_now(), max_hours=MAX_HOURS
    )


def register_report_routes(app: faust.App, store: Store) -> None:
    prefix = store.keys.prefix

    @app.page("/api/report")
    async def report(web: Any, request: Any) -> Any:
        query = request.query
        by, fmt = query.get("by", "team"), query.get("format", "json")
        if by not in DIMENSIONS:
            error = f"by must be one of {', '.join(DIMENSIONS)}"
            return web.json({"error": error}, status=400, headers=dict(_HEADERS))
        if fmt not in ("json", "csv"):
            error = "format must be json or csv"
            return web.json({"error": error}, status=400, headers=dict(_HEADERS))
        try:
            period = _period(query)
        except ValueError as exc:
            return web.json({"error": str(exc)}, status=400, headers=dict(_HEADERS))
        result = await load_report(store.redis, store.rollups, by, period, prefix)
        if fmt == "csv":
            name = f"meterguard-report-{by}-{period.to_dict()['from'][:13]}.csv"
            headers = {**_HEADERS, "Content-Disposition": f'attachment; filename="{name}"'}
            return web.text(csv_text(result), content_type="text/csv", headers=headers)
        return web.bytes(
            json_bytes(result), content_type="application/json", headers=dict(_HEADERS)
        )

    @app.page("/api/report/unregistered")
    async def unregistered(web: Any, request: Any) -> Any:
        try:
            period = _period(request.query)
        except ValueError as exc:
            return web.json({"error": str(exc)}, status=400, headers=dict(_HEADERS))
        names = await store.rollups.unregistered()
        rows = await read_rows(store.redis, store.rollups, "identity", names, period)
        body = {
            "period": period.to_dict(),
            "count": len(names),
            "identities": [{"identity": name, **rows[name].total().to_dict()} for name in names],
        }
        return web.json(body, headers=dict(_HEADERS))
