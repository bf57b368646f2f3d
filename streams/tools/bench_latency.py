"""`meterguard bench` latency: a produced event until its identity's throttle key is in Redis,
on the running worker, under background traffic at a fraction of the measured pipeline_eps.

What is measured. No detector can act on an identity's first event alone: every detector
scores a *final* minute, and a minute is final once the identity's event-time watermark is
`MG_ALLOWED_LATENESS_S` past its end (store/ingest.lua); the first event of a new identity
never closes a minute. The fastest path is drift's "calls after offboarding", which blocks
at once, with no warm-up: each probe is a fresh identity the bench policy lists in
`offboarded_identities`, and sends two native events back to back, in one partition: an
opening event (event time now - 70 s - lateness) and the event that closes its minute (event
time now). A probe's latency runs from handing the opening event to the producer
(linger 0) until the bench receives the block command on the namespace's throttle-changes
channel, which apply_throttle.lua PUBLISHes in the same script that SETs the key (so the key
is visible by then). It covers: produce -> decode_agent (metering.raw) -> metering.events ->
score_agent batch -> ingest -> scoring -> throttle script, i.e. both Faust hops with their
fetch waits and `MG_BATCH_SECONDS` batching. So it is the latency of *the event that closes
a minute*; in event time, acting on a minute also waits for that event (up to a minute +
lateness after the first call), which no bench can shorten and this one does not count.
Probes start after WARMUP_S of background traffic, every `interval_s`.

Background traffic: the simulated population's events again, with fresh ids and the wall
clock as event time, paced at `rate` events/s.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from meterguard.streams.store.connection import RedisOptions, redis_client
from meterguard.streams.tools.bench_procs import BenchError
from meterguard.streams.tools.bench_traffic import Progress, iso, partition_of

WARMUP_S = 3.0  # background traffic before the first probe
PROBE_TIMEOUT_S = 30.0  # after the last probe, how long its key may take before we give up
TICK_S = 0.005  # pacing granularity of the background producer


@dataclass(frozen=True)
class LatencyRun:
    bootstrap: str
    redis_url: str
    redis_options: RedisOptions
    channel: str  # the worker namespace's throttle-changes channel
    topic: str
    partitions: int
    lateness_s: int
    rate: float  # background events/s
    probes: list[str]  # fresh identities, offboarded by the bench policy
    interval_s: float
    run_id: str


@dataclass(frozen=True)
class LatencyResult:
    latencies_ms: list[float]
    background_events: int
    background_rate: float  # achieved

    def percentile(self, p: float, of: list[float] | None = None) -> float:
        """Nearest rank: the smallest latency with at least p % of probes at or below it."""
        ordered = sorted(self.latencies_ms if of is None else of)
        return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]

    def halves(self) -> str:
        """The median of the earlier and of the later probes: a rise says the worker fell
        behind the background traffic."""
        half = max(1, len(self.latencies_ms) // 2)
        early, late = self.latencies_ms[:half], self.latencies_ms[half:] or self.latencies_ms
        return f"{self.percentile(50, early):,.0f} / {self.percentile(50, late):,.0f}"


def probe_events(identity: str, lateness_s: int, now: datetime) -> list[dict[str, Any]]:
    """The opening event and the one that closes its minute (see the module docstring)."""
    common = {
        "identity": identity,
        "kind": "llm.call",
        "team": "bench",
        "environment": "prod",
        "model": "gpt-4o-mini",
        "input_tokens": 100,
        "output_tokens": 20,
        "cost_usd": 0.0001,
        "status": "ok",
    }
    opening = now - timedelta(seconds=70 + lateness_s)
    return [
        {**common, "event_id": f"{identity}-open", "event_time": iso(opening)},
        {**common, "event_id": f"{identity}-close", "event_time": iso(now)},
    ]


async def measure_latency(
    run: LatencyRun, templates: list[dict[str, Any]], progress: Progress
) -> LatencyResult:
    client = redis_client(run.redis_url, run.redis_options)
    pubsub = client.pubsub()
    await pubsub.subscribe(run.channel)
    sent: dict[str, float] = {}
    seen: dict[str, float] = {}
    stop = asyncio.Event()
    background = Background(run, templates)
    tasks = [
        asyncio.create_task(_listen(pubsub, sent, seen, stop)),
        asyncio.create_task(background.run(stop)),
    ]
    try:
        await asyncio.sleep(WARMUP_S)
        await _send_probes(run, sent, progress)
        deadline = time.perf_counter() + PROBE_TIMEOUT_S
        while len(seen) < len(run.probes) and time.perf_counter() < deadline:
            if any(t.done() for t in tasks):
                break  # a failed task: its exception is raised below
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, timeout=10)
        await pubsub.aclose()
        await client.aclose()
    missing = [p for p in run.probes if p not in seen]
    if missing:
        raise BenchError(
            f"latency: {len(missing)} of {len(run.probes)} probes never got a throttle key "
            f"within {PROBE_TIMEOUT_S:.0f} s (e.g. {missing[0]})"
        )
    latencies = [(seen[p] - sent[p]) * 1000 for p in run.probes]
    return LatencyResult(latencies, background.sent, background.achieved)


async def _send_probes(run: LatencyRun, sent: dict[str, float], progress: Progress) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=run.bootstrap, linger_ms=0)
    await producer.start()
    try:
        first = time.perf_counter()
        for n, identity in enumerate(run.probes):
            await asyncio.sleep(max(0.0, first + n * run.interval_s - time.perf_counter()))
            partition = partition_of(identity, run.partitions)
            sent[identity] = time.perf_counter()  # before the opening event is handed over
            for doc in probe_events(identity, run.lateness_s, datetime.now(UTC)):
                await producer.send(
                    run.topic, orjson.dumps(doc), key=identity.encode(), partition=partition
                )
        progress(f"  latency: {len(run.probes)} probes sent")
        await producer.flush()
    finally:
        await producer.stop()


async def _listen(
    pubsub: Any, sent: dict[str, float], seen: dict[str, float], stop: asyncio.Event
) -> None:
    while not stop.is_set():
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
        at = time.perf_counter()
        if message is None or message.get("type") != "message":
            continue
        try:
            identity = orjson.loads(message["data"]).get("identity")
        except (orjson.JSONDecodeError, AttributeError):
            continue
        if identity in sent and identity not in seen:
            seen[identity] = at


class Background:
    """The population's events at the wall clock, `rate` per second, fresh ids."""

    def __init__(self, run: LatencyRun, templates: list[dict[str, Any]]) -> None:
        self.config = run
        self.templates = templates
        self.sent = 0
        self.achieved = 0.0

    async def run(self, stop: asyncio.Event) -> None:
        run = self.config
        producer = AIOKafkaProducer(bootstrap_servers=run.bootstrap, linger_ms=5)
        await producer.start()
        try:
            started = time.perf_counter()
            while not stop.is_set():
                due = int(run.rate * (time.perf_counter() - started)) - self.sent
                if due > 0:
                    stamp = iso(datetime.now(UTC))
                    for _ in range(due):
                        doc = self.templates[self.sent % len(self.templates)]
                        event = {**doc, "event_id": f"{run.run_id}-bg-{self.sent}"}
                        event["event_time"] = stamp
                        await producer.send(
                            run.topic,
                            orjson.dumps(event),
                            key=doc["identity"].encode(),
                            partition=partition_of(doc["identity"], run.partitions),
                        )
                        self.sent += 1
                await asyncio.sleep(TICK_S)
            self.achieved = self.sent / max(time.perf_counter() - started, 1e-9)
        finally:
            await producer.stop()
