"""HTTP routes served by every worker (Faust's web server, port MG_WEB_PORT).

Liveness, readiness, the throttle feed (list, one identity, SSE stream of changes), recent
alerts and the audit trail straight from Redis, so any worker answers for all identities;
/metrics is this process's Prometheus counters. Every state-changing route (the operator
release here, the ingest routes) needs the bearer token (operator.check_bearer, constant
time); the release is audited (Redis list + audit topic + log). The read routes need none:
probes and Prometheus scrape without one, every gateway follows the throttle feed, the
dashboard is a page a browser opens; none of them returns a secret
(tests/integration/test_secrets_never_leak.py). Put an authenticating proxy in front where
identities and spend are confidential (README "Security").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import faust
import orjson
import redis.exceptions
from aiohttp import web as aioweb

from meterguard.models import utc_now
from meterguard.streams import metrics
from meterguard.streams.settings import Settings
from meterguard.streams.store import Store
from meterguard.streams.web import log_hygiene, operator
from meterguard.streams.web.dashboard import register_dashboard_routes
from meterguard.streams.web.ingest_routes import register_ingest_routes
from meterguard.streams.web.report_routes import register_report_routes
from meterguard.streams.web.throttle_feed import CLOSED, ThrottleFeed, format_sse

log = logging.getLogger("meterguard.web")
MAX_ALERTS = 500
KEEPALIVE_S = 15.0
MAX_BODY = 16_384


def register_routes(app: faust.App, store: Store, settings: Settings) -> None:
    feed = ThrottleFeed(store.redis, store.keys.throttle_channel)
    log_hygiene.install()  # a malformed request: a log line, not a traceback
    register_dashboard_routes(app, store, settings.policy)  # GET /, its files and JSON
    register_ingest_routes(app, settings)  # POST /api/events, POST /v1/traces
    register_report_routes(app, store)  # GET /api/report, GET /api/report/unregistered

    @app.on_before_shutdown.connect  # type: ignore[arg-type]  # faust's stub wants signal=
    async def _end_streams(app: faust.App, **kwargs: Any) -> None:
        await feed.close()  # open SSE streams would otherwise hold the web server's shutdown

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        return web.json({"status": "ok"})

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        redis_ok = False
        with contextlib.suppress(redis.exceptions.RedisError, OSError):
            redis_ok = bool(await store.redis.ping())
        broker_ok = bool(app.producer.started) if app.producer else False
        ready = redis_ok and broker_ok
        body = {"status": "ready" if ready else "not ready", "redis": redis_ok, "broker": broker_ok}
        return web.json(body, status=200 if ready else 503)

    @app.page("/metrics")
    async def prometheus(web: Any, request: Any) -> Any:
        await _refresh_gauges(app, store)
        return web.text(metrics.exposition().decode(), content_type="text/plain; version=0.0.4")

    @app.page("/api/throttles")
    async def throttles(web: Any, request: Any) -> Any:
        commands = await store.throttles.active()
        return web.json([c.model_dump(mode="json") for c in commands])

    # Registered before /api/throttles/{identity}: aiohttp matches routes in order.
    @app.page("/api/throttles/stream")
    async def stream(web: Any, request: Any) -> Any:
        queue = await feed.subscribe()  # before the snapshot, so no change falls in between
        metrics.SSE_CLIENTS.inc()
        response = aioweb.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",  # nginx and friends must not buffer the stream
            }
        )
        try:
            await response.prepare(request)
            snapshot = await store.throttles.active()
            for command in snapshot:
                data = command.model_dump_json()
                await response.write(format_sse("command", data, command.version))
            await response.write(
                format_sse("ready", orjson.dumps({"count": len(snapshot)}).decode())
            )
            while True:
                try:
                    frame = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
                except TimeoutError:
                    await response.write(b": keep-alive\n\n")
                    continue
                if frame is CLOSED:
                    break
                await response.write(frame)  # formatted once by the feed, for every client
        except (ConnectionResetError, redis.exceptions.RedisError) as exc:
            log.info("SSE stream ended: %s", exc)
        finally:
            feed.unsubscribe(queue)
            metrics.SSE_CLIENTS.dec()
        return response

    @app.page("/api/throttles/{identity}/release")
    class Release(faust.web.View):
        async def post(self, request: Any, identity: str) -> Any:
            refusal = operator.check_bearer(
                request.headers.get("Authorization"), settings.api_token_value
            )
            if refusal is not None:
                headers = {"WWW-Authenticate": "Bearer"} if refusal.status == 401 else None
                return self.json({"error": refusal.error}, status=refusal.status, headers=headers)
            body = await _json_body(request)
            if body is None:
                return self.json({"error": "body must be a JSON object (or empty)"}, status=400)
            actor = (
                operator.clean_text(request.headers.get("X-Meterguard-Actor"), operator.MAX_ACTOR)
                or "operator"
            )
            reason = operator.clean_text(body.get("reason"), operator.MAX_REASON)
            held = await store.throttles.active_for(identity)
            if held is None:
                return self.json({"error": f"no active command for {identity!r}"}, status=404)
            release = operator.release_command(held, utc_now(), actor, reason)
            done = await store.operator.release(held, release)
            if done == 0:
                return self.json({"error": f"no active command for {identity!r}"}, status=404)
            if done < 0:
                return self.json(
                    {"error": "the active command changed meanwhile; read it again"}, status=409
                )
            audit = operator.release_audit(held, release, actor, reason, request.remote)
            await store.operator.record_audit(audit)
            log.warning(
                "AUDIT %s released %s (command %s) for %r: %s",
                actor,
                held.identity,
                held.command_id,
                identity,
                reason or "no reason given",
                extra={
                    "identity": held.identity,
                    "alert_id": held.alert_id,
                    "command_id": held.command_id,  # the released one, as in the message
                    "action": "throttle.release",
                    "actor": actor,
                },
            )
            metrics.OPERATOR_ACTIONS.labels("throttle.release").inc()
            producer = app.producer
            key = identity.encode()
            await producer.send(
                settings.topic_throttle, key, release.model_dump_json().encode(), None, None, None
            )
            await producer.send(
                settings.topic_audit, key, audit.model_dump_json().encode(), None, None, None
            )
            await producer.flush()
            return self.json(release.model_dump(mode="json"))

    @app.page("/api/audit")
    async def audit(web: Any, request: Any) -> Any:
        limit = _limit(request)
        if limit is None:
            return web.json({"error": f"limit must be between 1 and {MAX_ALERTS}"}, status=400)
        return web.json(await store.operator.recent_audit(limit))

    @app.page("/api/throttles/{identity}")
    async def throttle(web: Any, request: Any, identity: str) -> Any:
        command = await store.throttles.active_for(identity)
        if command is None:
            return web.json({"error": f"no active command for {identity!r}"}, status=404)
        return web.json(command.model_dump(mode="json"))

    @app.page("/api/alerts")
    async def alerts(web: Any, request: Any) -> Any:
        limit = _limit(request)
        if limit is None:
            return web.json(
                {"error": f"limit must be a whole number between 1 and {MAX_ALERTS}"}, status=400
            )
        return web.json(await store.history.recent_alerts(limit))


async def _refresh_gauges(app: faust.App, store: Store) -> None:
    """Gauges read at scrape time: active throttles (Redis), and this worker's partitions and
    their consumer lag."""
    with contextlib.suppress(redis.exceptions.RedisError, OSError):
        metrics.THROTTLES_ACTIVE.set(len(await store.throttles.active()))
    consumer = app.consumer
    with contextlib.suppress(Exception):  # no assignment yet, or a rebalance under way
        held = set()
        for tp in consumer.assignment():
            held.add((tp.topic, str(tp.partition)))
            metrics.PARTITION_ASSIGNED.labels(tp.topic, str(tp.partition)).set(1)
            highwater, position = consumer.highwater(tp), await consumer.position(tp)
            if highwater is not None and position is not None:
                lag = max(0, highwater - position)
                metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(lag)
        # A partition that moved to another worker is no longer this one's lag: a stale
        # series would count it twice in a sum over workers (an autoscaler's input).
        for gauge in (metrics.CONSUMER_LAG, metrics.PARTITION_ASSIGNED):
            for labels in metrics.labelled(gauge) - held:
                gauge.remove(*labels)


def _limit(request: Any) -> int | None:
    try:
        limit = int(request.query.get("limit", "50"))
    except ValueError:
        return None
    return limit if 1 <= limit <= MAX_ALERTS else None


async def _json_body(request: Any) -> dict[str, Any] | None:
    """The request's JSON object; {} for an empty body; None for anything else."""
    raw = await request.content.read(MAX_BODY + 1)
    if not raw.strip():
        return {}
    if len(raw) > MAX_BODY:
        return None
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return body if isinstance(body, dict) else None
