"""OCSF Detection Findings from a real worker (issue 15, item 7): a webhook destination with
`format: ocsf` in the policy's `routing:`, another in meterguard's format, and
MG_TOPIC_ALERTS_OCSF set. A runaway identity fires and resolves a spike episode; every alert
on meterguard.alerts must arrive as exactly the finding `sinks/ocsf.py` maps it to, on the
OCSF webhook (signed) and on the OCSF topic (keyed by identity), each valid against the OCSF
schema (tests/support/ocsf_schema.py), while the other destination still gets the envelope.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest
from aiohttp import web
from aiokafka import AIOKafkaConsumer

from meterguard.models import Alert
from meterguard.sinks.ocsf import detection_finding
from meterguard.sinks.webhook_verify import VerificationError, WebhookVerifier
from meterguard.streams.settings import Settings
from meterguard.streams.tools.embedded import EmbeddedBroker, EmbeddedRedis, free_port
from tests.support.ocsf_schema import problems
from tests.support.polling import eventually
from tests.support.traffic import series
from tests.support.worker_process import produce, start_worker

pytestmark = pytest.mark.integration

SECRET = "whsec_" + base64.b64encode(b"meterguard-ocsf-test-secret-0001").decode()
# 85 minutes of one runaway at 6 calls/min with 30x for minutes 65-70 (after the detectors'
# 60-minute warm-up), then 14 calm minutes: more than the 5 a spike episode needs to resolve.
MINUTES, BURST = 85, (65, 70, 180)


@dataclass
class Receiver:
    """Two webhook paths on one local port; each request verified (signature, timestamp)."""

    port: int = field(default_factory=free_port)
    got: dict[str, list[tuple[str, bytes, str]]] = field(
        default_factory=lambda: {"/ocsf": [], "/plain": []}
    )  # path -> (webhook-id, body, content-type)
    unverified: int = 0
    runner: web.AppRunner | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            delivery = WebhookVerifier(SECRET).verify(body, request.headers)
        except VerificationError:
            self.unverified += 1
            return web.Response(status=401)
        self.got[request.path].append(
            (delivery.webhook_id, delivery.body, request.headers["content-type"])
        )
        return web.Response(text="ok")

    async def start(self) -> None:
        app = web.Application()
        for path in self.got:
            app.router.add_post(path, self._handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()


@dataclass
class Run:
    settings: Settings
    receiver: Receiver
    alerts: list[dict]  # meterguard.alerts
    findings: list[tuple[bytes, dict]]  # the OCSF topic: (key, value)


async def read(settings: Settings, topic: str) -> list[tuple[bytes, dict]]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=settings.bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    found: list[tuple[bytes, dict]] = []
    try:
        while batches := await consumer.getmany(timeout_ms=1000):
            for records in batches.values():
                found += [(r.key, orjson.loads(r.value)) for r in records]
    finally:
        await consumer.stop()
    return found


def policy_file(folder: Path, receiver: Receiver) -> Path:
    path = folder / "policy.yaml"
    routes = [
        {"url": receiver.url("/ocsf"), "secret_env": "OCSF_TEST_SECRET", "format": "ocsf"},
        {"url": receiver.url("/plain"), "secret_env": "OCSF_TEST_SECRET"},
    ]
    path.write_bytes(orjson.dumps({"routing": {"webhooks": routes}}))  # JSON is YAML
    return path


@pytest.fixture(scope="module")
async def run(broker: EmbeddedBroker, redis_server: EmbeddedRedis, tmp_path_factory):
    receiver = Receiver()
    await receiver.start()
    env = {
        "MG_POLICY_FILE": str(policy_file(tmp_path_factory.mktemp("policy"), receiver)),
        "OCSF_TEST_SECRET": SECRET,
        "MG_TOPIC_ALERTS_OCSF": f"ocsf-{time.time_ns()}.findings",
    }
    worker = await start_worker(broker, redis_server.url, tmp_path_factory, env)
    settings = worker.settings
    prefix = f"{settings.key_prefix}-"
    docs = series("agent-runaway", MINUTES, 6, burst=BURST, prefix=prefix)
    docs += series("svc-quiet", MINUTES, 6, prefix=prefix)
    docs.sort(key=lambda e: (e["event_time"], e["event_id"]))
    state = Run(settings, receiver, [], [])
    try:
        await produce(broker.bootstrap, settings.topic_raw, docs)
        await worker.wait_counted(len(docs))

        async def all_out() -> bool:
            state.alerts = [doc for _, doc in await read(settings, settings.topic_alerts)]
            assert settings.topic_alerts_ocsf is not None
            state.findings = await read(settings, settings.topic_alerts_ocsf)
            ids = {a["alert_id"] for a in state.alerts}
            return (
                "resolved" in {a["status"] for a in state.alerts}
                and {f["metadata"]["uid"] for _, f in state.findings} == ids
                and all(
                    {h[0] for h in hits} == {f"msg_{i}" for i in ids}
                    for hits in receiver.got.values()
                )
            )

        await eventually(
            all_out,
            "every alert as a finding on the topic and both webhooks",
            log=worker.log,
            interval=0.5,
        )
        yield state
    finally:
        await worker.stop()
        if receiver.runner is not None:
            await receiver.runner.cleanup()


def test_the_topic_holds_each_alerts_finding_once_keyed_by_identity_and_valid(run: Run):
    expected = {a["alert_id"]: detection_finding(Alert.model_validate(a)) for a in run.alerts}
    assert len(run.findings) == len(run.alerts) == len(expected)  # once each: no redelivery here
    for key, finding in run.findings:
        assert finding == expected[finding["metadata"]["uid"]]
        assert key == finding["resources"][0]["uid"].encode()
        assert problems(finding) == []
    activities = sorted(f["activity_name"] for _, f in run.findings)
    assert "Create" in activities and "Close" in activities
    print(
        f"OCSF FIGURES alerts {len(run.alerts)} findings {len(run.findings)} "
        f"activities {activities} webhook {len(run.receiver.got['/ocsf'])}"
    )


def test_the_ocsf_webhook_gets_the_signed_bare_finding_of_every_alert(run: Run):
    expected = {f"msg_{a['alert_id']}": a for a in run.alerts}
    hits = run.receiver.got["/ocsf"]
    assert run.receiver.unverified == 0
    assert {webhook_id for webhook_id, _, _ in hits} == set(expected)
    for webhook_id, body, content_type in hits:
        finding = orjson.loads(body)
        assert finding == detection_finding(Alert.model_validate(expected[webhook_id]))
        assert content_type == "application/json"
        assert problems(finding) == []


def test_the_other_destination_keeps_meterguards_envelope(run: Run):
    by_id = {f"msg_{a['alert_id']}": a for a in run.alerts}
    hits = run.receiver.got["/plain"]
    assert {webhook_id for webhook_id, _, _ in hits} == set(by_id)
    for webhook_id, body, _ in hits:
        envelope = orjson.loads(body)
        assert envelope["type"] == f"meterguard.alert.{by_id[webhook_id]['status']}"
        assert envelope["data"] == by_id[webhook_id]
