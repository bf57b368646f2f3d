"""The Faust app: two thin agents around the pure decode and the shared batch pipeline.

    metering.raw --decode_agent--> metering.events (keyed by identity) --score_agent-->
        meterguard.alerts, meterguard.throttle (+ Redis throttle keys), metering.dlq

Re-keying by identity puts every event of one identity in one partition, so one worker at a
time owns an identity's windows and detector state (Redis stays correct either way: dedupe
and windows are atomic per identity, and checkpoints are compare-and-set).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from datetime import timedelta

import faust
import redis.asyncio as aioredis

from meterguard.models import DeadLetter, MeteringEvent, utc_now
from meterguard.streams import metrics
from meterguard.streams.decoding.decode import (
    Origin,
    dead_letter,
    decode_event_json,
    decode_message,
)
from meterguard.streams.decoding.trace_attribution import HeldSpan, SpanLink
from meterguard.streams.delivery.deliverer import install_delivery
from meterguard.streams.runtime.pipeline import BatchOutcome, Pipeline
from meterguard.streams.runtime.registry_feed import refreshed
from meterguard.streams.runtime.trace_holds import TraceHolds
from meterguard.streams.settings import Settings
from meterguard.streams.store import build_store
from meterguard.streams.store.retry import retrying
from meterguard.streams.store.trace_agents import TraceAgents
from meterguard.streams.web.routes import register_routes

log = logging.getLogger("meterguard")


def create_app(settings: Settings) -> faust.App:
    if not settings.redis_url:
        raise ValueError("MG_REDIS_URL is not set (e.g. redis://127.0.0.1:6379/0)")
    app = faust.App(
        settings.app_id,
        broker=settings.kafka_broker,
        topic_partitions=settings.topic_partitions,
        broker_rebalance_timeout=settings.rebalance_timeout_s,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_interval_s,
        consumer_auto_offset_reset="earliest",
        web_port=settings.web_port,
        store="memory://",  # no Faust Tables: state lives in Redis (INFRA-NOTES)
        datadir=settings.data_dir,
    )

    def raw_topic(name: str) -> faust.TopicT:
        return app.topic(
            name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
        )

    # Only the consumed topics are Faust topics; outputs go through the producer (_send).
    raw, events = raw_topic(settings.topic_raw), raw_topic(settings.topic_events)
    redis_client = aioredis.Redis.from_url(settings.redis_url)
    store = build_store(redis_client, settings.store_config())
    pipeline = Pipeline(store, settings.policy, settings.registry)
    skew = timedelta(seconds=settings.max_future_skew_s)
    mapping = settings.mapping  # read (and a bad file refused) once, before any message
    holds = TraceHolds(
        TraceAgents(redis_client, store.keys), timedelta(seconds=settings.trace_hold)
    )

    @app.agent(raw)
    async def decode_agent(stream: faust.StreamT[bytes]) -> None:
        # take_events (Stream, not in StreamT's stub) keeps each message's topic/offset.
        batches = stream.take_events(  # type: ignore[attr-defined]
            settings.batch_size, within=settings.batch_seconds
        )
        async for batch in batches:
            now = utc_now()
            dead = 0
            formats: Counter[str] = Counter()
            ignored: Counter[str] = Counter()
            links: list[SpanLink] = []
            held: list[HeldSpan] = []
            for event in batch:
                msg = event.message
                origin = Origin(msg.topic, msg.partition, msg.offset)
                # Headers as aiokafka hands them to Faust: a tuple of (name, bytes) pairs.
                # decode_message is total: even its own bugs become internal_error letters.
                result = decode_message(event.value, msg.headers, now, origin, skew, mapping)
                formats[result.format] += 1
                ignored[result.format] += result.ignored
                links += result.links
                held += result.held
                dead += await _forward(result.items, event.key)
            if links or held:
                settled = await retrying(
                    lambda ln=links, hd=held, at=now: holds.admit(ln, hd, at),  # type: ignore[misc]
                    log=log,
                )
                dead += await _forward(settled.items, None)
                if settled.waited:
                    await app.producer.flush()  # produced before they stop waiting
                    await retrying(lambda s=settled: holds.release(s), log=log)  # type: ignore[misc]
            metrics.count_formats(formats, ignored)  # once per batch, not per message
            await _count_dead(dead)

    if settings.registry_url:
        url = settings.registry_url

        @app.task  # type: ignore[untyped-decorator]
        async def refresh_registry() -> None:
            """The owners' catalogue at start, then every MG_REGISTRY_REFRESH_S; a failed
            fetch keeps what the worker has."""
            while not app.should_stop:
                pipeline.registry = await refreshed(url, pipeline.registry)
                await app.sleep(settings.registry_refresh_s)

    @app.task  # type: ignore[untyped-decorator]
    async def apply_waiting_rollups() -> None:
        """Roll-up deltas a crashed worker left for identities that may never send again
        (store/rollups.py); the others are applied by their identity's next batch."""
        applied = await retrying(lambda: store.rollups.sweep(), log=log)
        if applied:
            log.info("applied %d roll-up steps a stopped worker left", applied)
        # Root-caller credits likewise, for traces no batch touches again (store/driven.py).
        credited = await retrying(lambda: store.traces.sweep(), log=log)
        if credited:
            log.info("applied %d root-cost credits a stopped worker left", credited)

    @app.timer(interval=1.0)  # type: ignore[untyped-decorator]
    async def settle_held_spans() -> None:
        """OTLP spans whose hold ended: their agent if its span came meanwhile, else the
        fallback (streams/runtime/trace_holds.py). Every worker sweeps; decisions are shared."""
        settled = await retrying(lambda: holds.due(utc_now()), log=log)
        if settled.items:
            await _count_dead(await _forward(settled.items, None))
            await app.producer.flush()
        if settled.waited:
            await retrying(lambda: holds.release(settled), log=log)

    async def _forward(items: list[MeteringEvent | DeadLetter], key: bytes | None) -> int:
        """Events to metering.events keyed by identity, dead letters to the DLQ; -> letters."""
        dead = 0
        for item in items:
            if isinstance(item, DeadLetter):
                dead += 1
                metrics.DEAD_LETTERS.labels(item.reason).inc()
                await _send(settings.topic_dlq, key, item.model_dump_json().encode())
            else:
                await _send(settings.topic_events, item.identity.encode(), item.to_json())
        return dead

    async def _count_dead(dead: int) -> None:
        if dead:
            await retrying(
                lambda d=dead: redis_client.hincrby(  # type: ignore[misc]
                    f"{settings.key_prefix}:stats", "events_dead_lettered", d
                ),
                log=log,
            )

    @app.agent(events)
    async def score_agent(stream: faust.StreamT[bytes]) -> None:
        async for values in stream.take(settings.batch_size, within=settings.batch_seconds):
            started = time.perf_counter()
            batch = []
            for value in values:
                event = _read_keyed_event(value)
                if isinstance(event, DeadLetter):  # a producer other than decode_agent wrote it
                    metrics.DEAD_LETTERS.labels(event.reason).inc()
                    await _send(settings.topic_dlq, None, event.model_dump_json().encode())
                else:
                    batch.append(event)
            if not batch:
                continue
            outcome = await retrying(lambda b=batch: pipeline.process(b), log=log)  # type: ignore[misc]
            await retrying(lambda o=outcome: pipeline.apply_throttles(o, utc_now()), log=log)  # type: ignore[misc]
            await _publish(outcome)
            lost = await retrying(lambda o=outcome: pipeline.commit(o, utc_now()), log=log)  # type: ignore[misc]
            metrics.count_batch(outcome, time.perf_counter() - started)
            metrics.observe_latency(batch, utc_now())
            if lost:
                log.info("checkpoint race lost for %d identities; re-scored next batch", len(lost))

    async def _send(topic: str, key: bytes | None, value: bytes) -> None:
        # The producer directly, not Topic.send: Faust's channel machinery per message
        # (FutureMessage, callbacks) cost more than the decode itself. Buffered; flushed below
        # and by Faust before it commits offsets.
        await app.producer.send(topic, key, value, None, None, None)

    async def _publish(outcome: BatchOutcome) -> None:
        for alert in outcome.alerts:
            await _send(
                settings.topic_alerts, alert.identity.encode(), alert.model_dump_json().encode()
            )
            log.warning("ALERT %s %s %s", alert.severity, alert.status, alert.summary)
        for command in outcome.commands:
            value = command.model_dump_json().encode()
            await _send(settings.topic_throttle, command.identity.encode(), value)
        if outcome.alerts or outcome.commands:
            # Delivered before the checkpoint: a crash now repeats ids, never loses them.
            await app.producer.flush()

    register_routes(app, store, settings)
    install_delivery(app, settings, redis_client, settings.policy)
    app.meterguard_store = store  # type: ignore[attr-defined]
    return app


def _read_keyed_event(value: bytes | None) -> MeteringEvent | DeadLetter:
    """An event decode_agent validated; anything else on that topic is dead-lettered, never a
    crash (a crashed agent would meet the same record again on every redelivery)."""
    try:
        return decode_event_json(value or b"")
    except Exception as exc:
        origin = Origin(None, None, None)
        return dead_letter(
            value or b"", "invalid_internal_event", repr(exc)[:500], utc_now(), origin
        )
