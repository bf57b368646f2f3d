"""MG_LOG_FORMAT=json (issue 15): a real `meterguard worker` child logs one JSON object per
line, Faust's records and meterguard's alike, from its first line to its last. It is driven
through an alert (and its throttle), dead letters, an alert no destination accepts and an
operator release; each of those lines names what it is about (identity, alert_id, ...), and
the API token appears nowhere."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from meterguard.streams.tools.embedded import EmbeddedBroker, EmbeddedRedis, free_port
from tests.support.polling import eventually
from tests.support.traffic import mixed
from tests.support.worker_process import Worker, read_topics, start_worker

API_TOKEN = "json-logs-token-5f1c"
RUNAWAY = "agent-runaway"
NOT_JSON = b"{cut"
INVALID_EVENT = b'{"event_id": "bad-1", "identity": "svc-quiet-0", "event_time": "yesterday"}'


@dataclass
class Run:
    lines: list[str]
    alerts: list[dict[str, Any]]
    dead: list[dict[str, Any]]
    commands: list[dict[str, Any]]


@pytest.fixture(scope="module")
async def run(broker: EmbeddedBroker, redis_server: EmbeddedRedis, tmp_path_factory) -> Run:
    env = {
        "MG_LOG_FORMAT": "json",
        "MG_API_TOKEN": API_TOKEN,
        # Nothing listens there, one attempt: the alerts are dead-lettered within seconds.
        "MG_WEBHOOK_URL": f"http://127.0.0.1:{free_port()}/hook",
        "MG_SINK_MAX_ATTEMPTS": "1",
        "MG_SINK_TIMEOUT_S": "1",
    }
    worker = await start_worker(broker, redis_server.url, tmp_path_factory, env)
    try:
        await drive(worker, broker)
    finally:
        await worker.stop()  # the shutdown's lines are judged too
    s = worker.settings
    found = await read_topics(s, [s.topic_alerts, s.topic_dlq, s.topic_throttle])
    lines = worker.log.read_text(encoding="utf-8").splitlines()
    return Run(lines, found[s.topic_alerts], found[s.topic_dlq], found[s.topic_throttle])


async def drive(worker: Worker, broker: EmbeddedBroker) -> None:
    s = worker.settings
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=80)
    docs = mixed(quiet=2, prefix=f"{s.key_prefix}-", start=start)
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=10)
    await producer.start()
    try:
        for d in docs:
            await producer.send(s.topic_raw, key=d["identity"].encode(), value=orjson.dumps(d))
        for bad in (NOT_JSON, INVALID_EVENT):
            await producer.send(s.topic_raw, key=b"svc-quiet-0", value=bad)
        await producer.flush()
    finally:
        await producer.stop()
    await worker.wait_counted(len(docs))

    async def dead_lettered() -> bool:
        found = await read_topics(s, [s.topic_alerts_dlq])
        return bool(found[s.topic_alerts_dlq])

    await eventually(dead_lettered, "an alert on the alerts DLQ", log=worker.log)
    await worker.wait_ready()
    release = f"{worker.web}/api/throttles/{RUNAWAY}/release"
    async with aiohttp.ClientSession() as http:
        auth = {"Authorization": f"Bearer {API_TOKEN}", "X-Meterguard-Actor": "oncall"}
        async with http.post(release, headers=auth, json={"reason": "checked"}) as r:
            assert r.status == 200, await r.text()


def records(run: Run) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in run.lines if line.strip()]


def test_every_line_is_one_json_object_with_the_four_keys(run: Run):
    assert len(run.lines) > 20
    for line in run.lines:
        record = orjson.loads(line)  # raises on the first line that is not JSON
        assert isinstance(record, dict), line
        assert {"timestamp", "level", "logger", "message"} <= record.keys(), line
        assert datetime.fromisoformat(record["timestamp"]).tzinfo is not None


def test_faust_records_and_meterguards_are_both_json(run: Run):
    loggers = {r["logger"] for r in records(run)}
    assert any(name.startswith(("faust", "mode")) for name in loggers), loggers
    assert {"meterguard", "meterguard.delivery", "meterguard.web"} <= loggers


def test_the_alert_line_carries_identity_and_alert_id(run: Run):
    published = {a["alert_id"]: a for a in run.alerts}
    lines = [r for r in records(run) if r["message"].startswith("ALERT ")]
    assert len(lines) == len(published) > 0
    for line in lines:
        alert = published[line["alert_id"]]
        assert line["identity"] == alert["identity"] == RUNAWAY
        assert (line["detector"], line["severity"], line["status"]) == (
            alert["detector"],
            alert["severity"],
            alert["status"],
        )
        assert line["episode_id"] == alert["episode_id"]


def test_each_dead_letter_has_its_line_with_reason_and_offset(run: Run):
    lines = [r for r in records(run) if r["message"].startswith("dead letter to ")]
    assert sorted((r["reason"], r["offset"]) for r in lines) == sorted(
        (d["reason"], d["offset"]) for d in run.dead
    )
    assert {r["reason"] for r in lines} == {"invalid_json", "invalid_event"}
    assert all(r["topic"].endswith(".raw") and r["partition"] >= 0 for r in lines)


def test_delivery_and_release_lines_name_their_alert_and_identity(run: Run):
    published = {a["alert_id"] for a in run.alerts}
    undelivered = [r for r in records(run) if "dead-lettered for" in r["message"]]
    assert undelivered
    assert all(r["alert_id"] in published and r["identity"] == RUNAWAY for r in undelivered)
    assert all(r["destination"].endswith("/hook") and r["attempts"] == 1 for r in undelivered)
    (release,) = [r for r in records(run) if r["message"].startswith("AUDIT ")]
    assert (release["identity"], release["actor"], release["action"]) == (
        RUNAWAY,
        "oncall",
        "throttle.release",
    )
    throttles = {c["command_id"] for c in run.commands if c["action"] != "release"}
    assert release["alert_id"] in published and release["command_id"] in throttles


def test_the_token_is_in_no_line(run: Run):
    assert not [line for line in run.lines if API_TOKEN in line]
