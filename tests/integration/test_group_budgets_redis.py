"""Team budgets on a real Redis through the real pipeline: each warning and the cap once per
period however the traffic is batched or redelivered, a block for every member of the team
at the cap (one that joins later too), nothing for another team."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aioredis

from meterguard.models import Alert, MeteringEvent, ThrottleCommand
from meterguard.streams.policy.config import PolicyConfig
from meterguard.streams.policy.group_budgets import (
    CAP_MARK,
    GROUP_DETECTOR,
    GroupPeriod,
    alert_id,
    period_of,
)
from meterguard.streams.policy.registry import Ownership, Registry
from meterguard.streams.runtime.pipeline import Pipeline
from meterguard.streams.store import Store, StoreConfig, budget_marks, build_store
from meterguard.timeutil import to_ms

pytestmark = pytest.mark.integration
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)  # the gateway keys' wall clock
DAY_END = datetime(2026, 3, 3, tzinfo=UTC)
REGISTRY = Registry(
    identities={
        "pay-1": Ownership(team="payments", business_unit="retail"),
        "pay-2": Ownership(team="payments", business_unit="retail"),
        "pay-3": Ownership(team="payments", business_unit="retail"),
        "search-1": Ownership(team="search", business_unit="retail"),
    },
    defaults=Ownership(environment="prod"),
)
POLICY = PolicyConfig.model_validate(
    {
        "group_budgets": {
            "team": {
                "payments": {
                    "limit_usd": 10,
                    "period": "day",
                    "warn_at": [0.5, 0.8, 0.95],
                    "at_cap": "block",
                },
                "search": {"limit_usd": 1000, "period": "day", "at_cap": "block"},
            }
        }
    }
)
PAYMENTS = GroupPeriod("team", "payments", period_of("day", to_ms(T0)))
MARKS = ["a|0.5", "a|0.8", "a|0.95", CAP_MARK]
EXPECTED_ALERTS = [alert_id(PAYMENTS, m) for m in MARKS]


@pytest.fixture
async def store(redis_url: str):
    client = aioredis.Redis.from_url(redis_url)
    yield build_store(client, StoreConfig(prefix="g", allowed_lateness_s=30))
    await client.aclose()


def traffic() -> list[MeteringEvent]:
    """payments: pay-1 and pay-2 at $0.10 a call, one call a minute each ($0.20/min: $5 by
    minute 25, $8 by 40, $9.50 by 48, the $10 cap at minute 50), pay-3 joins at minute 55;
    search-1 at $0.50/min, far below its $1,000."""
    events = []
    for minute in range(60):
        at = T0 + timedelta(minutes=minute, seconds=7)
        callers = ["pay-1", "pay-2", "search-1"] + (["pay-3"] if minute >= 55 else [])
        for identity in callers:
            events.append(
                MeteringEvent(
                    event_id=f"{identity}-{minute}",
                    identity=identity,
                    event_time=at,
                    model="gpt-4o-mini",
                    input_tokens=400,
                    output_tokens=100,
                    cost_usd="0.5" if identity == "search-1" else "0.1",
                )
            )
    return events


class Published:
    """What the worker would have published: every batch's alerts and accepted commands."""

    def __init__(self) -> None:
        self.alerts: list[Alert] = []
        self.commands: list[ThrottleCommand] = []

    async def run(self, pipeline: Pipeline, batch: list[MeteringEvent]) -> None:
        out = await pipeline.process(batch)
        await pipeline.apply_throttles(out, NOW)
        self.alerts += out.alerts
        self.commands += out.commands
        await pipeline.commit(out, NOW)

    @property
    def group_alerts(self) -> list[Alert]:
        return [a for a in self.alerts if a.detector == GROUP_DETECTOR]

    @property
    def group_commands(self) -> list[ThrottleCommand]:
        return [c for c in self.commands if c.alert_id in EXPECTED_ALERTS]


def assert_once_each(published: Published) -> None:
    assert [a.alert_id for a in published.group_alerts] == EXPECTED_ALERTS
    assert {a.identity for a in published.group_alerts} == {"team:payments"}
    assert len({a.episode_id for a in published.group_alerts}) == 1
    blocks = published.group_commands
    assert sorted(c.identity for c in blocks) == ["pay-1", "pay-2", "pay-3"]
    for c in blocks:
        assert c.action == "block" and c.alert_id == EXPECTED_ALERTS[-1]
        assert c.expires_at == DAY_END and c.version == to_ms(DAY_END)


@pytest.mark.parametrize(
    ("batch", "redeliver_each"), [(1, False), (7, True), (50, False), (10_000, True)]
)
async def test_each_warning_and_the_cap_once_and_every_member_blocked(
    store: Store, batch: int, redeliver_each: bool
):
    pipeline = Pipeline(store, POLICY, REGISTRY)
    published = Published()
    events = traffic()
    for i in range(0, len(events), batch):
        await published.run(pipeline, events[i : i + batch])
        if redeliver_each:  # Kafka hands the same batch over again
            await published.run(pipeline, events[i : i + batch])
    # A full redelivery in other batch sizes, on this worker and on a restarted one.
    for i in range(0, len(events), 13):
        await published.run(pipeline, events[i : i + 13])
    restarted = Pipeline(store, POLICY, REGISTRY)
    await published.run(restarted, events)

    assert_once_each(published)
    cap = published.group_alerts[-1]
    assert cap.severity == "critical" and cap.evidence["spent_usd"] >= 10
    for warning in published.group_alerts[:-1]:
        # A batch that already reached the cap has no forecast left to make.
        assert (warning.evidence["forecast_cap_at"] is None) == (warning.evidence["fraction"] >= 1)
    # Nothing for the other team, whose spend is far below its budget.
    assert not [a for a in published.group_alerts if "search" in a.identity]
    for member in ("pay-1", "pay-2", "pay-3"):
        held = await store.throttles.active_for(member)
        assert held is not None and held.action == "block"
        assert held.alert_id == EXPECTED_ALERTS[-1]
    held = await store.throttles.active_for("search-1")
    assert held is None or held.alert_id not in EXPECTED_ALERTS
    # The members set the roll-ups keep, and the marks: both expire.
    assert (await store.rollups.members([("team", "payments")]))[0] == ["pay-1", "pay-2", "pay-3"]
    assert await store.redis.ttl(store.rollups.members_key("team", "payments")) > 0
    marks = budget_marks.BudgetMarks(store.redis, store.config, store.keys)
    key = marks.key(budget_marks.MarkKey("team", "payments", PAYMENTS.period.start_ms, 0))
    assert 0 < await store.redis.ttl(key) <= 2 * 86_400 + store.config.dedupe_horizon_s
    assert len(await store.redis.hgetall(key)) == len(MARKS) + 3  # + one per member


async def test_two_workers_on_one_team_publish_each_warning_once(store: Store):
    """The team's identities on two workers (partitions are keyed by identity)."""
    first, second = Pipeline(store, POLICY, REGISTRY), Pipeline(store, POLICY, REGISTRY)
    published = Published()
    events = traffic()
    for i in range(0, len(events), 5):
        batch = events[i : i + 5]
        await published.run(first, [e for e in batch if e.identity in ("pay-1", "search-1")])
        await published.run(second, [e for e in batch if e.identity in ("pay-2", "pay-3")])
    assert_once_each(published)


async def test_a_crash_before_publishing_publishes_the_same_ids_after_the_lease(
    store: Store, monkeypatch: pytest.MonkeyPatch
):
    events = traffic()
    half = [e for e in events if e.event_time < T0 + timedelta(minutes=30)]  # $6: past 0.5
    crashed = Pipeline(store, POLICY, REGISTRY)
    lost = await crashed.process(half)  # ... and the worker dies before publishing
    (claimed,) = [a for a in lost.alerts if a.detector == GROUP_DETECTOR]
    assert claimed.alert_id == EXPECTED_ALERTS[0]

    published = Published()
    successor = Pipeline(store, POLICY, REGISTRY)
    await published.run(successor, half)  # the redelivery, within the lease: left alone
    assert published.group_alerts == []
    monkeypatch.setattr(budget_marks, "LEASE_MS", 0)
    later = Pipeline(store, POLICY, REGISTRY)
    await published.run(later, half)  # after the lease: published again, same id
    assert [a.alert_id for a in published.group_alerts] == [claimed.alert_id]
    await published.run(later, events)  # confirms; the rest of the day goes on
    await published.run(later, events)
    assert_once_each(published)
