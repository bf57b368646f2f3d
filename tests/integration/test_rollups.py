"""Team, business-unit and environment roll-ups on a real Redis: exact, and exactly once.

Random traffic with duplicates, redeliveries and late events goes through the real pipeline;
every roll-up must equal the sum of the identity windows and late totals of its members, as
recomputed here from the unique events. A crash between ingest and applying the roll-ups is
simulated by calling the ingest script alone: its deltas wait, and are applied once.
"""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aioredis

from meterguard.models import MeteringEvent
from meterguard.streams.policy.config import PolicyConfig
from meterguard.streams.policy.registry import Ownership, Registry, attribute
from meterguard.streams.runtime.pipeline import Pipeline
from meterguard.streams.store import Store, StoreConfig, build_store
from meterguard.streams.store.rollups import pack_groups, totals

pytestmark = pytest.mark.integration
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
T0 = NOW - timedelta(hours=3)
REGISTRY = Registry(
    identities={
        "agent-a": Ownership(team="payments", business_unit="retail"),
        "agent-b": Ownership(team="payments", business_unit="retail", environment="prod"),
        "agent-c": Ownership(team="search", business_unit="platform"),
        # The registry wins: agent-d's events say team "rogue".
        "agent-d": Ownership(team="search"),
    },
    defaults=Ownership(environment="prod"),
)


@pytest.fixture
async def store(redis_url: str):
    client = aioredis.Redis.from_url(redis_url)
    yield build_store(client, StoreConfig(prefix="r", allowed_lateness_s=30))
    await client.aclose()


def traffic(seed: int) -> list[MeteringEvent]:
    """Five identities over two hours, mostly in order, some late, some repeated."""
    rng = random.Random(seed)
    events: list[MeteringEvent] = []
    for n in range(1500):
        identity = rng.choice(["agent-a", "agent-b", "agent-c", "agent-d", "stray-key"])
        at = T0 + timedelta(seconds=n * 5 + rng.uniform(0, 4))
        if rng.random() < 0.05:
            at -= timedelta(minutes=rng.uniform(2, 30))  # late: its minute is already final
        events.append(
            MeteringEvent(
                event_id=f"e{n}",
                identity=identity,
                event_time=at,
                team="rogue" if identity == "agent-d" else None,
                environment="staging" if identity == "agent-c" else None,
                input_tokens=rng.randint(0, 900),
                output_tokens=rng.randint(0, 300),
                cached_tokens=rng.randint(0, 100),
                cost_usd=rng.choice(["0", "0.0004", "0.012"]),
                model=rng.choice(["gpt-4o-mini", "claude-haiku", None]),
                status="error" if rng.random() < 0.1 else "ok",
            )
        )
    redelivered = rng.sample(events, 200)  # the same ids again, later in the stream
    return events + redelivered


def expected(events: list[MeteringEvent]) -> dict[tuple[str, str], list[int]]:
    """(dimension, value) -> [calls, in, out, cached, cost_nano, errors], first id wins."""
    seen: set[tuple[str, str]] = set()
    out: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0] * 6)
    for e in events:
        if (e.identity, e.event_id) in seen:
            continue
        seen.add((e.identity, e.event_id))
        owner = attribute(e, REGISTRY)
        row = [1, e.input_tokens, e.output_tokens, e.cached_tokens, e.cost_nano_usd]
        row.append(int(e.status == "error"))
        values = {"model": e.model or "", "identity": e.identity}
        for dim in ("team", "business_unit", "environment", "model", "identity"):
            target = out[(dim, values[dim] if dim in values else owner.of(dim))]
            for i, v in enumerate(row):
                target[i] += v
    return out


def as_list(row) -> list[int]:
    return [row.calls, row.input_tokens, row.output_tokens, row.cached_tokens,
            row.cost_nano_usd, row.errors]  # fmt: skip


@pytest.mark.parametrize("batch", [1, 97, 5000])
async def test_rollups_equal_the_unique_events_of_their_members(store: Store, batch: int):
    pipeline = Pipeline(store, PolicyConfig(), REGISTRY)
    events = traffic(seed=7)
    for i in range(0, len(events), batch):
        out = await pipeline.process(events[i : i + batch])
        await pipeline.commit(out, NOW)
    want = expected(events)
    assert {(d, v) for d, v in want} == {
        (d, v)
        for d in ("team", "business_unit", "environment", "model", "identity")
        for v in await store.rollups.values(d)
    }
    for (dim, value), row in want.items():
        rows = await store.rollups.rows(dim, value)
        assert as_list(totals(rows.hours)) == row, (dim, value)
        # Minutes are all kept here (2 h < the window), so they add up to the same.
        assert as_list(totals(rows.minutes)) == row, (dim, value)
    # Late events are also listed per hour they belong to, and the stats agree.
    stats = await store.stats.pipeline_counters()
    late = 0
    for dim, value in want:
        if dim == "team":
            late += sum(r.calls for r in (await store.rollups.rows(dim, value)).late_hours.values())
    assert late == stats["events_late"] > 0
    assert await store.rollups.unregistered() == ["stray-key"]


async def test_a_crash_before_the_rollups_leaves_deltas_that_are_applied_once(store: Store):
    events = traffic(seed=3)[:300]
    by_identity: dict[str, list[MeteringEvent]] = defaultdict(list)
    for e in events:
        by_identity[e.identity].append(e)
    groups = {}
    for identity, mine in by_identity.items():
        targets = [(("team", attribute(mine[0], REGISTRY).team),)]
        groups[identity] = (pack_groups(targets), [0] * len(mine))
    # The worker ingests, then dies before applying: the deltas wait in `rollout`.
    results = await store.windows.ingest(by_identity, groups)
    pending = [p for r in results.values() for p in r.pending_rollups]
    assert pending and all(len(r.pending_rollups) == 1 for r in results.values())
    # The redelivery finds every event a duplicate, and the waiting deltas again.
    again = await store.windows.ingest(by_identity, groups)
    assert sum(r.new + r.late for r in again.values()) == 0
    assert [p.payload for r in again.values() for p in r.pending_rollups] == [
        p.payload for p in pending
    ]
    assert await store.rollups.apply(pending) == len(pending)
    assert await store.rollups.apply(pending) == 0  # a second worker, or a retry
    payments = totals((await store.rollups.rows("team", "payments")).hours)
    assert payments.calls == sum(1 for e in events if e.identity in ("agent-a", "agent-b"))
    # Applied deltas are gone; a sweep finds nothing left.
    assert await store.rollups.sweep() == 0


async def test_steps_left_by_a_crash_apply_once_in_sequence_order_even_after_keys_expire(
    store: Store,
):
    events = [e for e in traffic(seed=7)[:400] if e.identity == "agent-a"]
    half = len(events) // 2
    groups = {"agent-a": (pack_groups([(("team", "payments"),)]), [0] * half)}
    first = await store.windows.ingest({"agent-a": events[:half]}, groups)
    rest = {"agent-a": (groups["agent-a"][0], [0] * (len(events) - half))}
    second = await store.windows.ingest({"agent-a": events[half:]}, rest)
    # The second ingest returns both steps (the first was never applied), in any order.
    waiting = second["agent-a"].pending_rollups
    assert len(waiting) == 2 and first["agent-a"].pending_rollups[0] in waiting
    assert await store.rollups.apply(list(reversed(waiting))) == 2
    assert await store.rollups.apply(waiting) == 0
    payments = totals((await store.rollups.rows("team", "payments")).hours)
    assert payments.calls == len({e.event_id for e in events})
    # The identity's keys expire (idle past their TTL); its next steps still count.
    for part in ("meta", "win", "dd", "late", "state", "rollout"):
        await store.redis.delete(store.keys.identity_key("agent-a", part))
    later = [e.model_copy(update={"event_id": e.event_id + "-later"}) for e in events[:10]]
    again = await store.windows.ingest(
        {"agent-a": later}, {"agent-a": (groups["agent-a"][0], [0] * 10)}
    )
    assert await store.rollups.apply(again["agent-a"].pending_rollups) == 1
    payments = totals((await store.rollups.rows("team", "payments")).hours)
    assert payments.calls == len({e.event_id for e in events}) + 10


async def test_a_sweep_applies_what_an_identity_that_never_came_back_left(store: Store):
    events = [e for e in traffic(seed=5)[:200] if e.identity == "agent-c"]
    groups = {"agent-c": (pack_groups([(("team", "search"),)]), [0] * len(events))}
    await store.windows.ingest({"agent-c": events}, groups)
    assert await store.rollups.sweep() == 1
    search = totals((await store.rollups.rows("team", "search")).hours)
    assert search.calls == len({e.event_id for e in events})
