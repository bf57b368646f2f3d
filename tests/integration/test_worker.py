"""`meterguard worker` as a real process on a real Tansu broker and a real Redis.

One scenario per module (a worker costs a consumer-group join): mixed traffic with a runaway
agent and a malformed message in the middle, then the very same messages a second time.
Each test asserts one behaviour of that run.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import orjson
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streams.cli import topic_specs
from streams.embedded import EmbeddedBroker, EmbeddedRedis, free_port
from streams.settings import Settings
from streams.topics import ensure_topics
from streams.window_store import WindowStore
from tests.traffic import mixed

DEADLINE_S = 120.0
API_TOKEN = uuid.uuid4().hex
MALFORMED = b'{"event_id": "broken", "identity": "svc-quiet-0", "event_time": "yesterday"}'


@dataclass
class Run:
    settings: Settings
    store: WindowStore
    sent: list[dict]
    web: str
    messages: dict[str, list[dict]] = field(default_factory=dict)


async def wait_for(check: Callable[[], Awaitable[bool]], what: str, log: Path) -> None:
    """Poll a condition until it holds; fail with the worker's log if it never does."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.25)  # polling interval of a condition check, not a stand-in for it
    tail = log.read_text(errors="replace")[-3000:]
    pytest.fail(f"timed out waiting for {what}; worker log tail:\n{tail}")


async def read_topics(settings: Settings, topics: list[str]) -> dict[str, list[dict]]:
    consumer = AIOKafkaConsumer(
        *topics, bootstrap_servers=settings.bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    found: dict[str, list[dict]] = {t: [] for t in topics}
    try:
        while True:
            batches = await consumer.getmany(timeout_ms=1500)
            if not batches:
                return found
            for tp, records in batches.items():
                found[tp.topic] += [orjson.loads(r.value) for r in records]
    finally:
        await consumer.stop()


@pytest.fixture(scope="module")
async def run(broker: EmbeddedBroker, redis_server: EmbeddedRedis, tmp_path_factory):
    tag = uuid.uuid4().hex[:8]
    env = {
        **os.environ,
        "MG_KAFKA_BROKER": broker.url,
        "MG_REDIS_URL": redis_server.url,
        "MG_APP_ID": f"mg-test-{tag}",
        "MG_KEY_PREFIX": f"w{tag}",
        "MG_DATA_DIR": str(tmp_path_factory.mktemp("faust")),
        **{
            f"MG_TOPIC_{k}": f"{tag}.{k.lower()}"
            for k in ("RAW", "EVENTS", "DLQ", "ALERTS", "THROTTLE", "ALERTS_DLQ", "AUDIT")
        },
        "MG_API_TOKEN": API_TOKEN,
        "MG_TOPIC_PARTITIONS": "2",
    }
    settings = Settings(
        _env_file=None, **{k[3:].lower(): v for k, v in env.items() if k.startswith("MG_")}
    )
    # Created before anything is produced: Tansu would auto-create with 4 partitions.
    await ensure_topics(broker.bootstrap, topic_specs(settings))
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    web_port = free_port()
    worker = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "worker", "--web-port", str(web_port)],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    client = aioredis.Redis.from_url(redis_server.url)
    store = WindowStore(client, settings.store_config())
    # Recent data, so the runaway's throttle command is still live when the test looks.
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=80)
    docs = mixed(quiet=4, prefix=f"{tag}-", start=start)
    payloads = [orjson.dumps(d) for d in docs]
    half = len(payloads) // 2
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=10)
    await producer.start()
    try:
        for _round in range(2):  # the second round is a full redelivery: every id again
            for i, payload in enumerate(payloads):
                if i == half and _round == 0:
                    await producer.send(settings.topic_raw, key=b"svc-quiet-0", value=MALFORMED)
                await producer.send(
                    settings.topic_raw, key=docs[i]["identity"].encode(), value=payload
                )
            await producer.flush()

        async def all_counted() -> bool:
            stats = await store.stats()
            return stats.get("events_new", 0) + stats.get("events_duplicate", 0) >= 2 * len(docs)

        await wait_for(all_counted, "both rounds to be counted", log)
        yield Run(settings, store, docs, f"http://127.0.0.1:{web_port}")
    finally:
        await producer.stop()
        worker.terminate()
        worker.wait(timeout=20)
        await client.aclose()


async def test_runaway_agent_alert_reaches_the_alerts_topic(run: Run):
    found = await read_topics(run.settings, [run.settings.topic_alerts])
    firing = [a for a in found[run.settings.topic_alerts] if a["status"] == "firing"]
    assert [a["identity"] for a in firing] == ["agent-runaway"]
    assert firing[0]["severity"] == "critical"
    assert firing[0]["detector"] == "spike"


async def test_runaway_agent_gets_a_throttle_on_topic_and_in_redis_quiet_ones_do_not(run: Run):
    found = await read_topics(run.settings, [run.settings.topic_throttle])
    commands = found[run.settings.topic_throttle]
    assert {c["identity"] for c in commands} == {"agent-runaway"}
    assert commands[-1]["action"] == "throttle"
    live = await run.store.active_throttle("agent-runaway")
    assert live is not None and live.model_dump(mode="json") == commands[-1]
    assert await run.store.redis.pttl(run.store.throttle_key("agent-runaway")) > 0
    for i in range(4):
        assert await run.store.active_throttle(f"svc-quiet-{i}") is None


async def test_the_same_events_sent_twice_count_once(run: Run):
    stats = await run.store.stats()
    assert stats["events_new"] == len(run.sent)
    assert stats["events_duplicate"] == len(run.sent)
    counters = await run.store.counters("agent-runaway")
    expected = sum(1 for d in run.sent if d["identity"] == "agent-runaway")
    assert counters["new"] == expected


async def test_malformed_message_lands_in_dlq_with_reason_and_others_still_flow(run: Run):
    found = await read_topics(run.settings, [run.settings.topic_dlq])
    letters = found[run.settings.topic_dlq]
    assert len(letters) == 1
    letter = letters[0]
    assert letter["reason"] == "invalid_event"
    assert "event_time" in letter["error"]
    assert letter["raw"].encode() == MALFORMED
    assert letter["topic"] == run.settings.topic_raw and letter["offset"] is not None
    assert (await run.store.stats())["events_dead_lettered"] == 1
    quiet = await run.store.counters("svc-quiet-0")
    assert quiet["new"] == sum(1 for d in run.sent if d["identity"] == "svc-quiet-0")


async def get(url: str) -> tuple[int, object]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.json()


async def test_worker_http_reports_health_readiness_throttles_and_alerts(run: Run):
    assert await get(f"{run.web}/healthz") == (200, {"status": "ok"})
    status, ready = await get(f"{run.web}/readyz")
    assert status == 200 and ready == {"status": "ready", "redis": True, "broker": True}
    status, active = await get(f"{run.web}/api/throttles")
    assert status == 200 and [c["identity"] for c in active] == ["agent-runaway"]
    status, one = await get(f"{run.web}/api/throttles/agent-runaway")
    assert status == 200 and one == active[0]
    status, missing = await get(f"{run.web}/api/throttles/svc-quiet-0")
    assert status == 404 and "svc-quiet-0" in missing["error"]
    status, alerts = await get(f"{run.web}/api/alerts?limit=5")
    assert status == 200 and alerts and alerts[0]["identity"] == "agent-runaway"
    status, _ = await get(f"{run.web}/api/alerts?limit=zero")
    assert status == 400


async def test_worker_metrics_count_events_duplicates_dead_letters_and_alerts(run: Run):
    async with aiohttp.ClientSession() as session, session.get(f"{run.web}/metrics") as response:
        assert response.status == 200
        text = await response.text()
    samples = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("meterguard_") and not line.startswith("meterguard_batch_seconds")
    }
    n = len(run.sent)
    assert samples['meterguard_events_total{status="new"}'] == n
    assert samples['meterguard_events_total{status="duplicate"}'] == n
    assert samples['meterguard_dead_letters_total{reason="invalid_event"}'] == 1
    assert (
        samples['meterguard_alerts_total{detector="spike",severity="critical",status="firing"}']
        >= 1
    )
    assert samples['meterguard_throttle_commands_total{action="throttle"}'] >= 1
    assert "meterguard_batch_seconds_count" in text
    assert samples["meterguard_throttles_active"] == 1
    assert samples["meterguard_event_latency_seconds_count"] == 2 * n  # both rounds, each event
    lag = [k for k in samples if k.startswith("meterguard_consumer_lag{")]
    assert any(run.settings.topic_events in k for k in lag), lag


class SseReader:
    """Reads `event:`/`data:` frames from an open text/event-stream response."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response

    async def next_event(self) -> tuple[str, str]:
        event, data = "message", []
        while True:
            line = await asyncio.wait_for(self.response.content.readline(), DEADLINE_S)
            assert line, "the stream ended"
            text = line.decode().rstrip("\r\n")
            if not text:
                if data:
                    return event, "\n".join(data)
                continue
            field, _, value = text.partition(":")
            if field == "event":
                event = value.strip()
            elif field == "data":
                data.append(value.removeprefix(" "))


async def test_throttle_stream_starts_with_a_snapshot_of_active_commands(run: Run):
    url = f"{run.web}/api/throttles/stream"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        reader = SseReader(response)
        event, data = await reader.next_event()
        assert event == "command" and orjson.loads(data)["identity"] == "agent-runaway"
        event, data = await reader.next_event()
        assert (event, orjson.loads(data)) == ("ready", {"count": 1})


async def post(url: str, token: str | None, body: object = None) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    headers["X-Meterguard-Actor"] = "alice@sec"
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, headers=headers, json=body) as response,
    ):
        return response.status, await response.json()


# Last in the module: it releases the runaway's throttle the tests above rely on.
async def test_operator_release_needs_the_token_is_streamed_audited_and_published(run: Run):
    url = f"{run.web}/api/throttles/agent-runaway/release"
    assert (await post(url, None))[0] == 401
    assert (await post(url, "wrong-token"))[0] == 403
    assert (await post(f"{run.web}/api/throttles/svc-quiet-0/release", API_TOKEN))[0] == 404
    held = await run.store.active_throttle("agent-runaway")
    assert held is not None  # the refused requests changed nothing
    stream_url = f"{run.web}/api/throttles/stream"
    async with aiohttp.ClientSession() as session, session.get(stream_url) as stream:
        reader = SseReader(stream)
        while (await reader.next_event())[0] != "ready":
            pass
        status, release = await post(url, API_TOKEN, {"reason": "false positive"})
        assert status == 200, release
        event, data = await reader.next_event()
    assert event == "command" and orjson.loads(data) == release
    assert release["action"] == "release" and release["version"] > held.version
    assert release["alert_id"] == held.alert_id and "alice@sec" in release["reason"]
    assert await run.store.active_throttle("agent-runaway") is None
    assert (await get(f"{run.web}/api/throttles/agent-runaway"))[0] == 404
    assert (await post(url, API_TOKEN))[0] == 404  # nothing left to release
    status, trail = await get(f"{run.web}/api/audit?limit=5")
    assert status == 200 and len(trail) == 1
    assert trail[0]["actor"] == "alice@sec" and trail[0]["reason"] == "false positive"
    assert trail[0]["target_command_id"] == held.command_id
    topics = [run.settings.topic_audit, run.settings.topic_throttle]
    found = await read_topics(run.settings, topics)
    assert found[run.settings.topic_audit] == trail
    assert found[run.settings.topic_throttle][-1] == release
