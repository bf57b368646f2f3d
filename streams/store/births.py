"""Identities seen for the first time, counted per event-time minute: the identity-flood
detector's input (detectors/identity_flood.py).

    {prefix}:rollup-index:identity  set: every identity seen (the same set `report` lists:
                                    store/rollups.py; SADD answers whether one is new)
    {prefix}:births                 hash: epoch minute -> identities first seen in it; kept
                                    BIRTHS_TTL_S after its last change
    {prefix}:births-since           string: the earliest minute with a birth (no TTL: the
                                    namespace's age, which arms the detector)

A birth is counted by whoever adds the identity to the set first, so exactly once across
workers and redeliveries. Both keys are single keys (one slot each on Redis Cluster).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

import redis.asyncio as aioredis

from meterguard.streams.store.keys import KeyLayout

# The detector looks back an hour or so (policy identity_flood.history_minutes, at most a
# day): keep a day of minutes, and no more, whatever the flood.
BIRTHS_TTL_S = 24 * 3600


class Births:
    def __init__(self, client: aioredis.Redis, keys: KeyLayout) -> None:
        self._redis = client
        self.index_key = f"{keys.prefix}:rollup-index:identity"
        self.births_key = f"{keys.prefix}:births"
        self.since_key = f"{keys.prefix}:births-since"

    async def note(
        self, first_minute: Mapping[str, int], window: int
    ) -> tuple[list[str], dict[int, tuple[int, int]], dict[int, list[int]], int | None]:
        """Record the identities of `first_minute` (identity -> the minute of its first event
        in this batch) that are new. Returns the new ones, per minute their births before and
        after this batch, per such minute the births of the `window` minutes before it, and
        the namespace's first minute with a birth."""
        candidates = sorted(first_minute)
        if not candidates:
            return [], {}, {}, None
        async with self._redis.pipeline(transaction=False) as pipe:
            for identity in candidates:
                pipe.sadd(self.index_key, identity)
            added = await pipe.execute()
        born = [i for i, new in zip(candidates, added, strict=True) if int(new)]
        if not born:
            return [], {}, {}, None
        per_minute = Counter(first_minute[i] for i in born)
        minutes = sorted(per_minute)
        async with self._redis.pipeline(transaction=False) as pipe:
            for minute in minutes:
                pipe.hincrby(self.births_key, str(minute), per_minute[minute])
            pipe.expire(self.births_key, BIRTHS_TTL_S)
            pipe.set(self.since_key, minutes[0], nx=True)
            pipe.get(self.since_key)
            for minute in minutes:
                pipe.hmget(self.births_key, [str(m) for m in range(minute - window, minute)])
            replies = await pipe.execute()
        after = replies[: len(minutes)]
        since = int(replies[len(minutes) + 2])
        histories = replies[len(minutes) + 3 :]
        counts = {m: (int(a) - per_minute[m], int(a)) for m, a in zip(minutes, after, strict=True)}
        windows = {
            m: [int(v) if v is not None else 0 for v in h]
            for m, h in zip(minutes, histories, strict=True)
        }
        # A birth at a minute before `since` (a late one) moves it back.
        if minutes[0] < since:
            await self._redis.set(self.since_key, minutes[0])
            since = minutes[0]
        return born, counts, windows, since

    async def per_minute(self, minutes: Iterable[int]) -> dict[int, int]:
        wanted = list(minutes)
        values = await self._redis.hmget(self.births_key, [str(m) for m in wanted])
        return {m: int(v) for m, v in zip(wanted, values, strict=True) if v is not None}
