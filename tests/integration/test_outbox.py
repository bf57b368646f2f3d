"""The delivery outbox (streams/delivery/outbox.py) on a real Redis, with a hand-driven clock."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from meterguard.sinks.base import Delivered, Failed, Retry, RetryPolicy
from meterguard.streams.delivery.outbox import Outbox
from tests.support.alerts import make_alert

DEST = "webhook-abc123"
POLICY = RetryPolicy(base_s=1.0, max_s=10.0, max_attempts=3, rng=lambda: 1.0)


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def client(redis_url: str):
    redis = aioredis.Redis.from_url(redis_url)
    yield redis
    await redis.aclose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def outbox(client, clock) -> Outbox:
    return Outbox(client, "t", lease_s=30, done_horizon_s=3600, clock=clock)


async def test_an_alert_enqueued_twice_is_queued_once(outbox: Outbox):
    alert = make_alert()
    assert await outbox.enqueue([(alert, DEST, 0), (alert, DEST, 0)]) == 1
    assert await outbox.enqueue([(alert, DEST, 0)]) == 0
    assert await outbox.depth(DEST) == 1


async def test_each_destination_has_its_own_queue(outbox: Outbox):
    alert = make_alert()
    assert await outbox.enqueue([(alert, DEST, 0), (alert, "slack-1", 0)]) == 2
    (item,) = await outbox.claim("slack-1", 10)
    assert item.alert == alert and item.attempts == 1


async def test_a_delivered_alert_is_never_enqueued_again(outbox: Outbox):
    alert = make_alert()
    await outbox.enqueue([(alert, DEST, 0)])
    claimed = await outbox.claim(DEST, 10)
    settled = await outbox.settle(DEST, claimed, [Delivered(200)], POLICY)
    assert settled.delivered == claimed
    assert await outbox.depth(DEST) == 0 and await outbox.is_done(DEST, alert.alert_id)
    assert await outbox.enqueue([(alert, DEST, 0)]) == 0  # a Kafka redelivery


async def test_concurrent_claims_never_hand_out_the_same_alert(outbox: Outbox, client, clock):
    await outbox.enqueue([(make_alert(alert_id=f"a{i}"), DEST, 0) for i in range(50)])
    others = [Outbox(client, "t", lease_s=30, clock=clock) for _ in range(4)]
    batches = await asyncio.gather(*(o.claim(DEST, 20) for o in [outbox, *others]))
    ids = [c.alert.alert_id for batch in batches for c in batch]
    assert len(ids) == len(set(ids)) == 50


async def test_held_items_are_not_due_before_their_hold(outbox: Outbox, clock: Clock):
    await outbox.enqueue([(make_alert(), DEST, 5.0)])
    assert await outbox.claim(DEST, 10) == []
    assert await outbox.next_due_in(DEST) == 5.0
    clock.now += 5
    assert len(await outbox.claim(DEST, 10)) == 1


async def test_a_crashed_workers_claim_comes_back_after_the_lease(outbox: Outbox, clock: Clock):
    await outbox.enqueue([(make_alert(), DEST, 0)])
    (first,) = await outbox.claim(DEST, 10)  # ... and the worker dies here
    clock.now += 29
    assert await outbox.claim(DEST, 10) == []
    clock.now += 2
    (again,) = await outbox.claim(DEST, 10)
    assert again.attempts == 2 and again.token != first.token
    # The stale worker, back from the dead, cannot move the item it no longer holds.
    assert await outbox.reschedule(DEST, first.token, [(first.alert.alert_id, 100)]) == 0


async def test_a_retry_is_due_again_after_the_backoff(outbox: Outbox, clock: Clock):
    await outbox.enqueue([(make_alert(), DEST, 0)])
    claimed = await outbox.claim(DEST, 10)
    settled = await outbox.settle(DEST, claimed, [Retry("HTTP 503", None, 503)], POLICY)
    assert settled.rescheduled == 1 and settled.dead == []
    assert await outbox.claim(DEST, 10) == []
    clock.now += 1.0  # attempt 1 failed: backoff ceiling 1 s, rng 1.0
    (item,) = await outbox.claim(DEST, 10)
    assert item.attempts == 2


async def test_retry_after_delays_the_next_attempt(outbox: Outbox, clock: Clock):
    await outbox.enqueue([(make_alert(), DEST, 0)])
    claimed = await outbox.claim(DEST, 10)
    await outbox.settle(DEST, claimed, [Retry("HTTP 429", 20.0, 429)], POLICY)
    clock.now += 19
    assert await outbox.claim(DEST, 10) == []
    clock.now += 1
    assert len(await outbox.claim(DEST, 10)) == 1


async def test_last_attempt_and_permanent_failure_are_returned_for_dead_lettering(
    outbox: Outbox, clock: Clock
):
    retried, refused = make_alert(alert_id="retried"), make_alert(alert_id="refused")
    await outbox.enqueue([(retried, DEST, 0), (refused, DEST, 0)])
    dead: dict[str, tuple[int, str]] = {}
    for _ in range(POLICY.max_attempts):
        claimed = await outbox.claim(DEST, 10)
        outcomes = [
            Failed("HTTP 404", 404) if c.alert == refused else Retry("HTTP 503", None, 503)
            for c in claimed
        ]
        settled = await outbox.settle(DEST, claimed, outcomes, POLICY)
        dead |= {c.alert.alert_id: (c.attempts, step.reason) for c, step in settled.dead}
        if settled.dead:  # stays queued until the dead letter is safely produced
            assert await outbox.depth(DEST) == len(claimed)
            await outbox.finish(DEST, [c.alert.alert_id for c, _ in settled.dead])
        clock.now += 60
    assert dead == {"refused": (1, "HTTP 404"), "retried": (3, "HTTP 503 after 3 attempts")}
    assert await outbox.depth(DEST) == 0
    assert await outbox.enqueue([(retried, DEST, 0), (refused, DEST, 0)]) == 0


def test_all_keys_of_a_destination_share_one_cluster_hash_tag(outbox: Outbox):
    assert all(f"{{{DEST}}}" in key for key in outbox.keys(DEST))
