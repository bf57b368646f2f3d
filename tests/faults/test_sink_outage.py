"""Issue 14, scenario 5: a webhook destination down for minutes, then back; and one that never
comes back.

Real processes: the session's Tansu broker and Redis, a `meterguard worker` child delivering
to a real aiohttp receiver run here (tests/support/webhook_receiver.py), which verifies every
request's Standard Webhooks signature with sinks/webhook_verify.py and dedupes by webhook-id.

The stream: 6 identities (a team each: a peer group of one) at 4 calls/min for 100 minutes,
each bursting twice (minutes 62-66 and 82-86), so each raises 4 alerts: firing, resolved,
firing, resolved, the same ids as a replay of the events. Phase 1 is minutes 0-74 (the first
episodes), phase 2 the rest.

Time is scaled: the retry backoff is 0.05 s growing to a 0.5 s ceiling instead of the
production 0.5 s to 60 s (1:120 at the ceiling; MG_SINK_MAX_ATTEMPTS keeps its default). An
outage is measured in attempts, never in seconds: it lasts until each identity's oldest alert
has been tried OUTAGE_ATTEMPTS times, which under the production backoff is the wait of
`production_wait_s(OUTAGE_ATTEMPTS)` (6.5 minutes) and takes a few seconds here.

Synchronisation is by observed state only: the outbox in Redis (pending alerts, attempts of
each identity's head, done ids), the pipeline's counters and the receiver's requests.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import orjson
import pytest

from meterguard.sinks.routing import AlertFilter, Destination, public_url
from meterguard.streams.delivery.outbox import Outbox
from meterguard.streams.tools.embedded import EmbeddedBroker
from tests.support.faults import counted, reference_alert_ids, unique_events
from tests.support.polling import eventually
from tests.support.traffic import series
from tests.support.webhook_receiver import SwitchableReceiver
from tests.support.worker_process import produce, read_topics, start_worker

SECRET = "whsec_" + base64.b64encode(b"meterguard-sink-outage-secret-14").decode()
IDENTITIES = 6
MINUTES, SPLIT = 100, 75  # phase 1: minutes before SPLIT
ALERTS_PER_IDENTITY = 4
OUTAGE_ATTEMPTS = 20  # per identity's oldest alert, 8 against a closed port, the rest 503
REFUSED_ATTEMPTS = 8
BACKOFF = {"MG_SINK_BACKOFF_BASE_S": "0.05", "MG_SINK_BACKOFF_MAX_S": "0.5"}
DEAD_CAP, DEAD_ATTEMPTS = 4, 3  # the never-back destination: outbox cap, attempts
POLL = 0.02  # s between two samples of the outbox (its pending count is sampled throughout)


def production_wait_s(attempts: int, base_s: float = 0.5, max_s: float = 60.0) -> float:
    """Mean wait before attempt `attempts` under the production backoff (full jitter)."""
    return sum(min(max_s, base_s * 2 ** (a - 1)) / 2 for a in range(1, attempts))


def traffic() -> tuple[list[dict], list[dict]]:
    """(phase 1, phase 2): every identity's two bursts; minutes before SPLIT, then the rest."""
    docs = []
    for i in range(IDENTITIES):
        first = series(f"svc-{i}", MINUTES, 4, burst=(62 + i % 3, 64 + i % 3, 120 + 20 * i))
        second = series(f"svc-{i}", MINUTES, 4, burst=(82 + i % 3, 84 + i % 3, 150 + 10 * i))
        docs += [{**d, "team": f"team-{i}"} for d in first if minute(d) < SPLIT]
        docs += [{**d, "team": f"team-{i}"} for d in second if minute(d) >= SPLIT]
    docs.sort(key=lambda d: (d["event_time"], d["event_id"]))
    return [d for d in docs if minute(d) < SPLIT], [d for d in docs if minute(d) >= SPLIT]


def minute(doc: dict) -> int:
    return int(doc["event_id"].rsplit("-", 2)[1])


def destination_key(url: str) -> str:
    return Destination("webhook", url, SECRET, AlertFilter()).key


@dataclass
class PendingSampler:
    """The destination's pending alerts (outbox depth), sampled every POLL seconds."""

    outbox: Outbox
    dest: str
    samples: list[int] = field(default_factory=list)
    first_pending_at: float | None = None  # monotonic: the first sample with an alert queued

    async def run(self) -> None:
        while True:
            self.samples.append(await self.outbox.depth(self.dest))
            if self.samples[-1] and self.first_pending_at is None:
                self.first_pending_at = time.monotonic()
            await asyncio.sleep(POLL)  # a sampling interval, not a synchronisation


@contextlib.asynccontextmanager
async def sampling(outbox: Outbox, dest: str):
    sampler = PendingSampler(outbox, dest)
    task = asyncio.create_task(sampler.run())
    try:
        yield sampler
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def heads(outbox: Outbox, dest: str) -> dict[str, int]:
    """Claimable alerts (each identity's oldest pending one) -> attempts so far."""
    due, att = outbox.keys(dest)[0], outbox.keys(dest)[2]
    ids = await outbox.redis.zrange(due, 0, -1)
    tried = await outbox.redis.hmget(att, ids) if ids else []
    return {i.decode(): int(n or 0) for i, n in zip(ids, tried, strict=True)}


async def held_back(outbox: Outbox, dest: str, queued: int, attempts: int) -> bool:
    """`queued` alerts pending (none delivered), one head per identity, each tried enough."""
    if await outbox.depth(dest) != queued:
        return False
    tried = await heads(outbox, dest)
    return len(tried) == IDENTITIES and min(tried.values()) >= attempts


async def empty(outbox: Outbox, dest: str) -> bool:
    return await outbox.depth(dest) == 0


async def done(outbox: Outbox, dest: str) -> int:
    return int(await outbox.redis.zcard(outbox.keys(dest)[5]))


@dataclass
class OutageFigures:
    """One sink-outage run, as tests/faults/README.md's table lists it."""

    scenario: str
    sent: int
    unique: int
    counted: int
    counted_during_outage: int  # events the pipeline counted while the destination was down
    alert_records: int
    alert_ids: int
    delivered: int  # alert ids the receiver answered 200 for
    delivered_twice: int  # webhook ids the receiver saw again after a 200
    dead_lettered: int  # after the last attempt
    refused_full: int  # dead-lettered at once: the outbox was full
    failed_requests: int  # attempts that failed: refused (closed port), 503, or hung
    max_pending: int
    cap: int
    outage_attempts: int  # attempts of each identity's oldest alert while down
    production_equivalent_s: float  # what those attempts wait under the production backoff
    outage_s: float  # first alert queued -> destination back (this run's wall clock)
    recovery_s: float  # destination back -> everything delivered (or dead-lettered)

    @property
    def lost(self) -> int:
        return self.alert_ids - self.delivered - self.dead_lettered - self.refused_full

    def line(self) -> str:
        figures = {
            **asdict(self),
            "lost": self.lost,
            "outage_s": round(self.outage_s, 1),
            "recovery_s": round(self.recovery_s, 1),
        }
        return "FAULT FIGURES " + orjson.dumps(figures).decode()


def per_identity(alerts: Sequence[dict]) -> dict[str, list[str]]:
    order: dict[str, list[str]] = {}
    for alert in alerts:
        if alert["alert_id"] not in order.setdefault(alert["identity"], []):
            order[alert["identity"]].append(alert["alert_id"])
    return order


def env(url: str, **extra: str) -> dict[str, str]:
    return {"MG_WEBHOOK_URL": url, "MG_WEBHOOK_SECRET": SECRET, "MG_BATCH_SECONDS": "0.2",
            **BACKOFF, **extra}  # fmt: skip


async def test_a_webhook_down_for_minutes_then_back_gets_every_alert_once_in_order(
    broker: EmbeddedBroker, redis_url: str, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
):
    """Phase 1 while the port is closed, phase 2 while it answers 503, then it is back."""
    phase1, phase2 = traffic()
    sent = phase1 + phase2
    cap = 3 * IDENTITIES * ALERTS_PER_IDENTITY  # above the 24 alerts: none is refused
    async with SwitchableReceiver(SECRET, mode="refuse") as siem:
        worker = await start_worker(
            broker, redis_url, tmp_path_factory,
            env(siem.url, MG_SINK_TIMEOUT_S="2", MG_OUTBOX_MAX_PENDING=str(cap)),
        )  # fmt: skip
        settings, dest = worker.settings, destination_key(siem.url)
        outbox = Outbox(worker.store.redis, settings.key_prefix)
        try:
            first = await reference_alert_ids(phase1, settings, tmp_path)
            expected = await reference_alert_ids(sent, settings, tmp_path)
            async with sampling(outbox, dest) as sampler:
                await produce(broker.bootstrap, settings.topic_raw, phase1)
                await worker.wait_counted(unique_events(phase1), ("events_new", "events_late"))
                await eventually(
                    lambda: held_back(outbox, dest, len(first), REFUSED_ATTEMPTS),
                    "phase 1's alerts queued, each identity's oldest refused enough times",
                    log=worker.log,
                )
                await siem.switch("503")
                before = await counted(worker.store)
                await produce(broker.bootstrap, settings.topic_raw, phase2)
                await worker.wait_counted(unique_events(sent), ("events_new", "events_late"))
                during = await counted(worker.store) - before
                assert siem.mode == "503" and not siem.answered(200)  # counted while down
                await eventually(
                    lambda: held_back(outbox, dest, len(expected), OUTAGE_ATTEMPTS),
                    "every alert queued, each identity's oldest tried through the outage",
                    log=worker.log,
                )
                while_down = list(siem.hits)
                attempts_down = sum((await heads(outbox, dest)).values())
                await siem.switch("up")
                back = time.monotonic()
                assert sampler.first_pending_at is not None
                recovered = await eventually(
                    lambda: len(siem.answered(200)) >= len(expected),
                    "every alert delivered",
                    log=worker.log,
                )
                await eventually(lambda: empty(outbox, dest), "an empty outbox")
            topics = await read_topics(settings, [settings.topic_alerts, settings.topic_alerts_dlq])
            alerts = topics[settings.topic_alerts]
            ok = siem.answered(200)
            figures = OutageFigures(
                "webhook down (closed port, then 503), then back",
                sent=len(sent),
                unique=unique_events(sent),
                counted=await counted(worker.store),
                counted_during_outage=during,
                alert_records=len(alerts),
                alert_ids=len({a["alert_id"] for a in alerts}),
                delivered=len({h.alert_id for h in ok}),
                delivered_twice=sum(not h.first for h in ok),
                dead_lettered=len(topics[settings.topic_alerts_dlq]),
                refused_full=0,
                failed_requests=attempts_down,
                max_pending=max(sampler.samples),
                cap=cap,
                outage_attempts=OUTAGE_ATTEMPTS,
                production_equivalent_s=round(production_wait_s(OUTAGE_ATTEMPTS)),
                outage_s=back - sampler.first_pending_at,
                recovery_s=recovered - back,
            )
            print(figures.line())
            # Nothing lost or doubled by the pipeline, and scoring went on while down.
            assert figures.counted == figures.unique and during == unique_events(phase2) > 0
            assert sorted({a["alert_id"] for a in alerts}) == sorted(expected)
            assert len(expected) == IDENTITIES * ALERTS_PER_IDENTITY
            # Every alert delivered exactly once, none dead-lettered, nothing left queued.
            assert Counter(h.alert_id for h in ok) == Counter(expected)
            assert figures.delivered_twice == 0 and figures.dead_lettered == 0
            assert siem.unverified == 0 and figures.lost == 0
            # In order per identity: as published on the alerts topic, by event time.
            delivered = per_identity([{"alert_id": h.alert_id, "identity": h.identity} for h in ok])
            assert delivered == per_identity(alerts)
            for identity in delivered:
                times = [h.event_time for h in ok if h.identity == identity]
                assert times == sorted(times) and len(set(times)) == ALERTS_PER_IDENTITY
            # While down only each identity's oldest alert was tried (head of line).
            oldest = {ids[0] for ids in per_identity(alerts).values()}
            assert {h.alert_id for h in while_down} == oldest
            # Bounded: every alert was pending at once during the outage, never above the cap.
            assert figures.max_pending == len(expected) <= cap
        finally:
            await worker.stop()


async def test_a_webhook_that_never_comes_back_dead_letters_every_alert_with_its_reason(
    broker: EmbeddedBroker, redis_url: str, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
):
    """It first accepts connections and hangs (each identity's oldest alert in flight, so
    nothing leaves the outbox): past DEAD_CAP pending, every newcomer is dead-lettered at
    once as outbox_full. Then it answers 503: the queued alerts die after their attempts."""
    phase1, phase2 = traffic()
    sent = phase1 + phase2
    async with SwitchableReceiver(SECRET, mode="hang") as dead:
        worker = await start_worker(
            broker, redis_url, tmp_path_factory,
            env(dead.url, MG_SINK_TIMEOUT_S="60", MG_SINK_MAX_ATTEMPTS=str(DEAD_ATTEMPTS),
                MG_OUTBOX_MAX_PENDING=str(DEAD_CAP)),
        )  # fmt: skip
        settings, dest = worker.settings, destination_key(dead.url)
        outbox = Outbox(worker.store.redis, settings.key_prefix)
        try:
            expected = await reference_alert_ids(sent, settings, tmp_path)
            async with sampling(outbox, dest) as sampler:
                await produce(broker.bootstrap, settings.topic_raw, sent)
                await worker.wait_counted(unique_events(sent), ("events_new", "events_late"))

                async def every_alert_queued_or_refused() -> bool:
                    pending = await outbox.depth(dest)
                    return pending + await done(outbox, dest) == len(expected)

                await eventually(every_alert_queued_or_refused, "every alert", log=worker.log)
                assert await outbox.depth(dest) == DEAD_CAP and not dead.answered(200)
                await dead.switch("503")
                back = time.monotonic()
                dead.released.set()
                settled = await eventually(
                    lambda: empty(outbox, dest), "an empty outbox", log=worker.log
                )
            topics = await read_topics(settings, [settings.topic_alerts, settings.topic_alerts_dlq])
            alerts = topics[settings.topic_alerts]
            letters = list(topics[settings.topic_alerts_dlq])
            reasons = Counter(d["reason"] for d in letters)
            figures = OutageFigures(
                "webhook never back (hangs, then 503)",
                sent=len(sent),
                unique=unique_events(sent),
                counted=await counted(worker.store),
                counted_during_outage=await counted(worker.store),
                alert_records=len(alerts),
                alert_ids=len({a["alert_id"] for a in alerts}),
                delivered=len({h.alert_id for h in dead.answered(200)}),
                delivered_twice=0,
                dead_lettered=reasons[f"HTTP 503 after {DEAD_ATTEMPTS} attempts"],
                refused_full=reasons["outbox_full"],
                failed_requests=len(dead.answered(503)),
                max_pending=max(sampler.samples),
                cap=DEAD_CAP,
                outage_attempts=DEAD_ATTEMPTS,
                production_equivalent_s=round(production_wait_s(DEAD_ATTEMPTS)),
                outage_s=settled - (sampler.first_pending_at or back),
                recovery_s=settled - back,
            )
            print(figures.line())
            assert figures.counted == figures.unique  # scoring never waited for delivery
            assert sorted({a["alert_id"] for a in alerts}) == sorted(expected)
            # Nothing lost: alerts topic ids == delivered ids ∪ DLQ ids, each letter once.
            assert figures.delivered == 0 and dead.unverified == 0
            dead_ids = Counter(d["alert"]["alert_id"] for d in letters)
            assert dead_ids == Counter(expected) and figures.lost == 0
            assert {d["destination"] for d in letters} == {public_url(dead.url)}
            # Exactly DEAD_CAP were ever queued; each was tried DEAD_ATTEMPTS times.
            assert reasons == {
                "outbox_full": len(expected) - DEAD_CAP,
                f"HTTP 503 after {DEAD_ATTEMPTS} attempts": DEAD_CAP,
            }
            tried = Counter(h.alert_id for h in dead.hits)
            queued = {d["alert"]["alert_id"] for d in letters if d["reason"] != "outbox_full"}
            assert tried == {alert_id: DEAD_ATTEMPTS for alert_id in queued}
            for letter in letters:
                full = letter["reason"] == "outbox_full"
                assert letter["attempts"] == (0 if full else DEAD_ATTEMPTS)
                assert letter["last_status"] == (None if full else 503)
            # In order per identity even while failing: an identity's queued alerts were
            # tried oldest first, each only after the one before it was dead-lettered.
            for identity, ids in per_identity(alerts).items():
                mine = [i for i in ids if i in queued for _ in range(DEAD_ATTEMPTS)]
                assert [h.alert_id for h in dead.hits if h.identity == identity] == mine
            assert figures.max_pending == DEAD_CAP
        finally:
            await worker.stop()
