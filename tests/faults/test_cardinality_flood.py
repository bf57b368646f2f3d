"""Issue 14, scenario 7: a cardinality attack. In the middle of the fault scenarios' stream
(tests/support/fault_stream.py: 30 identities, bursts and a retry loop), FLOOD identities
never seen before each send one call within one event-time minute (a leaked key minting
identities). Real processes: the session's broker and Redis, one `meterguard worker`.

Asserted exactly:
- the flood raises one identity_flood alert (detectors/identity_flood.py), and no other
  alert is lost or added: the alert ids are a replay's of the same events;
- the legitimate identities keep being scored: their spike and retry-loop alerts fire, and
  every identity's windows, late totals and counters, the flood's included, match the
  ledger (counted, never dropped);
- memory stays bounded by design: every key a flood identity left expires, its own within
  the store's key TTL and its showback roll-up within ROLLUP_TTL_S (README, Sizing); the
  figures (Redis bytes per flood identity, worker RSS before and after) are printed.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from meterguard.streams.store.births import BIRTHS_TTL_S
from meterguard.streams.store.rollups import ROLLUP_TTL_S
from meterguard.streams.tools.embedded import EmbeddedBroker
from tests.support.fault_stream import EXTRA_ENV, drain, reached, stream
from tests.support.faults import (
    counted,
    reconciled,
    reference_alert_ids,
    unique_events,
)
from tests.support.polling import eventually
from tests.support.traffic import T0
from tests.support.worker_process import Worker, produce, read_topics, start_worker

# 60 times the bar's floor; a million would take minutes here: the cost per identity scales.
FLOOD = 6_000
FLOOD_MINUTE = 64  # during the bursts and the retry loop (fault_stream.RUNAWAYS, LOOP_MINUTES)


def flood_docs() -> list[dict]:
    return [
        {
            "event_id": f"minted-{n}-0",
            "identity": f"minted-{n:05d}",
            "event_time": (T0 + timedelta(minutes=FLOOD_MINUTE, seconds=n * 60 / FLOOD))
            .isoformat()
            .replace("+00:00", "Z"),
            "team": "team-leak",
            "environment": "prod",
            "model": "gpt-4o-mini",
            "input_tokens": 10,
            "output_tokens": 1,
            "cost_usd": 0.00001,
        }
        for n in range(FLOOD)
    ]


def rss_mib(worker: Worker) -> float:
    for line in Path(f"/proc/{worker.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def test_an_identity_flood_alerts_once_and_legitimate_identities_keep_being_scored(
    broker: EmbeddedBroker, redis_url: str, tmp_path_factory: pytest.TempPathFactory, tmp_path
):
    flood = flood_docs()
    legit = stream().docs
    # The flood goes in where the stream reaches its minute.
    at = next(n for n, d in enumerate(legit) if d["event_time"] >= flood[0]["event_time"])
    sent = [*legit[:at], *flood, *legit[at:]]
    total = unique_events(sent)
    worker = await start_worker(broker, redis_url, tmp_path_factory, EXTRA_ENV)
    client = aioredis.Redis.from_url(redis_url)
    try:
        await worker.wait_ready()
        rss_before = rss_mib(worker)
        memory_before = (await client.info("memory"))["used_memory"]
        await produce(broker.bootstrap, worker.settings.topic_raw, sent)
        await eventually(lambda: reached(worker, total), "everything counted", log=worker.log)
        await drain(broker, worker, legit)  # markers for the legitimate identities only
        sent += [d for d in legit if d not in sent]  # the markers drain() appended to legit
        rss_after = rss_mib(worker)
        memory_after = (await client.info("memory"))["used_memory"]
        settings = worker.settings
        alerts = (await read_topics(settings, [settings.topic_alerts]))[settings.topic_alerts]
        floods = [a for a in alerts if a["detector"] == "identity_flood"]
        per_identity = (memory_after - memory_before) / FLOOD
        ttls = await key_ttls(client, settings.key_prefix, "minted-00042")
        print(
            f"FAULT FIGURES flood={FLOOD} counted={await counted(worker.store)} "
            f"unique={unique_events(sent)} "
            f"alerts={len(alerts)} flood_alerts={len(floods)} "
            f"redis_bytes_per_flood_identity={per_identity:.0f} "
            f"worker_rss_mib={rss_before:.0f}->{rss_after:.0f} ttls={ttls}"
        )
        assert len(floods) == 1 and floods[0]["evidence"]["new_identities"] >= 100
        assert floods[0]["evidence"]["top_teams"][0]["team"] == "team-leak"
        assert {"spike", "retry_loop"} <= {a["detector"] for a in alerts}
        reference = await reference_alert_ids(sent, settings, tmp_path)
        assert sorted({a["alert_id"] for a in alerts}) == sorted(set(reference))
        assert await counted(worker.store) == unique_events(sent)
        result = await reconciled(sent, settings)
        assert result.mismatches == []
        # Bounded by design: a flood identity's keys all expire; its own keys within the
        # store's TTL, its showback roll-up within ROLLUP_TTL_S; the births within a day.
        assert ttls, "the flood identity left no keys?"
        for key, ttl in ttls.items():
            limit = ROLLUP_TTL_S if ":rollup:" in key else settings.store_config().ttl_s
            assert 0 < ttl <= limit, (key, ttl)
        assert 0 < await client.ttl(f"{settings.key_prefix}:births") <= BIRTHS_TTL_S
    finally:
        await client.aclose()
        await worker.stop()


async def key_ttls(client: aioredis.Redis, prefix: str, identity: str) -> dict[str, int]:
    found = {}
    async for key in client.scan_iter(match=f"{prefix}:*{identity}*", count=1000):
        found[key.decode()] = await client.ttl(key)
    return found
