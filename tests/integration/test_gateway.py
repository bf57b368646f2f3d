"""The gateway side end to end: a real worker's SSE feed enforced by the example gateway.

A `meterguard worker` process on the real broker and Redis sees mixed traffic with a runaway
agent (recent event times, so its throttle is live now). A `ThrottleClient` follows the
worker's `/api/throttles/stream`; the example gateway app (deploy/examples/gateway_proxy.py)
runs in-process behind `httpx.ASGITransport`. Latencies are printed (`pytest -s`).

The fail modes (meterguard/gateway/fail_mode.py) meet the real feed going down: a worker of
their own on a private redis-server (tests/support/redis_process.py), which the test stops:
the worker's SSE streams end and no snapshot can be read until Redis is back.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from deploy.examples.gateway_proxy import create_app
from meterguard.gateway import ThrottleClient
from meterguard.streams.tools.embedded import EmbeddedBroker, EmbeddedRedis
from tests.support.polling import DEADLINE_S, eventually
from tests.support.redis_process import PersistentRedis
from tests.support.traffic import mixed
from tests.support.worker_process import produce, start_worker

WITHIN_S = 5.0  # "within seconds": from the feed's change to the gateway's answer
POLL_S = 0.01  # fine-grained: the time a condition first holds is a measured latency
API_TOKEN = uuid.uuid4().hex
RUNAWAY = "agent-runaway"
COMPLETIONS = "/v1/chat/completions"
NEW_EVENTS = 'meterguard_events_total{status="new"}'
STALE_S = 3.0  # the fail modes' bound here: short, the test waits it out


@dataclass
class Gateway:
    web: str  # the worker's HTTP base URL
    api: httpx.AsyncClient  # to the worker
    gateway: httpx.AsyncClient  # to the example gateway app, in-process
    client: ThrottleClient
    log: Path
    events: int

    async def call(self, identity: str) -> httpx.Response:
        return await _call(self.gateway, identity)


async def _call(gateway: httpx.AsyncClient, identity: str) -> httpx.Response:
    headers = {"x-meterguard-identity": identity}
    return await gateway.post(COMPLETIONS, headers=headers, json={"messages": []})


async def _burst(gateway: httpx.AsyncClient, identity: str) -> int:
    """A runaway's burst: the first refusal's status, else 200 (25 calls all served)."""
    for _ in range(25):
        status = (await _call(gateway, identity)).status_code
        if status != 200:
            return status
    return 200


@pytest.fixture(scope="module")
async def gw(
    broker: EmbeddedBroker, redis_server: EmbeddedRedis, tmp_path_factory
) -> AsyncIterator[Gateway]:
    worker = await start_worker(
        broker, redis_server.url, tmp_path_factory, {"MG_API_TOKEN": API_TOKEN}
    )
    # Connects while the worker is still starting: refused connections exercise the backoff.
    client = ThrottleClient(worker.web, backoff_base_s=0.2, backoff_cap_s=2.0)
    api = httpx.AsyncClient(base_url=worker.web, timeout=10)
    gateway = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(client)), base_url="http://gateway"
    )
    try:
        await client.start()
        await client.wait_ready(timeout=DEADLINE_S)
        # Recent event times: the runaway's burst ends a minute ago, its throttle is live.
        start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=76)
        docs = mixed(quiet=4, prefix=f"{worker.settings.key_prefix}-", start=start)
        await produce(broker.bootstrap, worker.settings.topic_raw, docs)
        yield Gateway(worker.web, api, gateway, client, worker.log, len(docs))
    finally:
        await client.aclose()
        await gateway.aclose()
        await api.aclose()
        await worker.stop()


async def test_runaway_gets_429_within_seconds_of_its_command_and_quiet_ones_get_200(gw):
    seen_at: float | None = None

    async def listed() -> bool:
        nonlocal seen_at
        if seen_at is None:
            response = await gw.api.get("/api/throttles")
            if RUNAWAY in {c["identity"] for c in response.json()}:
                seen_at = time.monotonic()
        return seen_at is not None

    async def refused() -> bool:
        # A runaway sends as fast as it can: a burst per poll, well over its minute's limit.
        for _ in range(25):
            response = await gw.call(RUNAWAY)
            if response.status_code == 429:
                assert response.json()["error"] == "throttled"
                assert int(response.headers["retry-after"]) >= 1
                return True
            assert response.status_code == 200
        await listed()
        return False

    refused_at = await eventually(refused, "the runaway's first 429", interval=POLL_S, log=gw.log)
    await eventually(
        listed, "the runaway's command in GET /api/throttles", interval=POLL_S, log=gw.log
    )
    assert seen_at is not None
    latency = refused_at - seen_at
    command = gw.client.get(RUNAWAY)
    assert command is not None and command.action == "throttle"
    print(
        f"\nfirst 429 {latency * 1000:+.0f} ms after the command appeared in GET /api/throttles "
        f"(negative: the SSE push beat the list poll); limits {command.limits}"
    )
    assert latency < WITHIN_S
    for i in range(4):
        assert (await gw.call(f"svc-quiet-{i}")).status_code == 200


async def test_operator_release_lets_the_runaway_through_within_seconds(gw):
    async def throttled() -> bool:
        return gw.client.get(RUNAWAY) is not None

    async def all_counted() -> bool:
        text = (await gw.api.get("/metrics")).text
        new = [line for line in text.splitlines() if line.startswith(NEW_EVENTS)]
        return bool(new) and float(new[0].rsplit(" ", 1)[1]) >= gw.events

    await eventually(throttled, "the runaway's command at the gateway", interval=POLL_S, log=gw.log)
    # Every event processed first, so no late minute renews the throttle after the release.
    await eventually(all_counted, "every event to be counted", interval=POLL_S, log=gw.log)
    url = f"/api/throttles/{RUNAWAY}/release"
    assert (await gw.api.post(url)).status_code == 401
    wrong = await gw.api.post(url, headers={"Authorization": "Bearer not-the-token"})
    assert wrong.status_code == 403
    assert gw.client.get(RUNAWAY) is not None  # refused releases changed nothing

    response = await gw.api.post(url, headers={"Authorization": f"Bearer {API_TOKEN}"})
    released_at = time.monotonic()
    assert response.status_code == 200, response.text
    assert response.json()["action"] == "release"

    async def served() -> bool:
        return (await gw.call(RUNAWAY)).status_code == 200 and gw.client.get(RUNAWAY) is None

    what = "the runaway's first 200 after the release"
    latency = await eventually(served, what, interval=POLL_S, log=gw.log) - released_at
    print(f"\nfirst 200 {latency * 1000:.0f} ms after the release was acknowledged")
    assert latency < WITHIN_S
    assert (await gw.api.get(f"/api/throttles/{RUNAWAY}")).status_code == 404


async def test_fail_open_and_fail_closed_gateways_while_the_workers_redis_is_down(
    broker: EmbeddedBroker, tmp_path: Path, tmp_path_factory
):
    with PersistentRedis(tmp_path / "redis") as redis_server:
        worker = await start_worker(broker, redis_server.url, tmp_path_factory)
        clients = {
            mode: ThrottleClient(
                worker.web, backoff_base_s=0.2, backoff_cap_s=1.0, fail_mode=mode,
                stale_after_s=STALE_S,
            )
            for mode in ("open", "closed")
        }  # fmt: skip
        gateways = {
            mode: httpx.AsyncClient(
                transport=httpx.ASGITransport(app=create_app(c)), base_url="http://gateway"
            )
            for mode, c in clients.items()
        }
        opened, closed = gateways["open"], gateways["closed"]
        try:
            for client in clients.values():
                await client.start()
                await client.wait_ready(timeout=DEADLINE_S)
            start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=76)
            docs = mixed(quiet=2, prefix=f"{worker.settings.key_prefix}-", start=start)
            await produce(broker.bootstrap, worker.settings.topic_raw, docs)

            def throttled() -> bool:
                return all(c.get(RUNAWAY) is not None for c in clients.values())

            await eventually(throttled, "the runaway's command at both gateways", log=worker.log)
            for gateway in gateways.values():
                assert await _burst(gateway, RUNAWAY) == 429
                assert (await _call(gateway, "svc-quiet-0")).status_code == 200

            stopped_at = time.monotonic()  # before: Redis drops its clients as it stops
            await asyncio.to_thread(redis_server.shut_down)
            stale_at = await eventually(
                lambda: all(c.is_stale() for c in clients.values()),
                "both gateways' views to go stale", log=worker.log,
            )  # fmt: skip
            assert stale_at - stopped_at > STALE_S  # the bound is honoured
            # Fail open: the held command still bites, everyone else is served.
            assert await _burst(opened, RUNAWAY) == 429
            assert (await _call(opened, "svc-quiet-0")).status_code == 200
            # Fail closed: everyone identified is refused, with a Retry-After.
            for identity in (RUNAWAY, "svc-quiet-0", "never-seen"):
                refused = await _call(closed, identity)
                assert refused.status_code == 503, refused.text
                assert refused.json()["error"] == "throttle_view_unavailable"
                assert refused.headers["retry-after"] == "1"  # the backoff cap, 1 s here
            print(f"\nstale {stale_at - stopped_at:.1f} s after Redis stopped (bound {STALE_S} s)")

            await asyncio.to_thread(redis_server.start)  # its AOF holds the throttle key
            back_at = time.monotonic()

            async def served_again() -> bool:
                return (await _call(closed, "svc-quiet-0")).status_code == 200

            fresh_at = await eventually(served_again, "the closed gateway to serve again")
            print(f"fail-closed gateway serving {fresh_at - back_at:.1f} s after Redis was back")
            assert clients["closed"].get(RUNAWAY) is not None  # resynced from the snapshot
            assert await _burst(closed, RUNAWAY) == 429
        finally:
            for client in clients.values():
                await client.aclose()
            for gateway in gateways.values():
                await gateway.aclose()
            await worker.stop()
