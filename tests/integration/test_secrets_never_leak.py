"""Secrets never leak (issue 14, security): a real `meterguard worker` runs with a distinctive
value in every secret setting, sees traffic that raises alerts, input that dead-letters, two
failing alert destinations (their errors are logged and their alerts dead-lettered), refused
and accepted token-checked requests, a malformed header holding the token; then every place
a secret could surface is searched: the worker's log, every record (key, value, headers)
on every topic, every read route's body (dashboard JSON, /metrics, alerts, audit,
report...), and every key and value in Redis.

Secrets: MG_API_TOKEN (and a wrong token a client presented), MG_WEBHOOK_SECRET, the
credentials and query of MG_WEBHOOK_URL, MG_SLACK_BOT_TOKEN, MG_SLACK_WEBHOOK_URL's key
path, the password in MG_REDIS_URL. MG_KAFKA_SASL_PASSWORD cannot be set here: Tansu speaks
no SASL (tests/unit/test_kafka_security.py covers its repr and mapping).
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import httpx
import orjson
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from meterguard.streams.runtime.app import create_app
from meterguard.streams.tools.embedded import EmbeddedBroker, EmbeddedRedis, free_port
from tests.support.polling import eventually
from tests.support.traffic import mixed
from tests.support.worker_process import Worker, start_worker

MARK = uuid.uuid4().hex[:10]  # every secret carries it, so one search finds any of them
API_TOKEN = f"apitoken{MARK}A"
WRONG_TOKEN = f"wrongtoken{MARK}B"  # presented by a client: not to be echoed either
WEBHOOK_KEY = f"whkey{MARK}C".encode()
WEBHOOK_SECRET = "whsec_" + base64.b64encode(WEBHOOK_KEY).decode()
HOOK_PASSWORD = f"hookpw{MARK}D"
HOOK_QUERY = f"hookq{MARK}E"
SLACK_BOT_TOKEN = f"xoxb-{MARK}F"
SLACK_HOOK_KEY = f"slackhook{MARK}G"
REDIS_PASSWORD = f"redispw{MARK}H"
SECRETS = {
    "api token": API_TOKEN,
    "wrong token": WRONG_TOKEN,
    "webhook secret": WEBHOOK_SECRET.removeprefix("whsec_"),
    "webhook key": WEBHOOK_KEY.decode(),
    "webhook URL password": HOOK_PASSWORD,
    "webhook URL query": HOOK_QUERY,
    "Slack bot token": SLACK_BOT_TOKEN,
    "Slack webhook URL": SLACK_HOOK_KEY,
    "Redis password": REDIS_PASSWORD,
}
BAD_INPUT = b'{"event_id": "leak-1", "identity": "svc-quiet-0", "event_time": "yesterday"}'


@dataclass
class Run:
    worker: Worker
    redis_url: str


def with_password(url: str, password: str) -> str:
    """The session Redis URL with `default:<password>@`: Redis accepts any password for a
    user without one (`nopass`), so the worker connects and the URL holds a secret."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"default:{password}@{parts.netloc}"))


@pytest.fixture(scope="module")
async def run(broker: EmbeddedBroker, redis_server: EmbeddedRedis, tmp_path_factory):
    dead = free_port()  # nothing listens there: every delivery fails with a network error
    redis_url = with_password(redis_server.url, REDIS_PASSWORD)
    env = {
        "MG_API_TOKEN": API_TOKEN,
        "MG_WEBHOOK_URL": f"http://hook:{HOOK_PASSWORD}@127.0.0.1:{dead}/in?sig={HOOK_QUERY}",
        "MG_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "MG_SLACK_BOT_TOKEN": SLACK_BOT_TOKEN,
        "MG_SLACK_CHANNEL": "#sec-alerts",
        "MG_SLACK_API_URL": f"http://127.0.0.1:{dead}/api/",
        "MG_SLACK_WEBHOOK_URL": f"https://hooks.slack.invalid/services/T0/B0/{SLACK_HOOK_KEY}",
        # Two attempts, short waits: the failing destinations dead-letter within seconds.
        "MG_SINK_MAX_ATTEMPTS": "2",
        "MG_SINK_BACKOFF_BASE_S": "0.05",
        "MG_SINK_BACKOFF_MAX_S": "0.2",
        "MG_SINK_TIMEOUT_S": "1",
        "MG_SLACK_GROUP_SECONDS": "0",
    }
    worker = await start_worker(broker, redis_url, tmp_path_factory, env)
    try:
        await drive(worker, broker)
        yield Run(worker, redis_url)
    finally:
        await worker.stop()


async def drive(worker: Worker, broker: EmbeddedBroker) -> None:
    s = worker.settings
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=80)
    docs = mixed(quiet=2, prefix=f"{s.key_prefix}-", start=start)
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=10)
    await producer.start()
    try:
        for d in docs:
            await producer.send(s.topic_raw, key=d["identity"].encode(), value=orjson.dumps(d))
        # Bad input carrying a credential header, as a careless producer might send it.
        auth = [("authorization", f"Bearer {API_TOKEN}".encode())]
        await producer.send(s.topic_raw, key=b"svc-quiet-0", value=BAD_INPUT, headers=auth)
        await producer.flush()
    finally:
        await producer.stop()
    await worker.wait_ready()
    async with aiohttp.ClientSession() as http:
        events = f"{worker.web}/api/events"
        for token in (WRONG_TOKEN, API_TOKEN):  # refused, then accepted and dead-lettered
            headers = {"Authorization": f"Bearer {token}", "X-Api-Key": API_TOKEN}
            async with http.post(events, data=b'{"identity": "x"}', headers=headers) as r:
                assert r.status == (403 if token == WRONG_TOKEN else 202)
    # A malformed header holding the token: aiohttp's parser refuses it (400) and its
    # error quotes the line; the worker's log must not (streams/web/log_hygiene.py).
    async with httpx.AsyncClient() as client:
        bad = {"Authorization": f"Bearer {API_TOKEN}\x7f".encode("latin-1")}
        r = await client.post(f"{worker.web}/api/events", content=b"{}", headers=bad)
        assert r.status_code == 400
    await worker.wait_counted(len(docs))

    async def letters() -> bool:
        found = await records(worker, [s.topic_alerts_dlq, s.topic_dlq])
        destinations = {orjson.loads(v)["destination"] for _, v, _ in found[s.topic_alerts_dlq]}
        return len(destinations) == 2 and len(found[s.topic_dlq]) >= 2

    await eventually(letters, "alerts dead-lettered by both destinations", log=worker.log)
    async with aiohttp.ClientSession() as http:
        release = f"{worker.web}/api/throttles/agent-runaway/release"
        for token in (WRONG_TOKEN, API_TOKEN):  # an auth failure, then an audited release
            async with http.post(release, headers={"Authorization": f"Bearer {token}"}) as r:
                assert r.status == (403 if token == WRONG_TOKEN else 200), await r.text()

    async def audited() -> bool:
        return bool((await records(worker, [s.topic_audit]))[s.topic_audit])

    await eventually(audited, "the release on the audit topic", log=worker.log)


Record = tuple[bytes, bytes, list[tuple[str, bytes]]]


async def records(worker: Worker, topics: list[str]) -> dict[str, list[Record]]:
    """Every record of these topics so far: key, value and headers, as bytes."""
    consumer = AIOKafkaConsumer(
        *topics, bootstrap_servers=worker.settings.bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    found: dict[str, list[Record]] = {t: [] for t in topics}
    try:
        while batches := await consumer.getmany(timeout_ms=1500):
            for tp, got in batches.items():
                found[tp.topic] += [(r.key or b"", r.value or b"", list(r.headers)) for r in got]
    finally:
        await consumer.stop()
    return found


def leaks(where: str, data: bytes) -> list[str]:
    """`where: <secret name>` for each secret found in `data` (also base64- or URL-coded)."""
    found = []
    for name, secret in SECRETS.items():
        if any(f in data for f in (secret.encode(), base64.b64encode(secret.encode()))):
            found.append(f"{where}: {name}")
    if not found and MARK.encode() in data:  # a piece of a secret, or one coded otherwise
        at = data.index(MARK.encode())
        found.append(f"{where}: a secret's mark in {data[max(0, at - 60) : at + 30]!r}")
    return found


async def test_the_worker_log_holds_no_secret(run: Run) -> None:
    log = run.worker.log.read_bytes()
    assert log.count(b"dead-lettered for") >= 2  # both destinations' failures were logged
    assert leaks("worker log", log) == []


async def test_no_record_on_any_topic_holds_a_secret(run: Run) -> None:
    s = run.worker.settings
    topics = [s.topic_raw, s.topic_events, s.topic_dlq, s.topic_alerts, s.topic_throttle]
    topics += [s.topic_alerts_dlq, s.topic_audit]
    found = await records(run.worker, topics)
    for topic in (s.topic_alerts, s.topic_alerts_dlq, s.topic_dlq, s.topic_audit):
        assert found[topic], f"nothing on {topic}: the scenario did not run"
    bad: list[str] = []
    for topic, recs in found.items():
        if topic == s.topic_raw:
            # The raw topic holds what producers sent, the careless header included:
            # meterguard reads that record; what it wrote there itself (ingest) is checked.
            recs = [r for r in recs if r[1] != BAD_INPUT]
        for key, value, headers in recs:
            data = key + value + b"".join(n.encode() + v for n, v in headers)
            bad += leaks(topic, data)
    assert sorted(set(bad)) == []
    letters = [orjson.loads(v) for _, v, _ in found[s.topic_dlq]]
    (careless,) = [x for x in letters if x["raw"] == BAD_INPUT.decode()]
    assert careless["headers"] == {"authorization": "[redacted]"}  # named, never its value


async def test_no_read_route_answers_with_a_secret(run: Run) -> None:
    app = create_app(run.worker.settings)  # the worker's own routes, from its router
    app.web.init_server()
    paths = sorted(
        {
            r.resource.canonical
            for r in app.web.web_app.router.routes()
            if r.method == "GET" and "{" not in r.resource.canonical
        }
        - {"/api/throttles/stream"}  # endless; its commands are the throttle topic's
    )
    assert {"/metrics", "/api/dashboard", "/api/alerts", "/api/audit"} <= set(paths)
    bad: list[str] = []
    async with aiohttp.ClientSession() as http:
        for path in paths:
            async with http.get(f"{run.worker.web}{path}") as r:
                assert r.status < 500, path
                bad += leaks(path, await r.read())
        async with http.get(f"{run.worker.web}/api/identities/agent-runaway") as r:
            bad += leaks("/api/identities/agent-runaway", await r.read())
    assert bad == []


async def test_no_redis_key_or_value_holds_a_secret(run: Run) -> None:
    client = aioredis.Redis.from_url(run.redis_url)
    bad: list[str] = []
    seen = 0
    try:
        async for key in client.scan_iter(count=1000):
            seen += 1
            bad += leaks(f"redis key {key!r}", key)
            bad += leaks(f"redis {key!r}", await _value(client, key))
    finally:
        await client.aclose()
    assert seen > 0
    assert bad == []


async def _value(client: aioredis.Redis, key: bytes) -> bytes:
    kind = (await client.type(key)).decode()
    if kind == "string":
        return await client.get(key) or b""
    if kind == "hash":
        return b"".join(k + v for k, v in (await client.hgetall(key)).items())
    if kind == "list":
        return b"".join(await client.lrange(key, 0, -1))
    if kind == "set":
        return b"".join(await client.smembers(key))
    if kind == "zset":
        return b"".join(m for m, _ in await client.zrange(key, 0, -1, withscores=True))
    if kind == "stream":
        entries = await client.xrange(key)
        return b"".join(k + v for _, fields in entries for k, v in fields.items())
    return b""
