"""The Faust app: thin agents around the pure decode and the shared batch pipeline.

    metering.raw --decode_agent--> metering.events (keyed by identity) --score_agent-->
        meterguard.alerts, meterguard.throttle (+ Redis throttle keys), metering.dlq

Re-keying by identity puts every event of one identity in one partition, so one worker at a
time owns an identity's windows and detector state (Redis stays correct either way: dedupe
and windows are atomic per identity, and checkpoints are compare-and-set). A hop record is a
batch: one identity's events of one decode batch (streams/decoding/keyed_events.py).

With MG_RAW_KEYED_BY_IDENTITY the producers already key metering.raw by identity, and the
decode agent scores its batches itself (`_score`, the very steps of score_agent), without the
hop. score_agent still drains metering.events (records written before the switch).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Sequence
from datetime import timedelta

import faust

from meterguard.models import DeadLetter, MeteringEvent, utc_now
from meterguard.sinks.ocsf import finding_json
from meterguard.streams import metrics
from meterguard.streams.decoding.decode import Origin, decode_message
from meterguard.streams.decoding.keyed_events import keyed_records, read_keyed
from meterguard.streams.decoding.trace_attribution import HeldSpan, SpanLink
from meterguard.streams.delivery.deliverer import install_delivery
from meterguard.streams.runtime import fetch_wait
from meterguard.streams.runtime.kafka_credentials import faust_credentials
from meterguard.streams.runtime.log_format import (
    DeadLetterLog,
    alert_context,
    faust_logging_config,
)
from meterguard.streams.runtime.pipeline import BatchOutcome, Pipeline
from meterguard.streams.runtime.registry_feed import refreshed
from meterguard.streams.runtime.trace_holds import Settled, TraceHolds
from meterguard.streams.settings import Settings
from meterguard.streams.store import build_store
from meterguard.streams.store.connection import redis_client as redis_client_of
from meterguard.streams.store.retry import retrying
from meterguard.streams.store.trace_agents import TraceAgents
from meterguard.streams.web.routes import register_routes

log = logging.getLogger("meterguard")
# Checkpoint races lost in a row before an identity waits for its next batch: a race needs
# two workers scoring one identity at once, which a rebalance allows for one step or two.
RACE_RETRIES = 3


def create_app(settings: Settings) -> faust.App:
    if not settings.redis_url:
        raise ValueError("MG_REDIS_URL is not set (e.g. redis://127.0.0.1:6379/0)")
    app = faust.App(
        settings.app_id,
        broker=settings.kafka_broker,
        broker_credentials=faust_credentials(settings.kafka_security),  # MG_KAFKA_SASL_*/SSL_*
        topic_partitions=settings.topic_partitions,
        broker_rebalance_timeout=settings.rebalance_timeout_s,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_interval_s,
        consumer_auto_offset_reset="earliest",
        web_port=settings.web_port,
        # Faust's own /router and /table views: unauthenticated, they list the other workers'
        # URLs and would serve table keys; meterguard keeps no Faust tables and routes nothing.
        web_router_enabled=False,
        web_tables_enabled=False,
        store="memory://",  # no Faust Tables: state lives in Redis (INFRA-NOTES)
        datadir=settings.data_dir,
        logging_config=faust_logging_config(settings.log_format),  # MG_LOG_FORMAT
    )
    fetch_wait.install(app, settings.fetch_max_wait_ms)  # before any topic: Faust fixes 1.5 s

    def raw_topic(name: str) -> faust.TopicT:
        return app.topic(
            name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
        )

    # Only the consumed topics are Faust topics; outputs go through the producer (_send).
    raw, events = raw_topic(settings.topic_raw), raw_topic(settings.topic_events)
    redis_client = redis_client_of(settings.redis_url, settings.redis_options)
    store = build_store(redis_client, settings.store_config())
    pipeline = Pipeline(store, settings.policy, settings.registry, keep_scores=False)
    skew = timedelta(seconds=settings.max_future_skew_s)
    mapping = settings.mapping  # read (and a bad file refused) once, before any message
    holds = TraceHolds(
        TraceAgents(redis_client, store.keys), timedelta(seconds=settings.trace_hold)
    )
    keyed = settings.raw_keyed_by_identity  # hop off: decode_agent scores its batches itself
    unkeyed_seen = False  # a raw record keyed otherwise than its events' identity (logged once)
    scoring = asyncio.Lock()  # one pipeline step at a time: the agents and the hold timer
    dead_log = DeadLetterLog(log)

    @app.agent(raw)
    async def decode_agent(stream: faust.StreamT[bytes]) -> None:
        # take_events (Stream, not in StreamT's stub) keeps each message's topic/offset.
        batches = stream.take_events(  # type: ignore[attr-defined]
            settings.batch_size, within=settings.batch_seconds
        )
        async for batch in batches:
            decoded, settled = await _decode(batch)
            await _downstream(decoded)
            if settled.waited:
                await app.producer.flush()  # produced (or scored) before they stop waiting
                await retrying(lambda s=settled: holds.release(s), log=log)  # type: ignore[misc]

    async def _decode(batch: Sequence[faust.EventT[bytes]]) -> tuple[list[MeteringEvent], Settled]:
        """One batch of raw messages: dead letters go to the DLQ now; the events, in input
        order, then the OTLP spans this batch settled, are returned with what they release."""
        now = utc_now()
        dead = 0
        formats: Counter[str] = Counter()
        ignored: Counter[str] = Counter()
        links: list[SpanLink] = []
        held: list[HeldSpan] = []
        decoded: list[MeteringEvent] = []
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
            if keyed and not unkeyed_seen:
                _check_key(event.key, result.events)
            dead += await _split(result.items, event.key, decoded)
        settled = Settled()
        if links or held:
            settled = await retrying(
                lambda ln=links, hd=held, at=now: holds.admit(ln, hd, at),  # type: ignore[misc]
                log=log,
            )
            dead += await _split(settled.items, None, decoded)
        metrics.count_formats(formats, ignored)  # once per batch, not per message
        await _count_dead(dead)
        return decoded, settled

    async def _split(
        items: list[MeteringEvent | DeadLetter], key: bytes | None, events: list[MeteringEvent]
    ) -> int:
        """Dead letters to the DLQ, events appended to `events`; -> letters sent."""
        dead = 0
        for item in items:
            if isinstance(item, DeadLetter):
                dead += 1
                metrics.DEAD_LETTERS.labels(item.reason).inc()
                await _send(settings.topic_dlq, key, item.model_dump_json().encode())
                dead_log.letter(item, settings.topic_dlq)
            else:
                events.append(item)
        return dead

    async def _hop(decoded: list[MeteringEvent]) -> None:
        """To metering.events: one record per identity per batch, keyed by the identity."""
        for key, value in keyed_records(decoded):
            await _send(settings.topic_events, key, value)

    def _check_key(key: bytes | None, decoded: list[MeteringEvent]) -> None:
        """The operator promised raw keys = identities: say so, once, if a record breaks it."""
        nonlocal unkeyed_seen
        stray = next((e.identity for e in decoded if e.identity.encode() != key), None)
        if stray is not None:
            unkeyed_seen = True
            log.warning(
                "MG_RAW_KEYED_BY_IDENTITY is set, but a record on %s keyed %r holds an event of "
                "identity %r: that identity's events may be scored out of order (logged once)",
                settings.topic_raw,
                key,
                stray,
            )

    async def _score(events: list[MeteringEvent]) -> None:
        """The steps that score events, for score_agent and (hop off) decode_agent alike, in
        steps of at most MG_BATCH_SIZE events, one pipeline step at a time per process."""
        async with scoring:
            for first in range(0, len(events), settings.batch_size):
                await _score_step(events[first : first + settings.batch_size])

    async def _score_step(batch: list[MeteringEvent], race: int = 0) -> None:
        """Pipeline, gateway keys, publish, checkpoint (in that order: a crash between them
        repeats ids, never loses them), metrics. An identity whose checkpoint lost the race
        to another worker (a rebalance) is stepped again at once from the winner's state:
        its events are duplicates by then, observed again where the winner had not."""
        started = time.perf_counter()
        outcome = await retrying(lambda: pipeline.process(batch), log=log)
        await retrying(lambda: pipeline.apply_throttles(outcome, utc_now()), log=log)
        await _publish(outcome)
        lost = await retrying(lambda: pipeline.commit(outcome, utc_now()), log=log)
        metrics.count_batch(outcome, time.perf_counter() - started)
        metrics.observe_latency(batch, utc_now())
        if lost and race < RACE_RETRIES:
            log.info("checkpoint race lost for %d identities; stepping them again", len(lost))
            again = set(lost)
            await _score_step([e for e in batch if e.identity in again], race + 1)
        elif lost:
            log.warning(
                "checkpoint race lost %d times in a row for %d identities; their next batch "
                "re-scores their minutes (observations of this batch may be missing)",
                race + 1,
                len(lost),
            )

    _downstream = _score if keyed else _hop

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
            decoded: list[MeteringEvent] = []
            await _count_dead(await _split(settled.items, None, decoded))
            await _downstream(decoded)
            await app.producer.flush()
        if settled.waited:
            await retrying(lambda: holds.release(settled), log=log)

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
            now = utc_now()
            batch: list[MeteringEvent] = []
            for value in values:
                for item in read_keyed(value, now):
                    if isinstance(item, DeadLetter):  # a producer other than decode_agent
                        metrics.DEAD_LETTERS.labels(item.reason).inc()
                        await _send(settings.topic_dlq, None, item.model_dump_json().encode())
                        dead_log.letter(item, settings.topic_dlq)
                    else:
                        batch.append(item)
            await _score(batch)

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
            if settings.topic_alerts_ocsf:  # SIEMs reading Kafka: the same alert in OCSF
                key = alert.identity.encode()
                await _send(settings.topic_alerts_ocsf, key, finding_json(alert))
            log.warning(
                "ALERT %s %s %s",
                alert.severity,
                alert.status,
                alert.summary,
                extra=alert_context(alert),
            )
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
