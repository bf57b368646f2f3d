"""`meterguard replay --topic`: the same messages from a topic and from a file give
byte-identical alerts, throttles and scores; a time range selects a sub-range."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from meterguard.streams.runtime.topics import TopicSpec, ensure_topics
from meterguard.streams.tools.embedded import EmbeddedBroker, EmbeddedRedis
from meterguard.timeutil import format_time
from tests.support.traffic import mixed

POISON = b'{"event_id": "poison", "identity": "svc-quiet-0", "event_time": "yesterday"}'
# Record timestamps: strictly increasing in file order (a producer sending the file line by
# line), after the traffic's event times so none looks like it is from the future.
STAMP0 = datetime(2026, 1, 6, tzinfo=UTC)
STEP_MS = 10


def traffic_lines() -> list[bytes]:
    docs = mixed(quiet=3)
    lines = [orjson.dumps(d) for d in docs]
    # Duplicates: every 97th event again 150 lines later (a gateway retrying a send).
    for i in range(len(docs) - 150, 0, -97):
        lines.insert(i + 150, lines[i])
    lines.insert(len(lines) // 2, POISON)
    return lines


def stamp_ms(index: int) -> int:
    return int(STAMP0.timestamp() * 1000) + index * STEP_MS


async def produce_lines(bootstrap: str, topic: str, lines: list[bytes]) -> set[int]:
    await ensure_topics(bootstrap, [TopicSpec(topic, 2)])
    identities = sorted({orjson.loads(line).get("identity", "") for line in lines})
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20)
    await producer.start()
    used = set()
    try:
        for i, line in enumerate(lines):
            identity = orjson.loads(line)["identity"]
            partition = identities.index(identity) % 2  # one identity, one partition
            used.add(partition)
            await producer.send(
                topic, value=line, key=identity.encode(), partition=partition,
                timestamp_ms=stamp_ms(i),
            )  # fmt: skip
        await producer.flush()
    finally:
        await producer.stop()
    return used


def replay(out: Path, env: dict[str, str], *source: str) -> subprocess.CompletedProcess:
    out.mkdir()
    args = [
        sys.executable,
        "-m",
        "meterguard.streams.tools.cli",
        "replay",
        *source,
        "--batch-size",
        "300",
    ]
    for name in ("alerts", "throttles", "scores"):
        args += [f"--{name}-out", str(out / f"{name}.jsonl")]
    args += ["--dlq-out", str(out / "dlq.jsonl"), "--no-progress"]
    done = subprocess.run(args, env=env, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()
    return done


def lines_of(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


@pytest.fixture
def env(broker: EmbeddedBroker, redis_server: EmbeddedRedis) -> dict[str, str]:
    return {**os.environ, "MG_KAFKA_BROKER": broker.url, "MG_REDIS_URL": redis_server.url}


async def test_topic_and_file_replays_give_byte_identical_alerts_throttles_and_scores(
    tmp_path: Path, broker: EmbeddedBroker, env: dict[str, str]
):
    lines = traffic_lines()
    topic = f"replay-{uuid.uuid4().hex[:8]}"
    assert await produce_lines(broker.bootstrap, topic, lines) == {0, 1}
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join(lines) + b"\n")

    from_file = replay(tmp_path / "file", env, str(events))
    from_topic = replay(tmp_path / "topic", env, "--topic", topic, "--idle-timeout", "1")

    for name in ("alerts.jsonl", "throttles.jsonl", "scores.jsonl"):
        assert (tmp_path / "file" / name).read_bytes() == (tmp_path / "topic" / name).read_bytes()
    alerts = lines_of(tmp_path / "topic" / "alerts.jsonl")
    assert [a["identity"] for a in alerts if a["status"] == "firing"] == ["agent-runaway"]
    assert lines_of(tmp_path / "topic" / "throttles.jsonl")
    scores = lines_of(tmp_path / "topic" / "scores.jsonl")
    assert len(scores) == len(lines) - 1  # every message but the poison one
    duplicates = sum(1 for s in scores if s["status"] == "duplicate")
    assert duplicates == len(lines) - 1 - len({s["event_id"] for s in scores}) > 0
    (letter,) = lines_of(tmp_path / "topic" / "dlq.jsonl")
    assert letter["reason"] == "invalid_event" and letter["raw"].encode() == POISON
    assert letter["topic"] == topic and letter["offset"] is not None
    assert b"1 dead letters" in from_file.stderr and b"1 dead letters" in from_topic.stderr


async def test_time_range_replays_the_records_stamped_inside_it(
    tmp_path: Path, broker: EmbeddedBroker, env: dict[str, str]
):
    lines = traffic_lines()
    topic = f"replay-{uuid.uuid4().hex[:8]}"
    await produce_lines(broker.bootstrap, topic, lines)
    first, stop = 40, len(lines) - len(lines) // 7  # cuts the start and the end
    part = tmp_path / "part.jsonl"
    part.write_bytes(b"\n".join(lines[first:stop]) + b"\n")

    def at(index: int) -> str:
        return format_time(STAMP0 + timedelta(milliseconds=index * STEP_MS))

    replay(tmp_path / "file", env, str(part))
    ranged = ["--from-time", at(first), "--to-time", at(stop), "--idle-timeout", "1"]
    replay(tmp_path / "topic", env, "--topic", topic, *ranged)

    for name in ("alerts.jsonl", "throttles.jsonl", "scores.jsonl"):
        assert (tmp_path / "file" / name).read_bytes() == (tmp_path / "topic" / name).read_bytes()
    scores = lines_of(tmp_path / "topic" / "scores.jsonl")
    wanted = [orjson.loads(x)["event_id"] for x in lines[first:stop] if x != POISON]
    assert [s["event_id"] for s in scores] == wanted
    assert lines_of(tmp_path / "topic" / "alerts.jsonl")  # the runaway starts inside the range


async def test_offset_range_replays_those_offsets_of_every_partition(
    tmp_path: Path, broker: EmbeddedBroker, env: dict[str, str]
):
    lines = traffic_lines()[:200]
    topic = f"replay-{uuid.uuid4().hex[:8]}"
    await produce_lines(broker.bootstrap, topic, lines)
    replay(tmp_path / "all", env, "--topic", topic, "--idle-timeout", "1")
    offsets = ["--from-offset", "10", "--to-offset", "30", "--idle-timeout", "1"]
    replay(tmp_path / "part", env, "--topic", topic, *offsets)
    beyond = ["--from-offset", "100000", "--idle-timeout", "1"]
    replay(tmp_path / "none", env, "--topic", topic, *beyond)

    everything = lines_of(tmp_path / "all" / "scores.jsonl")
    part = lines_of(tmp_path / "part" / "scores.jsonl")
    assert len(part) == 2 * 20 and {s["event_id"] for s in part} < {
        s["event_id"] for s in everything
    }
    assert lines_of(tmp_path / "none" / "scores.jsonl") == []


def test_replay_refuses_a_topic_that_does_not_exist(tmp_path: Path, env: dict[str, str]):
    args = [
        sys.executable,
        "-m",
        "meterguard.streams.tools.cli",
        "replay",
        "--topic",
        "no-such-topic",
    ]
    args += ["--alerts-out", str(tmp_path / "a"), "--throttles-out", str(tmp_path / "t")]
    done = subprocess.run(args, env=env, capture_output=True, timeout=60)
    assert done.returncode == 2 and b"does not exist" in done.stderr


def kcat_line(record) -> bytes:
    """A consumer record as `kcat -C -J` prints it."""
    headers: list[str] = []
    for name, value in record.headers:
        headers += [name, value.decode()]
    return orjson.dumps(
        {
            "topic": record.topic,
            "partition": record.partition,
            "offset": record.offset,
            "tstype": "create",
            "ts": record.timestamp,
            "broker": 111,
            "headers": headers,
            "key": record.key.decode() if record.key else None,
            "payload": record.value.decode(),
        }
    )


async def test_a_kcat_dump_replays_like_its_topic_headers_and_all(
    tmp_path: Path, broker: EmbeddedBroker, env: dict[str, str]
):
    from aiokafka import AIOKafkaConsumer

    from tests.support.format_traffic import MAPPING_YAML, as_formats

    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(MAPPING_YAML)
    env = {**env, "MG_MAPPING_FILE": str(mapping)}
    traffic = as_formats(mixed(quiet=3))  # binary CloudEvents and OpenAI need their headers
    assert any(headers for _value, headers, _key in traffic.messages)
    topic = f"kcat-{uuid.uuid4().hex[:8]}"
    await ensure_topics(broker.bootstrap, [TopicSpec(topic, 1)])
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=20)
    await producer.start()
    try:
        for i, (value, headers, key) in enumerate(traffic.messages):
            await producer.send(
                topic, value=value, key=key, headers=headers, timestamp_ms=stamp_ms(i)
            )
        await producer.flush()
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    dump: list[bytes] = []
    try:
        while batches := await consumer.getmany(timeout_ms=1500):
            for records in batches.values():
                dump += [kcat_line(r) for r in records]
    finally:
        await consumer.stop()
    assert len(dump) == len(traffic.messages)
    dump.insert(7, b'{"topic": "x", "no": "payload"}')  # a line that is no kcat record
    (tmp_path / "dump.jsonl").write_bytes(b"\n".join(dump) + b"\n")

    replay(tmp_path / "file", env, str(tmp_path / "dump.jsonl"), "--kcat")
    replay(tmp_path / "topic", env, "--topic", topic, "--idle-timeout", "1")

    for name in ("alerts.jsonl", "throttles.jsonl", "scores.jsonl"):
        assert (tmp_path / "file" / name).read_bytes() == (tmp_path / "topic" / name).read_bytes()
    alerts = lines_of(tmp_path / "file" / "alerts.jsonl")
    assert [a["identity"] for a in alerts if a["status"] == "firing"] == ["agent-runaway"]
    assert len(lines_of(tmp_path / "file" / "scores.jsonl")) == len(traffic.native)
    (letter,) = lines_of(tmp_path / "file" / "dlq.jsonl")
    assert letter["reason"] == "invalid_envelope" and "payload" in letter["error"]
    assert letter["offset"] == 8  # the dump's line number: nothing points back to a topic
