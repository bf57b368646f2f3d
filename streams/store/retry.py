"""Riding out a Redis blip: retry an idempotent Redis call with backoff instead of dying.

Used by the agents (scoring batches, counters, outbox enqueues): a restart of Redis or a
failover must not kill a Faust agent, and every call retried here is safe to repeat.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis.exceptions

T = TypeVar("T")

# What "Redis is unavailable" looks like: redis-py's own errors and the OS-level ones that
# can escape it (a refused or reset socket, an asyncio timeout).
REDIS_UNAVAILABLE: tuple[type[Exception], ...] = (
    ConnectionError,
    TimeoutError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)
FIRST_DELAY_S = 0.2
MAX_DELAY_S = 5.0

_log = logging.getLogger("meterguard.store")


async def retrying(
    call: Callable[[], Awaitable[T]],
    attempts: int = 30,
    *,
    log: logging.Logger = _log,
    what: str = "retry",
) -> T:
    """`await call()`, again after 0.2 s, 0.4 s, ... (at most 5 s apart) while Redis is
    unavailable; the error of the last of `attempts` calls propagates."""
    delay = FIRST_DELAY_S
    for attempt in range(1, attempts):
        try:
            return await call()
        except REDIS_UNAVAILABLE as exc:
            log.warning("redis unavailable (%s); %s %d in %.1fs", exc, what, attempt, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_DELAY_S)
    return await call()
