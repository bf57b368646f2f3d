"""`meterguard reconcile` after a real worker ran traffic mixing duplicates (within a batch,
across batches, a full redelivery), late events, out-of-order events within the allowed
lateness and poison messages: every difference is explained; a corrupted minute is not."""

from __future__ import annotations

import random
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer

from meterguard.streams.offline.reconcile import (
    Ledger,
    Period,
    Rules,
    Stored,
    Totals,
    parse_metrics,
    reconcile,
)
from meterguard.streams.offline.reconcile_run import totals_of
from meterguard.streams.store import StoreConfig, build_store
from meterguard.streams.tools.embedded import EmbeddedBroker, EmbeddedRedis
from tests.support.polling import eventually
from tests.support.traffic import T0, as_events, series
from tests.support.worker_process import Worker, start_worker

LATENESS_S = 5
IDENTITIES = ("svc-a", "svc-b", "svc-c")
POISON_1 = [b"{not json", b'{"event_id": "neg", "identity": "svc-a", "event_time": '
            b'"2026-01-05T09:03:00Z", "input_tokens": -5}']  # fmt: skip
POISON_2 = [None, b"[1, 2"]  # an empty (tombstone) message, truncated JSON


def is_poison(message: bytes | None) -> bool:
    return message in POISON_1 or message in POISON_2


@dataclass
class Run:
    worker: Worker
    sent: list[bytes | None]  # every message, in order, redelivery included
    unique: int  # distinct (identity, event_id)
    late: int


def traffic() -> tuple[list[bytes | None], list[bytes | None], int]:
    docs = sorted((d for i in IDENTITIES for d in series(i, 20, 6)), key=lambda d: d["event_time"])
    cut = next(n for n, d in enumerate(docs) if d["event_time"] >= "2026-01-05T09:12")
    first, second = docs[:cut], docs[cut:]
    # Within one batch: svc-a's fifth event twice in a row.
    fifth = next(n for n, d in enumerate(first) if d["event_id"] == "svc-a-0-4")
    first.insert(fifth + 1, first[fifth])
    # Out of order within the allowed lateness: svc-b's 09:03:50 after its 09:04:00.
    late_one = next(n for n, d in enumerate(first) if d["event_id"] == "svc-b-3-5")
    moved = first.pop(late_one)
    first.insert(next(n for n, d in enumerate(first) if d["event_id"] == "svc-b-4-0") + 1, moved)
    # Across batches: three of the first phase's ids again in the second.
    second[10:10] = [d for d in first if d["identity"] == "svc-c"][:3]
    # Late: new ids far behind their identity's watermark.
    late = [
        {**series("svc-a", 3, 6)[-1], "event_id": "svc-a-late-1"},
        {**series("svc-a", 3, 6)[-2], "event_id": "svc-a-late-2"},
        {**series("svc-b", 6, 6)[-1], "event_id": "svc-b-late-1", "output_tokens": 7},
    ]
    second += late
    one = [orjson.dumps(d) for d in first]
    one.insert(len(one) // 2, POISON_1[0])
    two = [orjson.dumps(d) for d in second] + POISON_2
    two.insert(5, POISON_1[1])
    return one, two, len(late)


async def send(bootstrap: str, topic: str, messages: list[bytes | None]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=10)
    await producer.start()
    try:
        for value in messages:
            # Keyed by identity like a gateway; poison goes with svc-a.
            identity = "svc-a" if is_poison(value) else orjson.loads(value or b"")["identity"]
            await producer.send(topic, key=identity.encode(), value=value)
        await producer.flush()
    finally:
        await producer.stop()


async def metrics_of(worker: Worker) -> dict[str, float]:
    async with aiohttp.ClientSession() as session, session.get(f"{worker.web}/metrics") as r:
        return parse_metrics(await r.text())


@pytest.fixture(scope="module")
async def run(broker: EmbeddedBroker, redis_server: EmbeddedRedis, tmp_path_factory):
    extra = {"MG_ALLOWED_LATENESS_S": str(LATENESS_S), "MG_BATCH_SECONDS": "0.2"}
    worker = await start_worker(broker, redis_server.url, tmp_path_factory, extra)
    try:
        one, two, late = traffic()
        raw = worker.settings.topic_raw
        valid = [m for m in one + two if not is_poison(m)]
        await send(broker.bootstrap, raw, one)
        first_valid = sum(1 for m in one if not is_poison(m))
        # Phase two only once phase one is counted: its repeats then cross batches for sure.
        await worker.wait_counted(first_valid, ("events_new", "events_duplicate", "events_late"))
        await send(broker.bootstrap, raw, two)
        await send(broker.bootstrap, raw, one + two)  # a full redelivery
        events, dead = 2 * len(valid), 2 * (len(POISON_1) + len(POISON_2))

        async def everything_counted() -> bool:
            stats = await worker.store.stats.pipeline_counters()
            counted = sum(
                stats.get(k, 0) for k in ("events_new", "events_duplicate", "events_late")
            )
            samples = await metrics_of(worker)
            seen = sum(samples.get(f'meterguard_events_total{{status="{s}"}}', 0) for s in
                       ("new", "duplicate", "late"))  # fmt: skip
            return (
                counted >= events
                and seen >= events
                and stats.get("events_dead_lettered", 0) >= dead
            )

        await eventually(everything_counted, "every message to be counted", log=worker.log)
        unique = len({orjson.loads(m or b"")["event_id"] for m in valid})
        yield Run(worker, one + two + one + two, unique, late)
    finally:
        await worker.stop()


def run_reconcile(run: Run, report: Path) -> subprocess.CompletedProcess:
    args = [
        sys.executable,
        "-m",
        "meterguard.streams.tools.cli",
        "reconcile",
        "--topic",
        run.worker.settings.topic_raw,
    ]
    args += ["--metrics-url", f"{run.worker.web}/metrics", "--json-out", str(report)]
    args += ["--idle-timeout", "1", "--no-progress"]
    env = {**run.worker.env, "COLUMNS": "200"}
    return subprocess.run(args, env=env, capture_output=True, timeout=300)


def test_reconcile_explains_duplicates_late_events_and_dead_letters(run: Run, tmp_path: Path):
    done = run_reconcile(run, tmp_path / "report.json")
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
    report = orjson.loads((tmp_path / "report.json").read_bytes())
    valid = sum(1 for m in run.sent if not is_poison(m))
    assert report["ok"] and report["mismatches"] == []
    assert report["explained"]["duplicates"]["in_input"] == valid - run.unique
    assert report["explained"]["duplicates"]["redelivered_by_consumer"] == 0
    assert report["explained"]["late"]["count"] == run.late == 3
    assert report["explained"]["late"]["by_identity_hour"] == {
        "svc-a": {"2026-01-05T09:00Z": 2},
        "svc-b": {"2026-01-05T09:00Z": 1},
    }
    assert report["explained"]["dead_letters"] == {
        "count": 8,
        "by_reason": {"invalid_json": 4, "invalid_event": 2, "empty_message": 2},
    }
    rows = {r["identity"]: r for r in report["identities"]}
    assert rows["svc-b"]["expected"]["calls"] == 120 + 1  # the out-of-order one on time too
    assert rows["svc-a"]["late"] == 2 and rows["svc-b"]["on_time"] == 120
    stdout = done.stdout.decode()
    assert "no unexplained difference" in stdout and "3 events past the allowed lateness" in stdout


async def test_a_corrupted_minute_is_named_and_fails_the_reconcile(run: Run, tmp_path: Path):
    store = run.worker.store
    key, minute = store.keys.identity_key("svc-b", "win"), str(int(T0.timestamp()) // 60 + 10)
    calls, *rest = (int(v) for v in (await store.redis.hget(key, minute)).split(b","))
    await store.redis.hset(key, minute, ",".join(str(v) for v in (calls + 1, *rest)))
    try:
        done = run_reconcile(run, tmp_path / "report.json")
    finally:
        await store.redis.hset(key, minute, ",".join(str(v) for v in (calls, *rest)))
    assert done.returncode == 1
    report = orjson.loads((tmp_path / "report.json").read_bytes())
    assert [(m["identity"], m["where"], m["field"], m["expected"], m["found"])
            for m in report["mismatches"]] == [
        ("svc-b", "minute 2026-01-05T09:10Z", "calls", calls, calls + 1)
    ]  # fmt: skip
    stdout = done.stdout.decode()
    assert "svc-b" in stdout and "2026-01-05T09:10Z" in stdout and "1 unexplained" in stdout


async def test_a_damaged_row_is_reported_unreadable_not_a_crash(run: Run, tmp_path: Path):
    store = run.worker.store
    key, minute = store.keys.identity_key("svc-b", "win"), str(int(T0.timestamp()) // 60 + 11)
    original = await store.redis.hget(key, minute)
    await store.redis.hset(key, minute, "not,a,row")
    try:
        done = run_reconcile(run, tmp_path / "report.json")
    finally:
        await store.redis.hset(key, minute, original)
    assert done.returncode == 1, done.stderr.decode()[-2000:]
    report = orjson.loads((tmp_path / "report.json").read_bytes())
    unreadable = [m for m in report["mismatches"] if m["where"] == "unreadable"]
    assert [(m["identity"], m["field"]) for m in unreadable] == [
        ("svc-b", f"win {minute}: b'not,a,row'")
    ]


async def test_recomputed_rules_match_the_ingest_script_on_shuffled_traffic(
    redis_server: EmbeddedRedis,
):
    """Events locally out of order (some within the lateness, some past it), duplicates and
    random batch cuts through the real script: the ledgers agree with every minute, late hour
    and counter it keeps, past the window retention too."""
    rng = random.Random(5)
    cfg = StoreConfig(prefix=f"rules-{uuid.uuid4().hex[:8]}", allowed_lateness_s=20,
                      window_minutes=30)  # fmt: skip
    docs = [d for i in IDENTITIES for d in series(i, 90, 4)]
    docs.sort(key=lambda d: (d["event_time"], rng.random()))
    for _ in range(len(docs) // 3):  # move an event up to ~2 minutes later in the stream
        i = rng.randrange(len(docs) - 10)
        docs.insert(i + rng.randrange(1, 10), docs.pop(i))
    docs += rng.sample(docs, 40)  # redeliveries, at the end
    events = as_events(docs)
    client = aioredis.Redis.from_url(redis_server.url)
    store = build_store(client, cfg)
    try:
        rest = events
        while rest:
            cut = rng.randrange(1, 60)
            groups: dict[str, list] = {}
            for e in rest[:cut]:
                groups.setdefault(e.identity, []).append(e)
            await store.windows.ingest(groups)
            rest = rest[cut:]
        held = await store.stats.holdings(await store.stats.identities())
    finally:
        await client.aclose()
    rules = Rules(20_000, cfg.dedupe_horizon_s * 1000, cfg.window_minutes, cfg.ttl_s * 1000)
    ledgers: dict[str, Ledger] = {}
    for e in events:
        ledger = ledgers.setdefault(e.identity, Ledger(rules))
        totals = Totals(1, e.input_tokens, e.output_tokens, e.cached_tokens, e.cost_nano_usd, 0)
        ledger.apply(e.event_id, e.event_time_ms, totals)
    stored = {
        i: Stored(totals_of(h.minutes), totals_of(h.late), h.counters)
        for i, h in held.items()
        if h is not None
    }
    report = reconcile(ledgers, stored, {}, Period(), len(events), now_ms=0)
    assert report.ok, report.mismatches[:5]
    assert all(r.late and r.not_retained_minutes for r in report.identities)
    assert sum(r.duplicates for r in report.identities) == 40
