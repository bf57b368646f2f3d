"""The embedded servers are real: they speak their protocols and leave nothing behind."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import uuid

import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from meterguard.streams.runtime.topics import TopicSetupError, TopicSpec, ensure_topics
from meterguard.streams.tools.embedded import (
    EmbeddedBroker,
    EmbeddedRedis,
    EmbeddedServiceError,
    free_port,
)


def _unique(prefix: str) -> str:
    return f"{prefix}.{uuid.uuid4().hex[:8]}"


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            return False  # someone still accepts connections there
    with socket.socket() as sock:
        # SO_REUSEADDR as servers set it: TIME_WAIT leftovers of closed connections are fine.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


async def _describe(bootstrap: str, topics: list[str]) -> tuple[dict[str, int], dict[str, str]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        counts = {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics(topics)}
        configs: dict[str, str] = {}
        for response in await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, t) for t in topics]
        ):
            for res in response.to_object()["resources"]:
                for entry in res["config_entries"]:
                    if entry["config_names"] == "cleanup.policy":
                        configs[res["resource_name"]] = entry["config_value"]
        return counts, configs
    finally:
        await admin.close()


async def test_broker_round_trips_a_record_through_aiokafka(broker: EmbeddedBroker) -> None:
    topic = _unique("roundtrip")
    await ensure_topics(broker.bootstrap, [TopicSpec(topic, 1)])
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await producer.start()
    await consumer.start()
    try:
        await producer.send_and_wait(topic, b'{"event_id": "e1"}', key=b"svc-a")
        async with asyncio.timeout(15):
            record = await consumer.getone()
    finally:
        await consumer.stop()
        await producer.stop()
    assert (record.key, record.value) == (b"svc-a", b'{"event_id": "e1"}')


async def test_ensure_topics_creates_partitioned_and_compacted_topics_idempotently(
    broker: EmbeddedBroker,
) -> None:
    plain, compacted = _unique("plain"), _unique("compacted")
    specs = [TopicSpec(plain, 3), TopicSpec(compacted, 2, compacted=True, retention_ms=60_000)]

    await ensure_topics(broker.url, specs)  # the kafka:// form is accepted too
    await ensure_topics(broker.bootstrap, specs)  # a second call changes nothing

    counts, policies = await _describe(broker.bootstrap, [plain, compacted])
    assert counts == {plain: 3, compacted: 2}
    assert policies.get(compacted) == "compact"


async def test_ensure_topics_keeps_an_existing_topic_with_another_partition_count(
    broker: EmbeddedBroker, caplog: pytest.LogCaptureFixture
) -> None:
    # An operator's topic is used as it is (keying by identity works with any count).
    name = _unique("shape")
    await ensure_topics(broker.bootstrap, [TopicSpec(name, 3)])
    await ensure_topics(broker.bootstrap, [TopicSpec(name, 5)])
    assert "already has 3 partitions (configured 5)" in caplog.text


async def test_ensure_topics_fails_clearly_when_no_broker_answers() -> None:
    with pytest.raises(TopicSetupError):
        await ensure_topics(f"127.0.0.1:{free_port()}", [TopicSpec("nobody", 1)], timeout=3)


def test_topic_spec_rejects_what_real_kafka_rejects() -> None:
    # Any ValueError: that TopicSpec refuses is the contract, its wording is not.
    with pytest.raises(ValueError):  # noqa: PT011
        TopicSpec("bad name!", 1)
    with pytest.raises(ValueError):  # noqa: PT011
        TopicSpec("ok", 0)


async def test_redis_answers_set_and_get(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        assert await client.dbsize() == 0  # redis_url promises an empty server
        await client.set("mg:{svc-a}:probe", "1")
        assert await client.get("mg:{svc-a}:probe") == b"1"
    finally:
        await client.aclose()


def test_redis_server_kind_is_reported(redis_server: EmbeddedRedis) -> None:
    expected = "redis-server" if shutil.which("redis-server") else "valkey"
    assert redis_server.server_kind == expected
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"


def _stoppable_servers() -> list:
    servers = [pytest.param(EmbeddedBroker, id="tansu")]
    servers.append(pytest.param(lambda **kw: EmbeddedRedis(prefer="valkey", **kw), id="valkey"))
    if shutil.which("redis-server"):
        servers.append(
            pytest.param(lambda **kw: EmbeddedRedis(prefer="redis-server", **kw), id="redis")
        )
    return servers


@pytest.mark.parametrize("make", _stoppable_servers())
@pytest.mark.parametrize("how", ["stop", "context_exit"])
def test_stopped_server_leaves_no_process_and_frees_its_port(make, how, tmp_path) -> None:
    server = make(workdir=tmp_path)
    if how == "stop":
        server.start()
        pid, port = server.pid, server.port
        assert _pid_exists(pid)
        server.stop()
    else:
        with server:
            pid, port = server.pid, server.port
            assert _pid_exists(pid)
    assert not server.running
    assert not _pid_exists(pid)
    assert _port_is_free(port)
    server.stop()  # idempotent


def test_server_that_cannot_bind_its_port_fails_with_its_log(broker: EmbeddedBroker) -> None:
    with pytest.raises(EmbeddedServiceError, match="exited with code") as failure:
        EmbeddedRedis(port=broker.port).start()
    assert "Address already in use" in str(failure.value)


def test_missing_binary_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(EmbeddedServiceError, match="cannot run"):
        EmbeddedBroker(binary=str(tmp_path / "no-tansu"), workdir=tmp_path).start()
