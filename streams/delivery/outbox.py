"""The durable delivery queue in Redis: every Redis command of alert delivery is here.

Per destination `d` (a secret-free key such as `webhook-3f2a…`; the `{d}` hash tag keeps a
destination's keys in one Redis Cluster slot, so each script touches them atomically):

    {prefix}:outbox:{d}:due    zset  alert_id -> ms when claimable (due time, or lease expiry)
    {prefix}:outbox:{d}:alert  hash  alert_id -> Alert JSON
    {prefix}:outbox:{d}:att    hash  alert_id -> attempts so far (counted at claim)
    {prefix}:outbox:{d}:enq    hash  alert_id -> enqueue ms (delivery latency)
    {prefix}:outbox:{d}:lease  hash  alert_id -> token of the claim in flight
    {prefix}:outbox:{d}:done   zset  alert_id -> ms delivered or dead-lettered (kept 48 h)

Slack Web API threads (one top-level message per episode, shared by every worker):

    {prefix}:slack-thread:{d}:{episode}  string  ts of the episode's message (7 days)

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

import redis.asyncio as aioredis
from pydantic import ValidationError

from meterguard.models import Alert
from meterguard.sinks.base import Ack, GiveUp, Outcome, Reschedule, RetryPolicy

log = logging.getLogger("meterguard.outbox")
PARTS = ("due", "alert", "att", "enq", "lease", "done")

_ENQUEUE = """
if redis.call('ZSCORE', KEYS[6], ARGV[1]) then return 0 end
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('HSET', KEYS[3], ARGV[1], 0)
redis.call('HSET', KEYS[4], ARGV[1], ARGV[3])
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1])
return 1
"""

_CLAIM = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(ids) do
  local alert = redis.call('HGET', KEYS[2], id)
  if alert then
    redis.call('ZADD', KEYS[1], ARGV[2], id)
    redis.call('HSET', KEYS[5], id, ARGV[4])
    local n = redis.call('HINCRBY', KEYS[3], id, 1)
    out[#out + 1] = {id, alert, n, redis.call('HGET', KEYS[4], id) or '0'}
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return out
"""

# Unconditional: a delivered alert is delivered even if our lease ran out meanwhile.
_FINISH = """
for i = 3, #ARGV do
  redis.call('ZREM', KEYS[1], ARGV[i])
  for k = 2, 5 do redis.call('HDEL', KEYS[k], ARGV[i]) end
  redis.call('ZADD', KEYS[6], ARGV[1], ARGV[i])
end
redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', ARGV[2])
return #ARGV - 2
"""

# Only the holder of the current lease may reschedule: after a lease ran out and another
# worker claimed the item, the stale worker's retry must not move it.
_RESCHEDULE = """
local n = 0
for i = 2, #ARGV, 2 do
  if redis.call('HGET', KEYS[5], ARGV[i]) == ARGV[1] then
    redis.call('ZADD', KEYS[1], 'XX', ARGV[i + 1], ARGV[i])
    redis.call('HDEL', KEYS[5], ARGV[i])
    n = n + 1
  end
end
return n
"""


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
    ) -> None:
        self.redis = client
        self.prefix = prefix
        self.lease_ms = int(lease_s * 1000)
        self.done_horizon_ms = int(done_horizon_s * 1000)
        self._clock = clock
        self._enqueue = client.register_script(_ENQUEUE)
        self._claim = client.register_script(_CLAIM)
        self._finish = client.register_script(_FINISH)
        self._reschedule = client.register_script(_RESCHEDULE)

    def keys(self, dest: str) -> list[str]:
        return [f"{self.prefix}:outbox:{{{dest}}}:{part}" for part in PARTS]

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    async def enqueue(self, items: Sequence[tuple[Alert, str, float]]) -> int:
        """(alert, destination, hold seconds) items, one round trip; returns how many were new."""
        if not items:
            return 0
        now = self._now_ms()
        async with self.redis.pipeline(transaction=False) as pipe:
            for alert, dest, hold_s in items:
                args: list[str | int] = [
                    alert.alert_id,
                    alert.model_dump_json(),
                    now,
                    now + int(hold_s * 1000),
                ]
                await self._enqueue(keys=self.keys(dest), args=args, client=pipe)
            replies = await pipe.execute()
        return sum(int(r) for r in replies)

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
        return int(await self.redis.zcard(self.keys(dest)[0]))

    async def next_due_in(self, dest: str) -> float | None:
        """Seconds until the earliest item is claimable (0 if one is due); None if empty."""
        first = await self.redis.zrange(self.keys(dest)[0], 0, 0, withscores=True)
        if not first:
            return None
        return max(0.0, (float(first[0][1]) - self._now_ms()) / 1000)

    async def is_done(self, dest: str, alert_id: str) -> bool:
        return await self.redis.zscore(self.keys(dest)[5], alert_id) is not None


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
