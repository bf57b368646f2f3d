"""`meterguard worker` as a real process on a real Tansu broker and a real Redis.

One scenario per module (a worker costs a consumer-group join): mixed traffic with a runaway
agent and a malformed message in the middle, then the very same messages a second time.
Each test asserts one behaviour of that run.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from meterguard.streams.settings import Settings
from meterguard.streams.store import Store
from meterguard.streams.tools.embedded import EmbeddedBroker, EmbeddedRedis
from tests.support.polling import DEADLINE_S
from tests.support.traffic import mixed
from tests.support.worker_process import read_topics, start_worker

API_TOKEN = uuid.uuid4().hex
MALFORMED = b'{"event_id": "broken", "identity": "svc-quiet-0", "event_time": "yesterday"}'
NOT_AN_EVENT = b'{"identity": "svc-quiet-0"}'


@dataclass
class Run:
    settings: Settings
    store: Store
    sent: list[dict]
    web: str


@pytest.fixture(scope="module")
async def run(broker: EmbeddedBroker, redis_server: EmbeddedRedis, tmp_path_factory):
    worker = await start_worker(
        broker, redis_server.url, tmp_path_factory, {"MG_API_TOKEN": API_TOKEN}
    )
    settings = worker.settings
    # Recent data, so the runaway's throttle command is still live when the test looks.
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=80)
    docs = mixed(quiet=4, prefix=f"{settings.key_prefix}-", start=start)
    payloads = [orjson.dumps(d) for d in docs]
    half = len(payloads) // 2
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=10)
    await producer.start()
    try:
        for _round in range(2):  # the second round is a full redelivery: every id again
            for i, payload in enumerate(payloads):
                if i == half and _round == 0:
                    await producer.send(settings.topic_raw, key=b"svc-quiet-0", value=MALFORMED)
                    # Written past decode_agent: the score agent must not choke on it either.
                    await producer.send(settings.topic_events, key=b"x", value=NOT_AN_EVENT)
                await producer.send(
                    settings.topic_raw, key=docs[i]["identity"].encode(), value=payload
                )
            await producer.flush()
        await worker.wait_counted(2 * len(docs), ("events_new", "events_duplicate"))
        yield Run(settings, worker.store, docs, worker.web)
    finally:
        await producer.stop()
        await worker.stop()


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
    live = await run.store.throttles.active_for("agent-runaway")
    assert live is not None and live.model_dump(mode="json") == commands[-1]
    assert await run.store.redis.pttl(run.store.keys.throttle_key("agent-runaway")) > 0
    for i in range(4):
        assert await run.store.throttles.active_for(f"svc-quiet-{i}") is None


async def test_the_same_events_sent_twice_count_once(run: Run):
    stats = await run.store.stats.pipeline_counters()
    assert stats["events_new"] == len(run.sent)
    assert stats["events_duplicate"] == len(run.sent)
    counters = await run.store.windows.counters("agent-runaway")
    expected = sum(1 for d in run.sent if d["identity"] == "agent-runaway")
    assert counters["new"] == expected


async def test_malformed_message_lands_in_dlq_with_reason_and_others_still_flow(run: Run):
    found = await read_topics(run.settings, [run.settings.topic_dlq])
    letters = found[run.settings.topic_dlq]
    assert sorted(x["reason"] for x in letters) == ["invalid_event", "invalid_internal_event"]
    internal = next(x for x in letters if x["reason"] == "invalid_internal_event")
    assert internal["raw"].encode() == NOT_AN_EVENT
    letter = next(x for x in letters if x["reason"] == "invalid_event")
    assert letter["reason"] == "invalid_event"
    assert "event_time" in letter["error"]
    assert letter["raw"].encode() == MALFORMED
    assert letter["topic"] == run.settings.topic_raw and letter["offset"] is not None
    assert (await run.store.stats.pipeline_counters())["events_dead_lettered"] == 1
    quiet = await run.store.windows.counters("svc-quiet-0")
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
    odd = "team/ä bot 100%"  # identities may hold "/", spaces, "%": percent-encoded in URLs
    status, missing = await get(f"{run.web}/api/throttles/{quote(odd, safe='')}")
    assert status == 404 and repr(odd) in missing["error"]
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
    held = await run.store.throttles.active_for("agent-runaway")
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
    assert await run.store.throttles.active_for("agent-runaway") is None
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
