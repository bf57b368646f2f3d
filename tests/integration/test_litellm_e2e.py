"""LiteLLM end to end: real calls -> Kafka -> a real worker -> drift alert, block -> 429.

The callback is the shipped example (deploy/litellm/meterguard_callbacks.py), loaded from
deploy/litellm/config.kafka.yaml the way the proxy loads it, configured by the environment
(MG_KAFKA_BROKER, MG_TOPIC_RAW, MG_THROTTLE_URL) to publish to the worker's raw topic and
follow its throttle feed. Real `litellm.acompletion` calls (`mock_response`: no network)
carry the metadata the proxy sets for two keys: one whose alias the policy lists as
offboarded, one without an alias (named by LiteLLM's hash of it). A `meterguard worker`
process decodes them, counts them and runs its detectors; its throttle feed reaches the
callback's pre-call hook.

Event time is LiteLLM's clock, as in production: the drift detector judges the offboarded
key's calls when their minute closes, i.e. when a later call of that key lands in the next
minute (MG_ALLOWED_LATENESS_S=0). The agent keeps calling through the hook, as a blocked
agent would, until the hook refuses it: up to a minute of wall time after its first call,
depending on where in the minute the test starts. Timings print with `pytest -s`.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from litellm.caching.dual_cache import DualCache
from litellm.proxy.types_utils.utils import get_instance_fn
from litellm.types.proxy.auth.user_api_key_auth import UserAPIKeyAuth

from meterguard.gateway.litellm import MeterguardCallback, MeterguardRefusal
from meterguard.streams.tools.embedded import EmbeddedBroker, EmbeddedRedis
from tests.support.litellm_calls import MODEL, Capture, complete, fail, key, registered
from tests.support.polling import DEADLINE_S, eventually
from tests.support.worker_process import Worker, read_topics, start_worker

CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "litellm" / "config.kafka.yaml"
OFFBOARDED = "svc-offboarded-export"  # a key alias the policy lists as offboarded
ACTIVE_KEY = "sk-meterguard-e2e-active"
ACTIVE = hashlib.sha256(ACTIVE_KEY.encode()).hexdigest()  # no alias: named by its hash
POLICY = f"offboarded_identities: [{OFFBOARDED}]\n"
# The minute of the offboarded key's first call closes with its first call in the next
# minute (at most 60 s later), then the worker's batch, commit and SSE push.
BLOCK_WITHIN_S = 60 + 30
AGENT_POLL_S = 0.25  # the blocked agent's pace: one call through the gateway per poll


@dataclass
class Run:
    worker: Worker
    callback: MeterguardCallback
    capture: Capture
    api: httpx.AsyncClient
    offboarded: UserAPIKeyAuth
    active: UserAPIKeyAuth
    started: float  # monotonic time of the first call
    calls: Counter[str] = field(default_factory=Counter)  # identity -> calls metered

    async def call(
        self, auth: UserAPIKeyAuth, identity: str, *, hook: bool = True, failing: bool = False
    ) -> None:
        """What the proxy does per request: the pre-call hook, then the call. Returns once
        the call's record is handed to Kafka: LiteLLM runs callbacks concurrently, and calls
        of one key must reach the worker in event-time order (a call that lands after a
        later one's minute has closed would be counted as late, not new)."""
        if hook:
            await self.callback.async_pre_call_hook(
                user_api_key_dict=auth,
                cache=DualCache(),
                data={"model": MODEL, "messages": []},
                call_type="acompletion",
            )
        await (fail(auth) if failing else complete(auth))
        self.calls[identity] += 1
        assert self.callback.publisher is not None
        stats, n = self.callback.publisher.stats, sum(self.calls.values())
        await eventually(lambda: stats.sent >= n, "the record handed to Kafka", interval=0.01)

    async def identity(self, identity: str) -> dict[str, Any] | None:
        response = await self.api.get(f"/api/identities/{identity}")
        return response.json() if response.status_code == 200 else None

    async def all_counted(self) -> None:
        """Every call published, delivered and counted by the worker, per identity."""
        await eventually(
            lambda: len(self.capture.payloads) == sum(self.calls.values()),
            "LiteLLM to log every call",
            timeout=20,
        )
        await self.callback.flush(timeout=20)
        assert self.callback.publisher is not None
        stats, n = self.callback.publisher.stats, sum(self.calls.values())
        await eventually(lambda: stats.delivered == n, f"{n} records acknowledged", timeout=5)
        assert stats.failed == 0

        async def counted() -> bool:
            for identity, n in self.calls.items():
                detail = await self.identity(identity)
                if detail is None or detail["events"]["new"] < n:
                    return False
            return True

        await eventually(counted, f"the worker to count {dict(self.calls)}", log=self.worker.log)


def load_callback(env: dict[str, str]) -> MeterguardCallback:
    """The proxy's way: `litellm_settings.callbacks` entries imported from the config's folder
    (litellm/proxy/types_utils/utils.py get_instance_fn)."""
    (entry,) = yaml.safe_load(CONFIG.read_text())["litellm_settings"]["callbacks"]
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        callback = get_instance_fn(entry, config_file_path=str(CONFIG))
    assert isinstance(callback, MeterguardCallback)
    return callback


@pytest.fixture(scope="module")
async def run(
    broker: EmbeddedBroker, redis_server: EmbeddedRedis, tmp_path_factory
) -> AsyncIterator[Run]:
    policy = tmp_path_factory.mktemp("policy") / "meterguard.yaml"
    policy.write_text(POLICY)
    extra = {"MG_POLICY_FILE": str(policy), "MG_ALLOWED_LATENESS_S": "0"}
    worker = await start_worker(broker, redis_server.url, tmp_path_factory, extra)
    callback = load_callback(
        {
            "MG_KAFKA_BROKER": worker.env["MG_KAFKA_BROKER"],
            "MG_TOPIC_RAW": worker.settings.topic_raw,
            "MG_THROTTLE_URL": worker.web,
        }
    )
    capture = Capture()
    api = httpx.AsyncClient(base_url=worker.web, timeout=10)
    run = Run(
        worker,
        callback,
        capture,
        api,
        offboarded=key("sk-meterguard-e2e-offboarded", alias=OFFBOARDED, team_alias="Exports"),
        active=key(ACTIVE_KEY, team_alias="Support"),
        started=time.monotonic(),
    )
    try:
        with registered(callback, capture):
            # Straight away, while the worker starts (its consumer group reads from the
            # earliest offset): the offboarded key's first minute starts now. No hook yet:
            # these are the calls behind it; the hook is the next test's.
            for failing in (False, False, False, True):
                await run.call(run.offboarded, OFFBOARDED, hook=False, failing=failing)
            for _ in range(2):
                await run.call(run.active, ACTIVE, hook=False)

            async def ready() -> bool:
                try:
                    return (await api.get("/readyz")).status_code == 200
                except httpx.TransportError:
                    return False

            await eventually(ready, "the worker's /readyz", log=worker.log)
            await callback.start()  # the producer is started; now the throttle feed
            assert callback.throttle is not None
            await callback.throttle.wait_ready(timeout=DEADLINE_S)
            yield run
    finally:
        await callback.aclose()
        await api.aclose()
        await worker.stop()


async def test_every_call_arrives_as_one_event_of_its_keys_identity(run: Run):
    await run.all_counted()
    counted_at = time.monotonic() - run.started
    settings = run.worker.settings
    topics = await read_topics(settings, [settings.topic_events, settings.topic_dlq])
    assert topics[settings.topic_dlq] == []
    events = {e["event_id"]: e for e in topics[settings.topic_events]}
    payloads = {p["id"]: p for p in run.capture.payloads}
    assert set(events) == set(payloads)  # one event per call, nothing else
    for event_id, payload in payloads.items():
        event = events[event_id]
        metadata = payload["metadata"]
        assert event["identity"] == (metadata["user_api_key_alias"] or ACTIVE)
        assert event["credential_id"] == metadata["user_api_key_hash"]
        assert event["team"] == metadata["user_api_key_team_alias"]
        assert (event["input_tokens"], event["output_tokens"]) == (
            payload["prompt_tokens"],
            payload["completion_tokens"],
        )
        assert event["status"] == ("ok" if payload["status"] == "success" else "error")
    errors = [e for e in events.values() if e["status"] == "error"]
    assert [(e["identity"], e["error_type"]) for e in errors] == [
        (OFFBOARDED, "InternalServerError")
    ]
    for identity, calls, failed in ((OFFBOARDED, 4, 1), (ACTIVE, 2, 0)):
        detail = await run.identity(identity)
        assert detail is not None
        assert detail["events"] == {"new": calls, "dup": 0, "late": 0}
        assert sum(m["calls"] for m in detail["minutes"]) == calls
        assert sum(m["errors"] for m in detail["minutes"]) == failed
    print(f"\nall 6 calls counted by the worker {counted_at:.1f} s after the first call")


async def test_the_offboarded_key_is_blocked_and_the_hook_answers_429(run: Run):
    refused: list[MeterguardRefusal] = []

    async def blocked() -> bool:
        try:
            await run.call(run.offboarded, OFFBOARDED)
        except MeterguardRefusal as refusal:
            refused.append(refusal)
            return True
        return False

    await eventually(
        blocked,
        "the pre-call hook to refuse the offboarded key",
        timeout=BLOCK_WITHIN_S,
        interval=AGENT_POLL_S,
        log=run.worker.log,
    )
    blocked_at = time.monotonic() - run.started
    (refusal,) = refused
    assert refusal.status_code == 429
    assert 1 <= int(refusal.headers["Retry-After"]) <= 300

    command = (await run.api.get(f"/api/throttles/{OFFBOARDED}")).json()
    assert command["action"] == "block"
    drift: dict[str, dict[str, Any]] = {}  # alert_id -> alert (a redelivery repeats an id)

    async def alerted() -> bool:
        # The command is pushed before the batch's alerts are committed: milliseconds apart.
        for a in (await run.api.get("/api/alerts", params={"limit": 50})).json():
            if a["identity"] == OFFBOARDED and a["detector"] == "drift":
                drift[a["alert_id"]] = a
        return bool(drift)

    await eventually(alerted, "the drift alert in GET /api/alerts", log=run.worker.log)
    (alert,) = drift.values()
    assert (alert["status"], alert["severity"]) == ("firing", "critical")
    assert alert["evidence"]["kind"] == "offboarded"
    assert alert["team"] == "Exports"
    assert command["alert_id"] == alert["alert_id"]
    assert alert["throttle_command_id"] == command["command_id"]
    assert refusal.detail == {
        "error": "throttled",
        "identity": OFFBOARDED,
        "reason": command["reason"],
        "command_id": command["command_id"],
    }

    # The other key is served, by the hook and by the model.
    await run.call(run.active, ACTIVE)
    assert (await run.api.get(f"/api/throttles/{ACTIVE}")).status_code == 404
    # Every call the hook let through was metered, the refused one was never made.
    await run.all_counted()
    for identity in (OFFBOARDED, ACTIVE):
        detail = await run.identity(identity)
        assert detail is not None and detail["events"]["new"] == run.calls[identity]
    print(
        f"\noffboarded key refused {blocked_at:.1f} s after its first call, "
        f"after {run.calls[OFFBOARDED]} calls; {command['reason']!r}"
    )
