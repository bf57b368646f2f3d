"""Riding out a Redis blip: retry an idempotent Redis call with backoff instead of dying.

Used by the agents (scoring batches, counters, outbox enqueues): a restart of Redis or a
failover must not kill a Faust agent, and every call retried here is safe to repeat.

By default a call is retried until Redis answers, however long it is away. Giving up would
lose the agent's batch: Faust's `take`/`take_events` ack a batch's events in a `finally`
when the agent raises (faust/streams.py), the supervisor restarts the agent on the next
records, and the failed batch's offsets get committed, never to be read again. A worker
waiting for Redis loses nothing, says so in its log and answers /readyz with 503.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis.exceptions

T = TypeVar("T")

# What "Redis is unavailable" looks like: redis-py's own errors and the OS-level ones that
# can escape it (a refused or reset socket, an asyncio timeout), and on Redis Cluster a
# failover or resharding in progress once redis-py's own retries ran out: CLUSTERDOWN and
# MASTERDOWN (ClusterError), TRYAGAIN, a slot no node serves yet, no node reachable.
REDIS_UNAVAILABLE: tuple[type[Exception], ...] = (
    ConnectionError,
    TimeoutError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ClusterError,
    redis.exceptions.TryAgainError,
    redis.exceptions.SlotNotCoveredError,
    redis.exceptions.RedisClusterUnreachableError,
)
FIRST_DELAY_S = 0.2
MAX_DELAY_S = 5.0

_log = logging.getLogger("meterguard.store")


async def retrying(
    call: Callable[[], Awaitable[T]],
    attempts: int | None = None,
    *,
    log: logging.Logger = _log,
    what: str = "retry",
) -> T:
    """`await call()`, again after 0.2 s, 0.4 s, ... (at most 5 s apart) while Redis is
    unavailable: until it answers, or (`attempts` given) the error of the last of `attempts`
    calls propagates."""
    delay = FIRST_DELAY_S
    attempt = 0
    while attempts is None or attempt < attempts - 1:
        attempt += 1
        try:
            return await call()
        except REDIS_UNAVAILABLE as exc:
            log.warning("redis unavailable (%s); %s %d in %.1fs", exc, what, attempt, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_DELAY_S)
    return await call()
