"""Cold start from peers against a real Redis: warm identities report their levels to their
(team, environment) group with the checkpoint, and a new identity is judged against them."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aioredis

from meterguard.models import MeteringEvent
from meterguard.streams.policy.config import PolicyConfig
from meterguard.streams.runtime.peer_rates import REPORT_EVERY_MINUTES
from meterguard.streams.runtime.pipeline import BatchOutcome, Pipeline
from meterguard.streams.store import Store, StoreConfig, build_store
from meterguard.streams.store.peers import PeerGroup, PeerLevels, PeerReport
from meterguard.timeutil import minute_of
from tests.support.traffic import T0, as_events, series

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
PEER_RATES = (4, 5, 5, 6)  # calls/min of the warm identities of team "platform" in prod
WARM = 75  # minutes of peer traffic: past the spike detector's 60-minute warm-up
NEW = 5  # minutes of the newcomers' traffic


@pytest.fixture
async def store(redis_url: str):
    client = aioredis.Redis.from_url(redis_url)
    yield build_store(client, StoreConfig(prefix="t", allowed_lateness_s=30))
    await client.aclose()


async def run(pipeline: Pipeline, events: list[MeteringEvent], batch: int = 500) -> BatchOutcome:
    total = BatchOutcome()
    for i in range(0, len(events), batch):
        out = await pipeline.process(events[i : i + batch])
        await pipeline.apply_throttles(out, NOW)
        total.alerts += out.alerts
        total.peer_reports += out.peer_reports
        await pipeline.commit(out, NOW)
    return total


def traffic(identity: str, per_minute: int, minutes: int, start: int, team: str) -> list[dict]:
    docs = series(identity, minutes, per_minute, start=T0 + timedelta(minutes=start))
    return [{**d, "team": team} for d in docs]


def by_time(*streams: list[dict]) -> list[MeteringEvent]:
    docs = [d for s in streams for d in s]
    return as_events(sorted(docs, key=lambda d: (d["event_time"], d["event_id"])))


async def test_a_newcomer_far_above_its_peers_alerts_during_its_warm_up(store: Store):
    pipeline = Pipeline(store, PolicyConfig())
    peers = [traffic(f"svc-peer-{i}", r, WARM, 0, "platform") for i, r in enumerate(PEER_RATES)]
    warm = await run(pipeline, by_time(*peers))

    # Each peer reported after its warm-up, at most once per REPORT_EVERY_MINUTES block of
    # event time (batches of ~25 minutes here: the blocks of minutes 60 and 70 in one batch).
    key = store.keys.peers_key("platform", "prod")
    assert key == "t:peers:{platform|prod}"
    held = {k.decode(): PeerLevels.unpack(v) for k, v in (await store.redis.hgetall(key)).items()}
    assert sorted(held) == [f"svc-peer-{i}" for i in range(len(PEER_RATES))]
    for i, rate in enumerate(PEER_RATES):
        levels = held[f"svc-peer-{i}"]
        assert levels is not None and levels.rates["calls"] == pytest.approx(rate, rel=0.05)
    blocks = [(r.identity, r.levels.minute // REPORT_EVERY_MINUTES) for r in warm.peer_reports]
    assert len(blocks) == len(set(blocks)) >= len(PEER_RATES)
    first_warm = minute_of(T0.timestamp() * 1000) + 60
    assert all(r.levels.minute >= first_warm for r in warm.peer_reports)
    assert 0 < await store.redis.ttl(key) <= store.config.ttl_s

    newcomers = by_time(
        *(traffic(f"svc-peer-{i}", r, NEW, WARM, "platform") for i, r in enumerate(PEER_RATES)),
        traffic("agent-new", 500, NEW, WARM, "platform"),  # 100x its peers
        traffic("agent-lonely", 500, NEW, WARM, "lonely"),  # a team with no peers
        traffic("agent-ordinary", 5, NEW, WARM, "platform"),  # like its peers
    )
    out = await run(pipeline, newcomers)

    firing = [a for a in out.alerts if a.status == "firing"]
    assert {a.identity for a in firing} == {"agent-new"}
    alert = next(a for a in firing if a.detector == "spike")
    assert alert.score >= 0.8
    assert "peers" in alert.summary
    first = minute_of(newcomers[0].event_time_ms)
    # In its first minutes, i.e. long before its own 60-minute warm-up is over.
    assert minute_of(alert.window_start.timestamp() * 1000) <= first + 2
    # The yardstick: the busiest of the peers' 4, 5, 5, 6 calls/min.
    yardstick = re.search(r"vs its peers' rate ([0-9.]+) \(", alert.summary)
    assert yardstick is not None and float(yardstick[1]) == pytest.approx(6.0, rel=0.05)
    # Cold identities do not report; the key holds the warm peers only.
    assert set(await store.redis.hkeys(key)) == {f"svc-peer-{i}".encode() for i in range(4)}
    assert await store.redis.exists(store.keys.peers_key("lonely", "prod")) == 0


async def test_groups_whose_names_hold_the_separator_do_not_collide(store: Store):
    one, other = PeerGroup("a|b", "c"), PeerGroup("a", "b|c")
    assert store.peers.key(one) != store.peers.key(other)
    levels = PeerLevels(1000, {"calls": 5.0, "calls_phi": 1.0})
    reports = [PeerReport(one, f"x{i}", levels) for i in range(3)]
    reports += [PeerReport(other, "y0", levels)]
    await store.windows.commit([], {}, {}, peer_reports=reports)

    read = await store.peers.read([one, other])
    assert sorted(read[one].levels) == ["x0", "x1", "x2"]
    assert sorted(read[other].levels) == ["y0"]
    for group in (one, other):
        assert 0 < await store.redis.ttl(store.peers.key(group)) <= store.config.ttl_s


async def test_peers_silent_past_the_horizon_are_left_out_and_deleted(store: Store):
    group = PeerGroup("platform", "prod")
    horizon = store.config.ttl_s // 60
    now = 10_000_000
    reports = [PeerReport(group, f"p{i}", PeerLevels(now, {"calls": 5.0})) for i in range(3)]
    reports.append(PeerReport(group, "gone", PeerLevels(now - horizon - 1, {"calls": 50.0})))
    await store.windows.commit([], {}, {}, peer_reports=reports)
    await store.redis.hset(store.peers.key(group), "garbled", "not,levels")

    read = (await store.peers.read([group]))[group]
    assert sorted(read.levels) == ["p0", "p1", "p2"]
    assert sorted(read.stale) == ["garbled", "gone"]
    await store.windows.commit([], {}, {}, stale_peers={group: read.stale})
    assert sorted(await store.redis.hkeys(store.peers.key(group))) == [b"p0", b"p1", b"p2"]
