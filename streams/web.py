"""Read-only HTTP routes served by every worker (Faust's web server, port MG_WEB_PORT).

Liveness, readiness and the throttle feed / recent alerts straight from Redis, so any worker
answers for all identities; /metrics is this process's Prometheus counters. Dashboard, SSE
and the operator release are issue 4.
"""

from __future__ import annotations

import contextlib
from typing import Any

import faust
import redis.exceptions

from streams import metrics
from streams.window_store import WindowStore

MAX_ALERTS = 500


def register_routes(app: faust.App, store: WindowStore) -> None:
    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        return web.json({"status": "ok"})

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        redis_ok = False
        with contextlib.suppress(redis.exceptions.RedisError, OSError):
            redis_ok = bool(await store.redis.ping())
        broker_ok = bool(app.producer.started) if app.producer else False  # type: ignore[attr-defined]
        ready = redis_ok and broker_ok
        body = {"status": "ready" if ready else "not ready", "redis": redis_ok, "broker": broker_ok}
        return web.json(body, status=200 if ready else 503)

    @app.page("/metrics")
    async def prometheus(web: Any, request: Any) -> Any:
        return web.text(metrics.exposition().decode(), content_type="text/plain; version=0.0.4")

    @app.page("/api/throttles")
    async def throttles(web: Any, request: Any) -> Any:
        commands = await store.active_throttles()
        return web.json([c.model_dump(mode="json") for c in commands])

    @app.page("/api/throttles/{identity}")
    async def throttle(web: Any, request: Any, identity: str) -> Any:
        command = await store.active_throttle(identity)
        if command is None:
            return web.json({"error": f"no active command for {identity!r}"}, status=404)
        return web.json(command.model_dump(mode="json"))

    @app.page("/api/alerts")
    async def alerts(web: Any, request: Any) -> Any:
        try:
            limit = int(request.query.get("limit", "50"))
        except ValueError:
            return web.json({"error": "limit must be a whole number"}, status=400)
        if not 1 <= limit <= MAX_ALERTS:
            return web.json({"error": f"limit must be between 1 and {MAX_ALERTS}"}, status=400)
        return web.json(await store.recent_alerts(limit))
