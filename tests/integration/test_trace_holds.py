"""A trace's agent identity across exports, on a real Redis and a real worker.

The real OTel SDK makes an agent run whose model calls are exported before the agent span
(tests/support/agent_run.py). Through a `meterguard worker` on the Tansu broker, the calls are
counted under the agent once its span arrives, and under the service when it never does (the
hold ends; the worker's timer settles them). The Redis keeper is also driven directly: two
workers settling one span, and a crash between producing and releasing, keep one identity.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer

from meterguard.models import MeteringEvent
from meterguard.streams.decoding.decode import Origin, decode_message
from meterguard.streams.runtime.trace_holds import TraceHolds
from meterguard.streams.store.keys import KeyLayout
from meterguard.streams.store.trace_agents import TraceAgents
from meterguard.streams.tools.embedded import EmbeddedBroker, EmbeddedRedis
from tests.support.agent_run import agent_run
from tests.support.polling import eventually
from tests.support.worker_process import Worker, read_topics, start_worker

pytestmark = pytest.mark.integration
NOW = datetime.now(UTC).replace(microsecond=0)
HOLD = timedelta(seconds=60)


def holds(client: aioredis.Redis, hold: timedelta = HOLD) -> TraceHolds:
    return TraceHolds(TraceAgents(client, KeyLayout(f"th{uuid.uuid4().hex[:8]}")), hold)


def exports(service: str, agent: str | None, calls: int = 3):
    run = agent_run(service, agent, calls, NOW - timedelta(minutes=1))
    first = decode_message(run.calls, None, NOW, Origin())
    second = decode_message(run.agent, None, NOW, Origin())
    return run, first, second


def identities(items) -> dict[str, str]:
    return {e.event_id: e.identity for e in items if isinstance(e, MeteringEvent)}


async def test_the_calls_wait_in_redis_and_are_named_when_the_agent_span_arrives(
    redis_server: EmbeddedRedis,
):
    client = aioredis.Redis.from_url(redis_server.url)
    keeper = holds(client)
    run, calls, agent = exports("support-svc", "triage-agent")
    first = await keeper.admit(calls.links, calls.held, NOW)
    assert first.items == [] and first.waited == []
    assert await keeper.store.due(int((NOW + HOLD).timestamp() * 1000)) == [run.trace_id]
    # Another worker (another keeper on the same keys) gets the agent span.
    other = TraceHolds(keeper.store, HOLD)
    second = await other.admit(agent.links, agent.held, NOW + timedelta(seconds=5))
    assert identities(second.items) == dict.fromkeys(run.call_event_ids, "triage-agent")
    assert sorted(e for _, e in second.waited) == sorted(run.call_event_ids)
    await other.release(second)
    assert await keeper.store.due(int((NOW + 2 * HOLD).timestamp() * 1000)) == []
    # A redelivery of the first export, after all that, keeps the decided identity.
    again = await keeper.admit(calls.links, calls.held, NOW + timedelta(seconds=9))
    assert identities(again.items) == dict.fromkeys(run.call_event_ids, "triage-agent")
    await client.aclose()


async def test_past_the_hold_the_timer_falls_back_and_a_crash_before_release_repeats_it(
    redis_server: EmbeddedRedis,
):
    client = aioredis.Redis.from_url(redis_server.url)
    keeper = holds(client)
    run, calls, agent = exports("support-svc", "triage-agent", calls=2)
    await keeper.admit(calls.links, calls.held, NOW)
    assert (await keeper.due(NOW + HOLD - timedelta(seconds=1))).items == []
    settled = await keeper.due(NOW + HOLD)
    assert identities(settled.items) == dict.fromkeys(run.call_event_ids, "support-svc")
    # The worker died after producing them, before releasing: they settle again, and the
    # agent span that arrives meanwhile does not change what was decided (one event each
    # downstream, under one identity).
    late = await keeper.admit(agent.links, agent.held, NOW + HOLD + timedelta(seconds=1))
    assert identities(late.items) == dict.fromkeys(run.call_event_ids, "support-svc")
    await keeper.release(late)
    assert (await keeper.due(NOW + 3 * HOLD)).items == []
    await client.aclose()


async def test_a_worker_counts_the_calls_under_the_agent_and_under_the_service_past_the_hold(
    broker: EmbeddedBroker, redis_server: EmbeddedRedis, tmp_path_factory
):
    # Two workers: a hold far longer than the test (the agent span always comes within it),
    # and a 1 s hold whose timer settles a run whose agent span never comes. Both start at once.
    waits, short = await asyncio.gather(
        start_worker(broker, redis_server.url, tmp_path_factory, {"MG_TRACE_HOLD_S": "3600"}),
        start_worker(broker, redis_server.url, tmp_path_factory, {"MG_TRACE_HOLD_S": "1"}),
    )
    named = agent_run("support-svc", "triage-agent", 3, NOW - timedelta(minutes=2))
    orphan = agent_run("billing-svc", "invoice-agent", 2, NOW - timedelta(minutes=1))
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(waits.settings.topic_raw, named.calls)
        await producer.send_and_wait(short.settings.topic_raw, orphan.calls)
        await short.wait_counted(2)  # settled by the short worker's timer
        await producer.send_and_wait(waits.settings.topic_raw, named.agent)
        await waits.wait_counted(3)
        assert await counted_events(waits) == dict.fromkeys(named.call_event_ids, "triage-agent")
        assert await counted_events(short) == dict.fromkeys(orphan.call_event_ids, "billing-svc")
        for worker in (waits, short):
            due_list = f"{worker.settings.key_prefix}:tagents-due"

            async def nothing_waits(key: str = due_list, w: Worker = worker) -> bool:
                return await w.store.redis.zcard(key) == 0

            await eventually(nothing_waits, "the due list to empty", log=worker.log)
    finally:
        await producer.stop()
        await asyncio.gather(waits.stop(), short.stop())


async def counted_events(worker: Worker) -> dict[str, str]:
    """event_id -> identity of every event the worker's decode agent produced."""
    topic = worker.settings.topic_events
    events = (await read_topics(worker.settings, [topic]))[topic]
    found = {e["event_id"]: e["identity"] for e in events}
    assert len(found) == len(events)  # each produced once
    return found
