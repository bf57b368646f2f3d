"""Alert delivery end to end: a real worker, Tansu, Redis, and local HTTP receivers.

One scenario per module (a worker costs a consumer-group join): three runaway identities
(one named like a Slack injection) fire alerts; the worker delivers them to a steady SIEM
webhook, a flaky one (503 and 429 + Retry-After for its first requests), one that stays
down, and a Slack receiver. Each test asserts one behaviour of that run.
"""

from __future__ import annotations

import asyncio
import base64
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiokafka import AIOKafkaConsumer
from standardwebhooks.webhooks import Webhook

from meterguard.sinks.routing import public_url
from meterguard.streams.settings import Settings
from meterguard.streams.tools.embedded import EmbeddedBroker, EmbeddedRedis, free_port
from tests.support.alerts import HOSTILE
from tests.support.polling import eventually
from tests.support.traffic import mixed, series
from tests.support.worker_process import produce, start_worker

SECRET = "whsec_" + base64.b64encode(b"meterguard-delivery-test-secret!").decode()
RUNAWAYS = ("agent-runaway", "agent-runaway-2", HOSTILE)
FLAKY_FAILURES = [(503, {}), (429, {"Retry-After": "1"}), (503, {}), (429, {"Retry-After": "1"})]
MAX_ATTEMPTS = 3


@dataclass
class Hit:
    at: float  # wall clock at receipt, comparable with Kafka record timestamps
    body: bytes
    headers: dict[str, str]
    status: int
    answered_at: float = 0.0


class Receiver:
    """An HTTP endpoint on a free port; `reply(n)` answers its n-th request (0-based)."""

    def __init__(self, path: str, reply: Callable[[int], tuple[int, dict[str, str]]]) -> None:
        self.path = path
        self.reply = reply
        self.hits: list[Hit] = []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}{path}"
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        hit = Hit(time.time(), await request.read(), dict(request.headers), 0)
        hit.status, headers = self.reply(len(self.hits))
        self.hits.append(hit)
        hit.answered_at = time.time()
        return web.Response(status=hit.status, headers=headers, text="ok")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post(self.path, self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def alert_ids(self, status: int = 200) -> list[str]:
        return [orjson.loads(h.body)["data"]["alert_id"] for h in self.hits if h.status == status]


@dataclass
class Collected:
    """Records seen on the alerts and alerts-DLQ topics, with their Kafka timestamps (ms)."""

    alerts: list[tuple[dict, int]] = field(default_factory=list)
    dead: list[dict] = field(default_factory=list)


async def collect(settings: Settings, into: Collected, started: asyncio.Event) -> None:
    consumer = AIOKafkaConsumer(
        settings.topic_alerts,
        settings.topic_alerts_dlq,
        bootstrap_servers=settings.bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
    )
    await consumer.start()
    started.set()
    try:
        while True:
            for tp, records in (await consumer.getmany(timeout_ms=200)).items():
                for r in records:
                    if tp.topic == settings.topic_alerts:
                        into.alerts.append((orjson.loads(r.value), r.timestamp))
                    else:
                        into.dead.append(orjson.loads(r.value))
    finally:
        await consumer.stop()


@dataclass
class Run:
    settings: Settings
    steady: Receiver
    flaky: Receiver
    down: Receiver
    slack: Receiver
    topic: Collected
    web: str

    @property
    def alert_ids(self) -> set[str]:
        return {a["alert_id"] for a, _ in self.topic.alerts}


def traffic(tag: str, start: datetime) -> list[dict]:
    docs = mixed(quiet=3, prefix=f"{tag}-", start=start)
    for name in RUNAWAYS[1:]:
        docs += series(name, 75, 6, start=start, burst=(65, 75, 180), prefix=f"{tag}-")
    return sorted(docs, key=lambda e: (e["event_time"], e["event_id"]))


def delivery_env(r: dict[str, Receiver]) -> dict[str, str]:
    return {
        "MG_WEBHOOK_URL": ",".join(x.url for x in (r["steady"], r["flaky"], r["down"])),
        "MG_WEBHOOK_SECRET": SECRET,
        "MG_SLACK_WEBHOOK_URL": r["slack"].url,
        "MG_SINK_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
        "MG_SINK_BACKOFF_BASE_S": "0.2",
        "MG_SINK_BACKOFF_MAX_S": "1",
        "MG_SINK_TIMEOUT_S": "2",
        "MG_SLACK_GROUP_SECONDS": "1",
    }


@pytest.fixture(scope="module")
async def run(broker: EmbeddedBroker, redis_server: EmbeddedRedis, tmp_path_factory):
    receivers = {
        "steady": Receiver("/siem/steady", lambda n: (200, {})),
        "flaky": Receiver(
            "/siem/flaky",
            lambda n: FLAKY_FAILURES[n] if n < len(FLAKY_FAILURES) else (200, {}),
        ),
        "down": Receiver("/siem/down", lambda n: (503, {})),
        "slack": Receiver("/services/T0/B0/slacksecret", lambda n: (200, {})),
    }
    for receiver in receivers.values():
        await receiver.start()
    worker = await start_worker(broker, redis_server.url, tmp_path_factory, delivery_env(receivers))
    settings = worker.settings
    topic, listening = Collected(), asyncio.Event()
    collector = asyncio.create_task(collect(settings, topic, listening))  # reads from earliest
    await listening.wait()
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=80)
    docs = traffic(settings.key_prefix, start)
    state = Run(settings, topic=topic, web=worker.web, **receivers)
    try:
        await produce(broker.bootstrap, settings.topic_raw, docs)
        await worker.wait_counted(len(docs))
        await eventually(
            lambda: all_settled(state), "every alert delivered or dead-lettered", log=worker.log
        )
        yield state
    finally:
        collector.cancel()
        await worker.stop()
        for receiver in receivers.values():
            await receiver.stop()


def all_settled(run: Run) -> bool:
    firing = {a["identity"] for a, _ in run.topic.alerts if a["status"] == "firing"}
    if not {f"{r}" for r in RUNAWAYS} <= firing:
        return False
    ids = run.alert_ids
    dead = {d["alert"]["alert_id"] for d in run.topic.dead}
    slack_text = b"".join(h.body for h in run.slack.hits).decode()
    return (
        ids <= set(run.steady.alert_ids())
        and ids <= set(run.flaky.alert_ids())
        and ids <= dead
        and all(orjson.dumps(r).decode()[1:-1] in slack_text for r in RUNAWAYS)
    )


def test_every_webhook_request_verifies_with_the_receivers_secret(run: Run):
    hits = run.steady.hits + run.flaky.hits + run.down.hits
    assert hits
    for hit in hits:
        payload = Webhook(SECRET).verify(hit.body, hit.headers)
        assert hit.headers["webhook-id"] == f"msg_{payload['data']['alert_id']}"


def test_a_recovering_destination_gets_every_alert_exactly_once(run: Run):
    assert [h.status for h in run.flaky.hits[: len(FLAKY_FAILURES)]] == [503, 429, 503, 429]
    delivered = run.flaky.alert_ids()
    assert sorted(delivered) == sorted(run.alert_ids)  # each once, none missing
    assert sorted(run.steady.alert_ids()) == sorted(run.alert_ids)


def test_retry_after_of_a_429_is_honoured_before_the_next_attempt(run: Run):
    for i, hit in enumerate(run.flaky.hits):
        if hit.status != 429:
            continue
        alert_id = orjson.loads(hit.body)["data"]["alert_id"]
        later = [
            h.at
            for h in run.flaky.hits[i + 1 :]
            if orjson.loads(h.body)["data"]["alert_id"] == alert_id
        ]
        assert later and later[0] - hit.answered_at >= 0.9  # Retry-After: 1 (whole seconds)


def test_a_destination_that_stays_down_dead_letters_after_the_last_attempt(run: Run):
    down = public_url(run.down.url)
    letters = {d["alert"]["alert_id"]: d for d in run.topic.dead if d["destination"] == down}
    assert set(letters) == run.alert_ids
    for letter in letters.values():
        assert letter["reason"] == f"HTTP 503 after {MAX_ATTEMPTS} attempts"
        assert letter["attempts"] == MAX_ATTEMPTS and letter["last_status"] == 503
        assert letter["dead_lettered_at"]
    per_alert = [orjson.loads(h.body)["data"]["alert_id"] for h in run.down.hits]
    assert all(per_alert.count(a) == MAX_ATTEMPTS for a in run.alert_ids)
    assert {d["destination"] for d in run.topic.dead} == {down}  # nobody else dead-lettered


def test_slack_messages_show_the_hostile_identity_only_as_inert_text(run: Run):
    assert run.slack.hits
    for hit in run.slack.hits:
        message = orjson.loads(hit.body)
        assert "<" not in message["text"] and ">" not in message["text"]
        for block in message["blocks"]:
            for node in [block.get("text"), *block.get("fields", []), *block.get("elements", [])]:
                assert node is None or node.get("type") in ("plain_text", "button")
    hostile = [orjson.loads(h.body) for h in run.slack.hits if HOSTILE in h.body.decode()]
    assert hostile and all("&lt;!channel&gt;" in m["text"] for m in hostile)


def test_report_delivery_latency_from_alert_record_to_receipt(run: Run):
    """Not an assertion on timing: prints figures for the issue notes."""
    produced = {a["alert_id"]: ts / 1000 for a, ts in run.topic.alerts}

    def first_receipt(receiver: Receiver, status: int | None) -> list[float]:
        seen: dict[str, float] = {}
        for hit in receiver.hits:
            alert_id = orjson.loads(hit.body)["data"]["alert_id"]
            if (status is None or hit.status == status) and alert_id not in seen:
                seen[alert_id] = hit.at - produced[alert_id]
        return list(seen.values())

    rows = {
        "steady webhook (2xx)": first_receipt(run.steady, 200),
        "flaky webhook, first attempt": first_receipt(run.flaky, None),
        "flaky webhook, 2xx after retries": first_receipt(run.flaky, 200),
        "down webhook, first attempt": first_receipt(run.down, None),
    }
    print(f"\ndelivery latency, alert record timestamp -> receipt ({len(produced)} alerts):")
    for name, values in rows.items():
        print(
            f"  {name:34} min {min(values):.3f}s  median {statistics.median(values):.3f}s"
            f"  max {max(values):.3f}s"
        )
    assert all(rows.values())


async def metric_samples(run: Run) -> dict[str, float]:
    async with aiohttp.ClientSession() as session, session.get(f"{run.web}/metrics") as response:
        text = await response.text()
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("meterguard_sink_")
    }


async def test_worker_metrics_count_deliveries_retries_and_dead_letters(run: Run):
    samples = await metric_samples(run)
    n = len(run.alert_ids)
    assert samples['meterguard_sink_deliveries_total{outcome="delivered",sink="webhook"}'] == 2 * n
    assert samples['meterguard_sink_deliveries_total{outcome="retry",sink="webhook"}'] >= 4
    assert samples['meterguard_sink_dead_letters_total{sink="webhook"}'] == n
    assert samples['meterguard_sink_delivery_seconds_count{sink="webhook"}'] == 2 * n
    assert samples['meterguard_sink_delivery_seconds_count{sink="slack"}'] >= 1
    depths = [v for k, v in samples.items() if k.startswith("meterguard_sink_outbox_depth")]
    assert len(depths) == 4 and sum(depths) == 0
    seconds = samples['meterguard_sink_delivery_seconds_sum{sink="webhook"}']
    within = {
        le: samples[f'meterguard_sink_delivery_seconds_bucket{{le="{le}",sink="webhook"}}']
        for le in ("0.05", "0.1", "0.25", "0.5")
    }
    print(
        f"\noutbox enqueue -> 2xx, webhooks incl. retried ({2 * n}): mean "
        f"{seconds / (2 * n):.3f}s; within "
        + ", ".join(f"{le}s: {count:.0f}" for le, count in within.items())
    )
