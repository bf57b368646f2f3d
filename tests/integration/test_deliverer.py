"""Delivery loops (streams/delivery.Deliverer) on a real Redis with in-process HTTP sinks."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Sequence

import httpx
import pytest
import redis.asyncio as aioredis

from meterguard.models import DeadLetteredAlert
from meterguard.sinks.base import RetryPolicy
from meterguard.sinks.routing import AlertFilter, Destination
from meterguard.sinks.webhook import WebhookSink
from meterguard.streams.delivery.deliverer import Deliverer, Route
from meterguard.streams.delivery.outbox import Outbox
from tests.support.alerts import make_alert
from tests.support.polling import eventually

DEADLINE_S = 20.0


def route(url: str, handler, timeout_s: float = 30.0, **rule) -> Route:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    destination = Destination("webhook", url, None, AlertFilter.model_validate(rule))
    return Route(destination, WebhookSink(url, None, client, timeout_s), 0.0, 20)


@contextlib.asynccontextmanager
async def running(deliverer: Deliverer):
    task = asyncio.create_task(deliverer.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture
async def outbox(redis_url: str):
    client = aioredis.Redis.from_url(redis_url)
    yield Outbox(client, "t", lease_s=60)
    await client.aclose()


def no_dead_letters(letters: Sequence[DeadLetteredAlert]) -> Awaitable[None]:
    raise AssertionError(f"unexpected dead letters {letters}")


async def test_a_hanging_destination_does_not_delay_the_others(outbox: Outbox):
    release = asyncio.Event()

    async def hang(request: httpx.Request) -> httpx.Response:
        await release.wait()
        return httpx.Response(200)

    hung, fast = (
        route("https://hung.example/h", hang),
        route("https://fast.example/h", lambda r: httpx.Response(200)),
    )
    deliverer = Deliverer([hung, fast], outbox, RetryPolicy(), no_dead_letters)
    alert = make_alert()
    async with running(deliverer):
        await outbox.enqueue(deliverer.plan(alert))
        deliverer.wake({hung.key, fast.key})
        await eventually(
            lambda: outbox.is_done(fast.key, alert.alert_id),
            "the fast destination",
            timeout=DEADLINE_S,
            interval=0.05,
        )
        assert not await outbox.is_done(hung.key, alert.alert_id)
        release.set()
        await eventually(
            lambda: outbox.is_done(hung.key, alert.alert_id),
            "the hung destination",
            timeout=DEADLINE_S,
            interval=0.05,
        )


async def test_filters_decide_which_destinations_get_an_alert(outbox: Outbox):
    ok = lambda r: httpx.Response(200)  # noqa: E731
    everything = route("https://all.example/h", ok)
    critical_prod = route(
        "https://siem.example/h", ok, min_severity="critical", environments=["prod"]
    )
    deliverer = Deliverer([everything, critical_prod], outbox, RetryPolicy(), no_dead_letters)
    staging = make_alert(environment="staging")
    assert [key for _, key, _ in deliverer.plan(staging)] == [everything.key]
    assert len(deliverer.plan(make_alert())) == 2


async def test_dead_letters_are_sent_before_the_alert_leaves_the_outbox(outbox: Outbox):
    sent: list[tuple[DeadLetteredAlert, int]] = []
    gone = route("https://gone.example/hook?token=secret", lambda r: httpx.Response(410))

    async def send_dead(letters: Sequence[DeadLetteredAlert]) -> None:
        depth = await outbox.depth(gone.key)
        sent.extend((letter, depth) for letter in letters)

    deliverer = Deliverer([gone], outbox, RetryPolicy(), send_dead)
    alert = make_alert()
    await outbox.enqueue(deliverer.plan(alert))
    assert await deliverer.run_once(gone) == 1
    ((letter, depth_while_sending),) = sent
    assert depth_while_sending == 1 and await outbox.depth(gone.key) == 0
    assert letter.alert == alert and letter.reason == "HTTP 410" and letter.last_status == 410
    assert letter.destination == "https://gone.example/hook" and letter.attempts == 1
