"""The captured samples of every format, sent through a real broker to a real worker, come
out of the worker as exactly the events their native twins do (tests/data/formats/)."""

from __future__ import annotations

import asyncio

import orjson
from aiokafka import AIOKafkaProducer

from meterguard.streams.tools.embedded import EmbeddedBroker, EmbeddedRedis
from tests.support.format_samples import SAMPLES, native_lines, sample
from tests.support.worker_process import read_topics, start_worker


def comparable(events: list[dict]) -> list[dict]:
    """Events without ingest_time (the worker's clock), in a stable order."""
    return sorted(({k: v for k, v in e.items() if k != "ingest_time"} for e in events), key=str)


async def check_through_the_broker(
    names: list[str], broker: EmbeddedBroker, redis_server: EmbeddedRedis, tmp_path_factory
) -> None:
    native = await start_worker(broker, redis_server.url, tmp_path_factory)
    formats = await start_worker(broker, redis_server.url, tmp_path_factory)
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=10)
    await producer.start()
    expected = 0
    try:
        for name in names:
            value, headers = sample(name)
            await producer.send(formats.settings.topic_raw, value=value, headers=headers or [])
            for line in native_lines(name):
                await producer.send(native.settings.topic_raw, value=line)
                expected += 1
        await producer.flush()
        await asyncio.gather(native.wait_counted(expected), formats.wait_counted(expected))
        topics = [native.settings.topic_events, native.settings.topic_dlq]
        want = await read_topics(native.settings, topics)
        topics = [formats.settings.topic_events, formats.settings.topic_dlq]
        got = await read_topics(formats.settings, topics)
    finally:
        await producer.stop()
        await native.stop()
        await formats.stop()
    assert want[native.settings.topic_dlq] == [] and got[formats.settings.topic_dlq] == []
    assert len(want[native.settings.topic_events]) == expected
    assert comparable(got[formats.settings.topic_events]) == comparable(
        want[native.settings.topic_events]
    )
    # Every sample contributed (none vanished into "ignored").
    identities = {e["identity"] for e in got[formats.settings.topic_events]}
    for name in names:
        first = orjson.loads(native_lines(name)[0])
        assert first["identity"] in identities, name


async def test_every_sample_through_the_broker_gives_its_native_twins_events(
    broker: EmbeddedBroker, redis_server: EmbeddedRedis, tmp_path_factory
):
    names = list(SAMPLES)
    await check_through_the_broker(names, broker, redis_server, tmp_path_factory)
