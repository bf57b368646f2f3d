"""The compact dedupe (store/dedupe.py, ingest.lua) against a real Redis: exact across
batches and bucket re-splits, about 9 bytes per remembered id, generations dropped past the
horizon, and the same decisions as reconcile's ledger."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis

from meterguard.models import MeteringEvent
from meterguard.streams.offline.reconcile import Ledger, Rules, Totals
from meterguard.streams.store import Store, StoreConfig, build_store
from meterguard.streams.store.dedupe import IDS_PER_BUCKET, generation_ms, id_hash
from meterguard.timeutil import MINUTE_MS, to_ms
from tests.support.traffic import T0 as START

T0 = to_ms(START)  # epoch ms

HOUR_S = 3600


def event(identity: str, event_id: str, ms: int) -> MeteringEvent:
    return MeteringEvent.model_validate(
        {
            "event_id": event_id,
            "identity": identity,
            "event_time": datetime.fromtimestamp(ms / 1000, UTC).isoformat(),
            "input_tokens": 10,
            "output_tokens": 5,
        }
    )


@pytest.fixture
async def client(redis_url: str):
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


def store_of(client: aioredis.Redis, prefix: str, horizon_s: int = 48 * HOUR_S) -> Store:
    cfg = StoreConfig(prefix=prefix, allowed_lateness_s=30, dedupe_horizon_s=horizon_s)
    return build_store(client, cfg)


async def statuses(store: Store, events: list[MeteringEvent]) -> str:
    """What the script decided for each event: n(ew), l(ate) or d(uplicate). No checkpoint
    follows these ingests, so a duplicate still awaits one ('r': observed again by the
    pipeline, counted once like any duplicate); here it is a duplicate."""
    result = await store.windows.ingest({events[0].identity: events})
    return result[events[0].identity].status.replace("r", "d")


async def test_every_id_counts_once_across_batches_and_bucket_resplits(client: aioredis.Redis):
    store = store_of(client, "dd1")
    # 50 buckets' worth in one generation, sent in growing batches: the generation is
    # re-split several times, before and between batches.
    ids = [f"call-{i}" for i in range(50 * IDS_PER_BUCKET)]
    events = [event("busy", e, T0 + i * 10) for i, e in enumerate(ids)]
    seen = ""
    start = 0
    for size in (1, 7, 64, 500, 2000):
        seen += await statuses(store, events[start : start + size])
        start += size
    seen += await statuses(store, events[start:])
    assert seen == "n" * len(events)
    # Everything again, shuffled, with copies inside one batch: all duplicates.
    again = events + events[:100]
    random.Random(5).shuffle(again)
    assert await statuses(store, again) == "d" * len(again)
    counters = await store.windows.counters("busy")
    assert (counters["new"], counters["dup"]) == (len(events), len(again))


async def test_a_remembered_id_costs_about_nine_bytes(client: aioredis.Redis):
    store = store_of(client, "dd2")
    n = 20_000
    events = [event("many", f"{i:08x}-req", T0 + i * 100) for i in range(n)]
    for i in range(0, n, 1000):
        await statuses(store, events[i : i + 1000])
    # The ids awaiting a checkpoint are dropped by the checkpoint's commit (commit_state.lua);
    # what stays is the remembered ids.
    await client.hdel("dd2:{many}:dd", "awaiting:")
    used = await client.memory_usage("dd2:{many}:dd", samples=0)
    # 8 bytes of hash per id; allocator rounding and the fields' overhead are under 4 more
    # (the zset before held the raw id: about 100 bytes each).
    assert used is not None
    assert used / n < 12


async def test_generations_past_the_horizon_are_dropped_and_their_ids_forgotten(
    client: aioredis.Redis,
):
    horizon_s = 4 * HOUR_S
    store = store_of(client, "dd3", horizon_s)
    span = generation_ms(horizon_s * 1000)
    old = event("aging", "first", T0)
    assert await statuses(store, [old]) == "n"
    # Within the horizon (plus at most one generation) the id is still known.
    assert await statuses(store, [event("aging", "x", T0 + horizon_s * 1000)]) == "n"
    assert await statuses(store, [old]) == "d"
    # The watermark passes the first generation's end by the horizon: dropped.
    gen_end = (T0 // span + 1) * span
    assert await statuses(store, [event("aging", "y", gen_end + horizon_s * 1000)]) == "n"
    fields = {f.decode() for f in await client.hkeys("dd3:{aging}:dd")}
    assert str(T0 // span) not in fields
    assert not any(f.startswith(f"{T0 // span}:") for f in fields)
    # Redelivered past the horizon: counted again (late: its minute is long final).
    assert await statuses(store, [old]) == "l"


async def test_a_dedupe_key_of_the_former_layout_is_replaced(client: aioredis.Redis):
    store = store_of(client, "dd4")
    await client.zadd("dd4:{legacy}:dd", {"old-id": T0})
    assert await statuses(store, [event("legacy", "new-id", T0)]) == "n"
    assert await client.type("dd4:{legacy}:dd") == b"hash"


async def test_the_script_and_reconcile_ledger_decide_alike(client: aioredis.Redis):
    """Random ids, repeats near and far (across generations and past the horizon), one event
    per call (the ledger decides per event, the script prunes per batch)."""
    horizon_s = 2 * HOUR_S
    store = store_of(client, "dd5", horizon_s)
    rules = Rules(30_000, horizon_s * 1000, 24 * 60, 49 * HOUR_S * 1000)
    ledger = Ledger(rules)
    rng = random.Random(11)
    ms, pool = T0, [f"id-{i}" for i in range(60)]
    script, expected = "", ""
    for _ in range(400):
        ms += rng.choice((1_000, 20_000, 10 * MINUTE_MS, 45 * MINUTE_MS))
        event_id = rng.choice(pool)
        expected += ledger.apply(event_id, ms, Totals(calls=1))[0]
        script += await statuses(store, [event("judged", event_id, ms)])
    assert "d" in expected
    assert script == expected


async def test_ids_awaiting_a_checkpoint_are_bounded(client: aioredis.Redis):
    """Ingests no checkpoint follows (checkpoints that keep failing) keep at most the newest
    65,536 ids waiting for one (512 KiB), never an unbounded list."""
    store = store_of(client, "dd6")
    events = [event("stuck", f"s-{i}", T0 + i) for i in range(70_000)]
    for i in range(0, len(events), 10_000):
        await statuses(store, events[i : i + 10_000])
    waiting = await client.hget("dd6:{stuck}:dd", "awaiting:")
    assert waiting is not None and len(waiting) == 65_536 * 8
    assert waiting.endswith(b"".join(id_hash(e.event_id) for e in events[-3:]))
