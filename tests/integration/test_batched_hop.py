"""Batches end to end (issue 13): the hop on and off give the same windows, letters and alerts.

Two `meterguard worker` processes on the session's Tansu broker and Redis, each with its own
topics, key prefix and app id, are fed the very same records, keyed by identity: mixed traffic
with a runaway agent, where the runaway's and one quiet identity's events travel as JSON arrays
of native events (one array holding a bad element), plus an empty array. One worker re-keys
through `metering.events` (batch records, the default); the other has
MG_RAW_KEYED_BY_IDENTITY set and scores straight from `metering.raw`. A third worker, hop
off, shows that the OTLP hold timer scores what it settles itself.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from meterguard.streams.tools.embedded import EmbeddedBroker, EmbeddedRedis
from meterguard.timeutil import parse_event_time, to_ms
from tests.support.agent_run import agent_run
from tests.support.polling import eventually
from tests.support.traffic import mixed
from tests.support.worker_process import Worker, read_topics, start_worker

IN_ARRAYS = {"agent-runaway": 25, "svc-quiet-1": 10}  # identity -> events per array
BAD = {"event_id": "bad-1", "identity": "svc-quiet-1", "event_time": "yesterday"}
EMPTY_KEY = b"svc-quiet-2"


@dataclass
class Runs:
    hop: Worker
    direct: Worker
    sent: list[dict]  # the valid events, in produce order


def records(docs: list[dict]) -> list[tuple[bytes, bytes]]:
    """(key, value) per raw record: single events, and arrays for IN_ARRAYS identities (each
    sent when full, so every identity's events keep their order); BAD in the first array."""
    out: list[tuple[bytes, bytes]] = []
    pending: dict[str, list[object]] = {identity: [] for identity in IN_ARRAYS}
    bad_sent = False
    for doc in docs:
        identity = doc["identity"]
        if identity not in pending:
            out.append((identity.encode(), orjson.dumps(doc)))
            continue
        pending[identity].append(doc)
        if identity == BAD["identity"] and len(pending[identity]) == 3 and not bad_sent:
            pending[identity].append(BAD)
            bad_sent = True
        if len(pending[identity]) >= IN_ARRAYS[identity]:
            out.append((identity.encode(), orjson.dumps(pending[identity])))
            pending[identity] = []
    out += [(i.encode(), orjson.dumps(rest)) for i, rest in pending.items() if rest]
    out.append((EMPTY_KEY, b"[]"))
    return out


@pytest.fixture(scope="module")
async def runs(broker: EmbeddedBroker, redis_server: EmbeddedRedis, tmp_path_factory):
    hop = await start_worker(broker, redis_server.url, tmp_path_factory)
    direct = await start_worker(
        broker, redis_server.url, tmp_path_factory, {"MG_RAW_KEYED_BY_IDENTITY": "true"}
    )
    # Recent, so the runaway's throttle command is live and published (not refused expired).
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=80)
    docs = mixed(quiet=4, start=start)
    sent = records(docs)
    assert sum(1 for _, value in sent if value.startswith(b"[{")) > 20
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=10)
    await producer.start()
    try:
        for worker in (hop, direct):
            for key, value in sent:
                await producer.send(worker.settings.topic_raw, key=key, value=value)
        await producer.flush()
        await asyncio.gather(*(w.wait_counted(len(docs)) for w in (hop, direct)))
        await asyncio.gather(*(w.wait_counted(2, ("events_dead_lettered",)) for w in (hop, direct)))
        # Counted (the roll-ups) comes before the batch's scoring, publishing and checkpoint:
        # wait until every identity's checkpoint has scored all its final minutes.
        identities = sorted({d["identity"] for d in docs})
        await asyncio.gather(*(checkpointed(w, identities) for w in (hop, direct)))
        yield Runs(hop, direct, docs)
    finally:
        await producer.stop()
        await hop.stop()
        await direct.stop()


async def topic(worker: Worker, name: str) -> list[dict]:
    return (await read_topics(worker.settings, [name]))[name]


async def dead_letters(worker: Worker) -> list[dict]:
    """The DLQ once both letters are on it (counted in Redis first, flushed right after)."""
    found: list[dict] = []

    async def both() -> bool:
        found[:] = await topic(worker, worker.settings.topic_dlq)
        return len(found) >= 2

    await eventually(both, "two dead letters on the DLQ", log=worker.log)
    return found


def comparable(letters: list[dict]) -> list[tuple]:
    return sorted((x["reason"], x["error"], x["raw"], x["format"]) for x in letters)


async def test_both_modes_count_every_valid_event_once_into_the_same_windows(runs: Runs):
    for worker in (runs.hop, runs.direct):
        stats = await worker.store.stats.pipeline_counters()
        assert stats["events_new"] == len(runs.sent)
        assert stats.get("events_duplicate", 0) == 0 and stats.get("events_late", 0) == 0
    minutes = [to_ms(parse_event_time(d["event_time"])) // 60_000 for d in runs.sent]
    first, last = min(minutes), max(minutes)
    for identity in sorted({d["identity"] for d in runs.sent}):
        mine = [d for d in runs.sent if d["identity"] == identity]
        hop = await runs.hop.store.windows.read(identity, first, last)
        direct = await runs.direct.store.windows.read(identity, first, last)
        assert hop == direct, identity
        assert sum(w.calls for w in hop) == len(mine)
        assert sum(w.input_tokens for w in hop) == sum(d["input_tokens"] for d in mine)
        counters = [await counts(w, identity) for w in (runs.hop, runs.direct)]
        assert counters[0] == counters[1] and counters[0]["new"] == len(mine)


async def checkpointed(worker: Worker, identities: list[str]) -> None:
    async def done() -> bool:
        for identity in identities:
            found = await worker.store.windows.counters(identity)
            if found.get("sc") != found.get("fin"):
                return False
        return True

    await eventually(done, "every identity's checkpoint", log=worker.log)


async def counts(worker: Worker, identity: str) -> dict[str, int]:
    """An identity's counters, watermark and minutes; not `rseq` (a roll-up sequence that
    starts from the wall clock)."""
    found = await worker.store.windows.counters(identity)
    return {k: v for k, v in found.items() if k != "rseq"}


async def test_both_modes_dead_letter_the_bad_element_and_the_empty_array_alike(runs: Runs):
    hop, direct = await asyncio.gather(dead_letters(runs.hop), dead_letters(runs.direct))
    assert comparable(hop) == comparable(direct)
    letters = {x["reason"]: x for x in direct}
    assert set(letters) == {"invalid_event", "empty_batch"}
    assert orjson.loads(letters["invalid_event"]["raw"]) == BAD  # the element, not the array
    assert "event_time" in letters["invalid_event"]["error"]
    assert letters["empty_batch"]["raw"] == "[]"
    for x in direct:
        assert x["topic"] == runs.direct.settings.topic_raw and x["offset"] is not None


async def test_both_modes_publish_the_same_alerts_and_throttle_commands(runs: Runs):
    for name in ("topic_alerts", "topic_throttle"):
        hop = await topic(runs.hop, getattr(runs.hop.settings, name))
        direct = await topic(runs.direct, getattr(runs.direct.settings, name))
        assert sorted(hop, key=orjson.dumps) == sorted(direct, key=orjson.dumps), name
        assert {x["identity"] for x in direct} == {"agent-runaway"}, name
    alerts = await topic(runs.direct, runs.direct.settings.topic_alerts)
    assert any(a["status"] == "firing" and a["detector"] == "spike" for a in alerts)


async def test_the_hop_carries_batches_of_one_identity_in_its_order(runs: Runs):
    settings = runs.hop.settings
    records = await raw_records(runs.hop, settings.topic_events)
    assert all(value.startswith(b"[") for _, value in records)
    batches = [(key.decode(), orjson.loads(value)) for key, value in records]
    assert all(e["identity"] == key for key, batch in batches for e in batch)
    assert sum(len(batch) for _, batch in batches) == len(runs.sent)
    assert len(batches) < len(runs.sent) / 2  # the hop carries batches, not single events
    consumed = [e for _, batch in batches for e in batch]  # per partition, in order
    for identity in {d["identity"] for d in runs.sent}:
        sent = [d["event_id"] for d in runs.sent if d["identity"] == identity]
        assert [e["event_id"] for e in consumed if e["identity"] == identity] == sent
    # Without the hop, nothing is written to metering.events.
    assert await raw_records(runs.direct, runs.direct.settings.topic_events) == []


async def raw_records(worker: Worker, name: str) -> list[tuple[bytes, bytes]]:
    """(key, value) of every record of a topic so far, per partition in offset order."""
    consumer = AIOKafkaConsumer(
        name, bootstrap_servers=worker.settings.bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    found: list[tuple[bytes, bytes]] = []
    try:
        while batches := await consumer.getmany(timeout_ms=1500):
            found += [(r.key, r.value) for records in batches.values() for r in records]
    finally:
        await consumer.stop()
    return found


async def test_without_the_hop_the_hold_timer_scores_what_it_settles_and_a_stray_key_is_logged(
    broker: EmbeddedBroker, redis_server: EmbeddedRedis, tmp_path_factory
):
    """OTLP calls whose agent span never comes are settled by the timer after the hold and
    scored by it (there is no hop to send them to); a record keyed by another identity is
    counted all the same, and the broken promise is logged."""
    direct = await start_worker(
        broker,
        redis_server.url,
        tmp_path_factory,
        {"MG_RAW_KEYED_BY_IDENTITY": "true", "MG_TRACE_HOLD_S": "1"},
    )
    now = datetime.now(UTC).replace(microsecond=0)
    orphan = agent_run("billing-svc", "invoice-agent", 2, now - timedelta(minutes=1))
    stray = {"event_id": "stray-1", "identity": "svc-x", "event_time": now.isoformat()}
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
    await producer.start()
    try:
        raw = direct.settings.topic_raw
        await producer.send_and_wait(raw, orphan.calls, key=b"billing-svc")
        await producer.send_and_wait(raw, orjson.dumps(stray), key=b"svc-other")
        await direct.wait_counted(3)
        assert (await counts(direct, "billing-svc"))["new"] == 2
        assert (await counts(direct, "svc-x"))["new"] == 1
        assert await raw_records(direct, direct.settings.topic_events) == []

        def warned() -> bool:
            return "MG_RAW_KEYED_BY_IDENTITY is set, but" in direct.log.read_text()

        await eventually(warned, "the stray key to be logged", log=direct.log)
    finally:
        await producer.stop()
        await direct.stop()
