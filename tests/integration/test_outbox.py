"""The delivery outbox (streams/delivery/outbox.py) on a real Redis, with a hand-driven clock."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from meterguard.sinks.base import Delivered, Failed, Retry, RetryPolicy
from meterguard.streams.delivery.outbox import Item, Outbox
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
    assert (await outbox.enqueue([(alert, DEST, 0), (alert, DEST, 0)])).new == 1
    assert (await outbox.enqueue([(alert, DEST, 0)])).new == 0
    assert await outbox.depth(DEST) == 1


async def test_each_destination_has_its_own_queue(outbox: Outbox):
    alert = make_alert()
    assert (await outbox.enqueue([(alert, DEST, 0), (alert, "slack-1", 0)])).new == 2
    (item,) = await outbox.claim("slack-1", 10)
    assert item.alert == alert and item.attempts == 1


async def test_a_delivered_alert_is_never_enqueued_again(outbox: Outbox):
    alert = make_alert()
    await outbox.enqueue([(alert, DEST, 0)])
    claimed = await outbox.claim(DEST, 10)
    settled = await outbox.settle(DEST, claimed, [Delivered(200)], POLICY)
    assert settled.delivered == claimed
    assert await outbox.depth(DEST) == 0 and await outbox.is_done(DEST, alert.alert_id)
    assert (await outbox.enqueue([(alert, DEST, 0)])).new == 0  # a Kafka redelivery


async def test_concurrent_claims_never_hand_out_the_same_alert(outbox: Outbox, client, clock):
    alerts = [make_alert(f"svc-{i}", alert_id=f"a{i}") for i in range(50)]
    await outbox.enqueue([(alert, DEST, 0) for alert in alerts])
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
    retried, refused = make_alert("a", alert_id="retried"), make_alert("b", alert_id="refused")
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
    assert (await outbox.enqueue([(retried, DEST, 0), (refused, DEST, 0)])).new == 0


def test_all_keys_of_a_destination_share_one_cluster_hash_tag(outbox: Outbox):
    assert all(f"{{{DEST}}}" in key for key in outbox.keys(DEST))


async def claimable(outbox: Outbox, dest: str = DEST) -> list[str]:
    """Ids a claim hands out now (the claim is then given back: its leases are dropped)."""
    claimed = await outbox.claim(dest, 100)
    await outbox.reschedule(
        dest, claimed[0].token if claimed else "", [(c.alert.alert_id, 0) for c in claimed]
    )
    return [c.alert.alert_id for c in claimed]


def of(identity: str, n: int) -> list:
    return [make_alert(identity, alert_id=f"{identity}-{k}", minute=k) for k in range(n)]


async def test_only_the_oldest_pending_alert_of_an_identity_is_claimable(outbox: Outbox):
    a, b = of("a", 3), of("b", 2)
    await outbox.enqueue([(x, DEST, 0) for x in (a[0], b[0], a[1], a[2], b[1])])
    assert sorted(await claimable(outbox)) == ["a-0", "b-0"]  # identities do not wait
    assert await outbox.depth(DEST) == 5


async def test_an_identitys_next_alert_waits_out_the_retries_of_the_one_before(
    outbox: Outbox, clock: Clock
):
    first, second = of("a", 2)
    await outbox.enqueue([(first, DEST, 0), (second, DEST, 0)])
    for _ in range(POLICY.max_attempts - 1):  # the destination is down
        (item,) = await outbox.claim(DEST, 10)
        assert item.alert == first
        await outbox.settle(DEST, [item], [Retry("HTTP 503", None, 503)], POLICY)
        clock.now += 60  # past any backoff: only `first` is ever due
    (item,) = await outbox.claim(DEST, 10)
    settled = await outbox.settle(DEST, [item], [Delivered(200)], POLICY)
    assert settled.delivered == [item]
    (after,) = await outbox.claim(DEST, 10)  # due at once, first attempt
    assert after.alert == second and after.attempts == 1


async def test_a_dead_lettered_head_lets_the_identitys_later_alerts_continue_in_order(
    outbox: Outbox, clock: Clock
):
    alerts = of("a", 3)
    await outbox.enqueue([(x, DEST, 0) for x in alerts])
    (head,) = await outbox.claim(DEST, 10)
    settled = await outbox.settle(DEST, [head], [Failed("HTTP 410", 410)], POLICY)
    assert [c.alert for c, _ in settled.dead] == [alerts[0]]
    assert await claimable(outbox) == []  # not before its dead letter is out
    await outbox.finish(DEST, ["a-0"])
    assert await claimable(outbox) == ["a-1"]
    (item,) = await outbox.claim(DEST, 10)
    await outbox.settle(DEST, [item], [Delivered(200)], POLICY)
    assert await claimable(outbox) == ["a-2"]


async def test_a_redelivered_alert_keeps_its_place_in_the_identitys_order(outbox: Outbox):
    alerts = of("a", 3)
    await outbox.enqueue([(x, DEST, 0) for x in alerts])
    assert (await outbox.enqueue([(alerts[1], DEST, 0), (alerts[0], DEST, 0)])).new == 0
    for expected in ("a-0", "a-1", "a-2"):
        (item,) = await outbox.claim(DEST, 10)
        assert item.alert.alert_id == expected
        await outbox.settle(DEST, [item], [Delivered(200)], POLICY)
    assert await outbox.depth(DEST) == 0
    # Everything of the identity is gone once delivered: a new alert is due at once.
    assert (await outbox.enqueue([(make_alert("a", alert_id="a-3"), DEST, 0)])).new == 1
    assert await claimable(outbox) == ["a-3"]


async def test_unordered_items_are_all_claimable_at_once(outbox: Outbox):
    await outbox.enqueue([Item(x, "slack-1", 0, False) for x in of("a", 3)])
    assert sorted(await claimable(outbox, "slack-1")) == ["a-0", "a-1", "a-2"]


async def test_a_full_outbox_refuses_the_newest_and_never_holds_more(client, clock: Clock):
    outbox = Outbox(client, "t", lease_s=30, clock=clock, max_pending=3)
    alerts = of("a", 2) + of("b", 3)
    result = await outbox.enqueue([(x, DEST, 0) for x in alerts])
    assert result.new == 3 and [i.alert.alert_id for i in result.refused] == ["b-1", "b-2"]
    assert await outbox.depth(DEST) == 3
    # The queued keep their order; a refused one dead-lettered is done (never queued again).
    await outbox.finish(DEST, ["b-1", "b-2"])
    assert (await outbox.enqueue([(alerts[3], DEST, 0)])).new == 0
    assert sorted(await claimable(outbox)) == ["a-0", "b-0"]
    (item,) = [c for c in await outbox.claim(DEST, 10) if c.alert.alert_id == "a-0"]
    await outbox.settle(DEST, [item], [Delivered(200)], POLICY)
    assert await outbox.depth(DEST) == 2
    assert (await outbox.enqueue([(make_alert("c", alert_id="c-0"), DEST, 0)])).new == 1
    assert (await outbox.enqueue([(make_alert("c", alert_id="c-1"), DEST, 0)])).refused


async def test_the_order_bookkeeping_is_gone_once_an_identity_is_drained(outbox: Outbox, client):
    await outbox.enqueue([(x, DEST, 0) for x in of("a", 3) + of("b", 1)])
    for _ in range(3):
        claimed = await outbox.claim(DEST, 10)
        await outbox.settle(DEST, claimed, [Delivered(200)] * len(claimed), POLICY)
    keys = outbox.keys(DEST)
    assert [await client.exists(k) for k in keys] == [0, 0, 0, 0, 0, 1, 0, 0, 0]
