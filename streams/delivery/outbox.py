"""The durable delivery queue in Redis: every Redis command of alert delivery is here.

Per destination `d` (a secret-free key such as `webhook-3f2a…`; the `{d}` hash tag keeps a
destination's keys in one Redis Cluster slot, so each script touches them atomically):

    {prefix}:outbox:{d}:due    zset  alert_id -> ms when claimable (due time, or lease expiry)
    {prefix}:outbox:{d}:alert  hash  alert_id -> Alert JSON (every pending alert: the depth)
    {prefix}:outbox:{d}:att    hash  alert_id -> attempts so far (counted at claim)
    {prefix}:outbox:{d}:enq    hash  alert_id -> enqueue ms (delivery latency)
    {prefix}:outbox:{d}:lease  hash  alert_id -> token of the claim in flight
    {prefix}:outbox:{d}:done   zset  alert_id -> ms delivered or dead-lettered (kept 48 h)
    {prefix}:outbox:{d}:next   hash  alert_id -> the same identity's next pending alert
    {prefix}:outbox:{d}:tail   hash  identity -> its newest pending alert
    {prefix}:outbox:{d}:idn    hash  alert_id -> identity (ordered alerts)

Slack Web API threads (one top-level message per episode, shared by every worker):

    {prefix}:slack-thread:{d}:{episode}  string  ts of the episode's message (7 days)

Order per identity: an ordered item (webhooks) is claimable only once every older pending
alert of its identity for that destination is finished (head of line per identity: see
outbox_scripts.py), so a retry cannot let a newer alert overtake an older one, while
different identities never wait for each other. A dead-lettered head is finished like a
delivered one: the identity's later alerts continue, in order.

Bounded: at most `max_pending` alerts per destination. A full outbox refuses the newcomer
(`Enqueued.refused`), which the caller dead-letters with reason "outbox_full" and then
finishes, so a Kafka redelivery does not queue it again. The newest are refused rather than
the oldest evicted: the oldest may be in flight right now (evicting it could deliver it and
dead-letter it both), and an identity's queued alerts keep their order untouched.

A claim pushes the item's score to the lease expiry, so a worker that dies mid-delivery
loses nothing: the item is due again when the lease runs out. `done` makes enqueue a no-op
for an alert already handled, so a Kafka redelivery or a second worker never sends twice.
Wall clock throughout: delivery is I/O, outside the replay-determinism contract.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import redis.asyncio as aioredis
from pydantic import ValidationError

from meterguard.models import Alert
from meterguard.sinks.base import Ack, GiveUp, Outcome, Reschedule, RetryPolicy
from meterguard.streams.delivery import outbox_scripts

log = logging.getLogger("meterguard.outbox")
PARTS = ("due", "alert", "att", "enq", "lease", "done", "next", "tail", "idn")
DONE, PENDING = 5, 1  # indices in PARTS


class Item(NamedTuple):
    """One alert for one destination. `ordered`: after the identity's older alerts there."""

    alert: Alert
    dest: str
    hold_s: float = 0.0
    ordered: bool = True


@dataclass(frozen=True)
class Enqueued:
    new: int
    refused: list[Item]  # the outbox was full: for the alerts DLQ (reason "outbox_full")


@dataclass(frozen=True)
class Claimed:
    alert: Alert
    attempts: int  # including the one about to be made
    enqueued_ms: int
    token: str


@dataclass(frozen=True)
class Settled:
    delivered: list[Claimed]
    dead: list[tuple[Claimed, GiveUp]]  # still in the outbox: dead-letter, then finish()
    rescheduled: int


class Outbox:
    def __init__(
        self,
        client: aioredis.Redis,
        prefix: str,
        lease_s: float = 60.0,
        done_horizon_s: float = 48 * 3600,
        clock: Callable[[], float] = time.time,
        max_pending: int = 0,  # per destination; 0: unbounded
    ) -> None:
        self.redis = client
        self.prefix = prefix
        self.lease_ms = int(lease_s * 1000)
        self.done_horizon_ms = int(done_horizon_s * 1000)
        self.max_pending = max_pending
        self._clock = clock
        self._enqueue = client.register_script(outbox_scripts.ENQUEUE)
        self._claim = client.register_script(outbox_scripts.CLAIM)
        self._finish = client.register_script(outbox_scripts.FINISH)
        self._reschedule = client.register_script(outbox_scripts.RESCHEDULE)

    def keys(self, dest: str) -> list[str]:
        return [f"{self.prefix}:outbox:{{{dest}}}:{part}" for part in PARTS]

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    async def enqueue(self, items: Sequence[Item | tuple[Alert, str, float]]) -> Enqueued:
        """Items (alert, destination, hold seconds[, ordered]) in one round trip, in order."""
        queued = [Item(*item) for item in items]
        if not queued:
            return Enqueued(0, [])
        now = self._now_ms()
        async with self.redis.pipeline(transaction=False) as pipe:
            for alert, dest, hold_s, ordered in queued:
                args: list[str | int] = [
                    alert.alert_id,
                    alert.model_dump_json(),
                    now,
                    now + int(hold_s * 1000),
                    alert.identity,
                    int(ordered),
                    self.max_pending,
                ]
                await self._enqueue(keys=self.keys(dest), args=args, client=pipe)
            replies = [int(r) for r in await pipe.execute()]
        refused = [item for item, r in zip(queued, replies, strict=True) if r < 0]
        return Enqueued(sum(r for r in replies if r > 0), refused)

    async def claim(self, dest: str, limit: int) -> list[Claimed]:
        """Due items, leased to the caller until the lease runs out."""
        now, token = self._now_ms(), uuid.uuid4().hex
        args: list[str | int] = [now, now + self.lease_ms, limit, token]
        rows = await self._claim(keys=self.keys(dest), args=args)
        claimed, corrupt = [], []
        for alert_id, raw, attempts, enqueued in rows:
            try:
                alert = Alert.model_validate_json(raw)
            except ValidationError as exc:  # written by an incompatible version: undeliverable
                log.error("outbox %s: dropping unreadable alert %s: %s", dest, alert_id, exc)
                corrupt.append(alert_id.decode())
                continue
            claimed.append(Claimed(alert, int(attempts), int(enqueued), token))
        await self.finish(dest, corrupt)
        return claimed

    async def finish(self, dest: str, alert_ids: Sequence[str]) -> None:
        """Delivered or dead-lettered: out of the queue, and remembered as done."""
        if alert_ids:
            now = self._now_ms()
            args: list[str | int] = [now, now - self.done_horizon_ms, *alert_ids]
            await self._finish(keys=self.keys(dest), args=args)

    async def reschedule(self, dest: str, token: str, delays: Sequence[tuple[str, float]]) -> int:
        if not delays:
            return 0
        now = self._now_ms()
        args: list[str | int] = [token]
        for alert_id, delay_s in delays:
            args += [alert_id, now + int(delay_s * 1000)]
        return int(await self._reschedule(keys=self.keys(dest), args=args))

    async def settle(
        self,
        dest: str,
        claimed: Sequence[Claimed],
        outcomes: Sequence[Outcome],
        policy: RetryPolicy,
    ) -> Settled:
        """Ack the delivered, reschedule the retries; return the ones to dead-letter."""
        delivered: list[Claimed] = []
        dead: list[tuple[Claimed, GiveUp]] = []
        later: dict[str, list[tuple[str, float]]] = {}
        for item, outcome in zip(claimed, outcomes, strict=True):
            step = policy.next_step(outcome, item.attempts)
            if isinstance(step, Ack):
                delivered.append(item)
            elif isinstance(step, Reschedule):
                later.setdefault(item.token, []).append((item.alert.alert_id, step.delay_s))
            else:
                dead.append((item, step))
        await self.finish(dest, [c.alert.alert_id for c in delivered])
        moved = 0
        for token, delays in later.items():
            moved += await self.reschedule(dest, token, delays)
        return Settled(delivered, dead, moved)

    async def depth(self, dest: str) -> int:
        """Pending alerts: due, in flight, or waiting behind their identity's older ones."""
        return int(await self.redis.hlen(self.keys(dest)[PENDING]))

    async def next_due_in(self, dest: str) -> float | None:
        """Seconds until the earliest item is claimable (0 if one is due); None if empty."""
        first = await self.redis.zrange(self.keys(dest)[0], 0, 0, withscores=True)
        if not first:
            return None
        return max(0.0, (float(first[0][1]) - self._now_ms()) / 1000)

    async def is_done(self, dest: str, alert_id: str) -> bool:
        return await self.redis.zscore(self.keys(dest)[DONE], alert_id) is not None


class SlackThreads:
    """sinks.slack_api.ThreadStore in Redis: episode key -> ts of its top-level message.

    Seven days outlive any episode worth threading; an older episode that fires again just
    starts a new message.
    """

    def __init__(self, client: aioredis.Redis, prefix: str, dest: str, ttl_s: int = 7 * 86400):
        self.redis = client
        self.base = f"{prefix}:slack-thread:{dest}:"
        self.ttl_s = ttl_s

    async def get_many(self, keys: Sequence[str]) -> list[str | None]:
        if not keys:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.get(self.base + key)
            values = await pipe.execute()
        return [v.decode() if isinstance(v, bytes) else v for v in values]

    async def put(self, key: str, ts: str) -> None:
        await self.redis.set(self.base + key, ts, ex=self.ttl_s)
