"""Delivery loops (streams/delivery.Deliverer) on a real Redis with in-process HTTP sinks."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Sequence

import httpx
import orjson
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
    assert [item.dest for item in deliverer.plan(staging)] == [everything.key]
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


async def test_a_destination_back_from_an_outage_gets_each_identitys_alerts_in_order(
    outbox: Outbox,
):
    """Down for its first 60 requests, then up: every alert once, each identity in order.
    Before head-of-line delivery each alert had its own jittered retries, so a newer alert
    of an identity could land before an older one."""
    received: list[tuple[str, int]] = []  # (alert_id, status)

    def handler(request: httpx.Request) -> httpx.Response:
        status = 503 if len(received) < 60 else 200
        received.append((orjson.loads(request.content)["data"]["alert_id"], status))
        return httpx.Response(status)

    siem = route("https://siem.example/h", handler)
    retry = RetryPolicy(base_s=0.01, max_s=0.05, max_attempts=1000)
    deliverer = Deliverer([siem], outbox, retry, no_dead_letters)
    alerts = [
        make_alert(f"svc-{i}", alert_id=f"svc-{i}-{k}", minute=k)
        for k in range(4)
        for i in range(5)
    ]
    async with running(deliverer):
        for alert in alerts:  # one at a time, as the alerts topic hands them over
            await deliverer.accept(deliverer.plan(alert))
            deliverer.wake({siem.key})
        await eventually(
            lambda: len([a for a, status in received if status == 200]) == len(alerts),
            "every alert delivered",
            timeout=DEADLINE_S,
            interval=0.05,
        )
    delivered = [a for a, status in received if status == 200]
    assert sorted(delivered) == sorted(a.alert_id for a in alerts)  # each exactly once
    for i in range(5):
        mine = [a for a in delivered if a.startswith(f"svc-{i}-")]
        assert mine == [f"svc-{i}-{k}" for k in range(4)]
    assert sum(status == 503 for _, status in received) == 60
    assert await outbox.depth(siem.key) == 0


async def test_alerts_a_full_outbox_refuses_go_to_the_dlq_as_outbox_full(redis_url: str):
    client = aioredis.Redis.from_url(redis_url)
    outbox = Outbox(client, "t", lease_s=60, max_pending=2)
    letters: list[DeadLetteredAlert] = []

    async def send_dead(sent: Sequence[DeadLetteredAlert]) -> None:
        letters.extend(sent)

    down = route("https://down.example/h", lambda r: httpx.Response(503))
    deliverer = Deliverer([down], outbox, RetryPolicy(), send_dead)
    alerts = [make_alert(f"svc-{i}", alert_id=f"full-{i}") for i in range(5)]
    try:
        new = await deliverer.accept([item for a in alerts for item in deliverer.plan(a)])
        assert new == 2 and await outbox.depth(down.key) == 2
        assert [letter.alert.alert_id for letter in letters] == ["full-2", "full-3", "full-4"]
        for letter in letters:
            assert letter.reason == "outbox_full" and letter.attempts == 0
            assert letter.last_status is None and letter.destination == "https://down.example/h"
        # Dead-lettered, so done: a Kafka redelivery neither queues nor dead-letters it again.
        assert await deliverer.accept(deliverer.plan(alerts[3])) == 0 and len(letters) == 3
        assert await outbox.is_done(down.key, "full-3")
    finally:
        await client.aclose()
