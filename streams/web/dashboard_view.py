"""What the live dashboard shows, assembled from plain data (pure: no Redis, no HTTP).

`streams/web/dashboard.py` reads Redis through the Store and hands the pieces here; the
page (`streams/web/static/dashboard.*`) only draws what these functions return.

Time on the dashboard is event time: an identity's sparkline ends at the minute of its own
watermark (the newest event time seen), not at the wall clock, so a replay of last month's
events draws the same pictures as the live run did.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from meterguard.detectors.features import MinuteWindow
from meterguard.models import ThrottleCommand, episode_id_of
from meterguard.timeutil import MINUTE_MS

SPARK_MINUTES = 30
DETAIL_MINUTES = 60
TOP_N = 10
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
) -> dict[str, Any]:
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
