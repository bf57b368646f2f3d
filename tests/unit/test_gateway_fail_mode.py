"""Fail open / fail closed (meterguard/gateway/fail_mode.py): the settings, and what the client,
the ASGI middleware and the LiteLLM hook answer once the feed has been down too long.

The feed is tests/unit/test_gateway_client.py's fake worker behind `httpx.MockTransport`; the
clock is the test's, so "down for over the bound" is a clock step, not a wait. The real feed
going down (a worker whose Redis stops) is tests/integration/test_gateway.py's.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from meterguard.gateway import ThrottleClient
from meterguard.gateway.fail_mode import (
    DEFAULT_STALE_AFTER_S,
    FAIL_MODE_ENV,
    STALE_AFTER_ENV,
    FailMode,
    fail_mode,
    stale_after_s,
)
from meterguard.gateway.litellm import MeterguardCallback, MeterguardRefusal
from tests.support.polling import eventually
from tests.unit.test_gateway_client import (
    POLL_S,
    T0,
    FakeWorker,
    command,
    gateway,
    sse_command,
    sse_ready,
)
from tests.unit.test_litellm_callbacks import RAW_KEY, hook, key

STALE_S = 30.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def step(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def test_fail_mode_is_the_argument_else_the_environment_else_open():
    assert fail_mode(None, {}) is FailMode.OPEN
    assert fail_mode(None, {FAIL_MODE_ENV: " Closed "}) is FailMode.CLOSED
    assert fail_mode("open", {FAIL_MODE_ENV: "closed"}) is FailMode.OPEN
    with pytest.raises(ValueError, match=FAIL_MODE_ENV):
        fail_mode(None, {FAIL_MODE_ENV: "ajar"})
    assert stale_after_s(None, {}) == DEFAULT_STALE_AFTER_S
    assert stale_after_s(None, {STALE_AFTER_ENV: "12.5"}) == 12.5
    assert stale_after_s(5, {STALE_AFTER_ENV: "12.5"}) == 5
    for bad in ("0", "-3", "soon", "nan"):
        with pytest.raises(ValueError, match=STALE_AFTER_ENV):
            stale_after_s(None, {STALE_AFTER_ENV: bad})


def test_the_client_reads_its_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(FAIL_MODE_ENV, "closed")
    monkeypatch.setenv(STALE_AFTER_ENV, "7")
    client = ThrottleClient("http://mg")
    assert (client.fail_mode, client.stale_after_s) == (FailMode.CLOSED, 7.0)
    assert ThrottleClient("http://mg", fail_mode="open").fail_mode is FailMode.OPEN


async def feed_then_outage(mode: str, clock: Clock) -> tuple[FakeWorker, ThrottleClient]:
    """A client synced on a snapshot holding a block of "runaway", whose feed then ends and
    stays down (every reconnect gets 503)."""
    worker = FakeWorker()
    held = worker.connection(sse_command(command("runaway", 1, action="block")), sse_ready(1))
    client = worker.client(clock=clock, fail_mode=mode, stale_after_s=STALE_S)
    await client.start()
    await client.wait_ready(timeout=3)
    clock.step(10 * STALE_S)  # a live feed is fresh however long it is quiet
    assert not client.is_stale()
    held.put_nowait(None)  # the worker's stream ends: Redis went away
    await eventually(lambda: worker.requests >= 2, "a reconnect", timeout=3, interval=POLL_S)
    return worker, client


@pytest.mark.parametrize("mode", ["open", "closed"])
async def test_within_the_bound_both_modes_decide_from_what_they_hold(mode: str):
    clock = Clock()
    _, client = await feed_then_outage(mode, clock)
    try:
        clock.step(STALE_S)  # down exactly the bound: not over it
        assert not client.is_stale()
        assert client.decide("runaway").status == 429
        assert client.decide("svc-quiet").status == 200
    finally:
        await client.aclose()


async def test_fail_open_past_the_bound_keeps_held_commands_and_lets_the_rest_through():
    clock = Clock()
    _, client = await feed_then_outage("open", clock)
    try:
        clock.step(STALE_S + 1)
        assert client.is_stale()
        assert client.decide("runaway").status == 429  # its block still runs to expiry
        assert client.decide("svc-quiet").status == 200
    finally:
        await client.aclose()


async def test_fail_closed_past_the_bound_refuses_all_with_503_until_the_feed_is_back():
    clock = Clock()
    worker, client = await feed_then_outage("closed", clock)
    try:
        clock.step(STALE_S + 1)
        assert client.is_stale()
        for identity in ("runaway", "svc-quiet"):
            decision = client.decide(identity)
            assert (decision.allowed, decision.status, decision.command) == (False, 503, None)
            assert decision.retry_after_s == 30  # the reconnect backoff's cap: tried by then
        async with gateway(client) as http:
            refused = await http.post("/v1/chat", headers={"x-meterguard-identity": "svc-quiet"})
            anonymous = await http.post("/v1/chat")  # no identity: never metered, passes
        assert refused.status_code == 503 and refused.headers["retry-after"] == "30"
        assert refused.json() == {
            "error": "throttle_view_unavailable",
            "identity": "svc-quiet",
            "reason": "meterguard's throttle feed is down; this gateway fails closed",
            "command_id": None,
        }
        assert anonymous.status_code == 200
        # The feed is back: a new snapshot makes the view fresh at once.
        worker.connection(sse_ready(0))
        await eventually(lambda: client.connections == 2, "the resync", timeout=3, interval=POLL_S)
        assert not client.is_stale()
        assert client.decide("svc-quiet").status == 200
        assert client.decide("runaway").status == 200  # released meanwhile: not in the snapshot
    finally:
        await client.aclose()


async def test_a_fail_closed_client_that_never_synced_refuses_once_the_bound_has_passed():
    clock = Clock()
    client = FakeWorker().client(clock=clock, fail_mode="closed", stale_after_s=STALE_S)
    async with client:
        assert client.decide("svc-quiet").status == 200  # just started: within the bound
        clock.step(STALE_S + 1)
        assert client.decide("svc-quiet").status == 503
    assert FakeWorker().client(clock=clock).decide("svc-quiet").status == 200  # open: passes


class Stale(ThrottleClient):
    """Follows no feed; its view has been stale for ever."""

    def __init__(self, mode: str) -> None:
        super().__init__("http://unused.invalid", fail_mode=mode, stale_after_s=1)
        self._down_since = T0

    async def start(self) -> None:
        return None


class Broken(Stale):
    def decide(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("a bug in the gateway client")


async def test_the_litellm_hook_follows_the_fail_mode():
    auth = key(RAW_KEY, alias="billing-agent")
    with pytest.raises(MeterguardRefusal) as refused:
        await hook(MeterguardCallback(throttle=Stale("closed")), auth)
    assert refused.value.status_code == 503
    assert refused.value.detail["error"] == "throttle_view_unavailable"
    assert refused.value.headers == {"Retry-After": "30"}  # the default backoff cap
    assert await hook(MeterguardCallback(throttle=Stale("open")), auth) is None
    # A hook that cannot decide at all (a bug) follows the mode too.
    with pytest.raises(MeterguardRefusal) as failed:
        await hook(MeterguardCallback(throttle=Broken("closed")), auth)
    assert failed.value.status_code == 503
    assert await hook(MeterguardCallback(throttle=Broken("open")), auth) is None
