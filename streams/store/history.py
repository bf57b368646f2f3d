"""Recent history for the dashboard, the API and the demo: newest alerts, hourly rankings.

Keys (written in the checkpoint round trip of Windows.commit, read here):

    {prefix}:alerts:recent        list: alert JSON, newest first (RECENT_ALERTS kept)
    {prefix}:{top}:tokens:<hour>  zset per event-time hour: identity -> tokens counted (26 h)
    {prefix}:{top}:cost:<hour>    zset per event-time hour: identity -> nano-USD counted (26 h)
    {prefix}:{top}:hours          zset: the hours those exist for (the rankings' "now")
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

import orjson
import redis.asyncio as aioredis

from meterguard.models import Alert
from meterguard.streams.store.keys import KeyLayout, text

RECENT_ALERTS = 1000  # newest alerts kept for GET /api/alerts
TOP_TTL_S = 26 * 3600  # hourly rankings kept a day (+2 h), from their last write


class History:
    def __init__(self, client: aioredis.Redis, keys: KeyLayout) -> None:
        self._redis = client
        self._keys = keys

    # -- writes, queued on the checkpoint's pipeline -----------------------------------------
    def queue_usage(
        self, pipe: aioredis.client.Pipeline, usage: Mapping[tuple[str, int], Sequence[int]]
    ) -> None:
        """Add (identity, hour) -> (tokens, cost) to the hourly rankings."""
        hours = set()
        for (identity, hour), (tokens, cost) in usage.items():
            hours.add(hour)
            if tokens:
                pipe.zincrby(self._keys.top_key("tokens", hour), tokens, identity)
            if cost:
                pipe.zincrby(self._keys.top_key("cost", hour), cost, identity)
        for hour in hours:
            for what in ("tokens", "cost"):
                pipe.expire(self._keys.top_key(what, hour), TOP_TTL_S)
            pipe.zadd(self._keys.top_key("hours"), {str(hour): hour})
        if hours:  # the index only needs the hours a ranking can still read
            pipe.zremrangebyscore(
                self._keys.top_key("hours"), "-inf", max(hours) - TOP_TTL_S // 3600
            )

    def queue_alerts(self, pipe: aioredis.client.Pipeline, alerts: Iterable[Alert]) -> None:
        recent = [a.model_dump_json() for a in alerts]
        if recent:
            pipe.lpush(self._keys.alerts_key, *recent)
            pipe.ltrim(self._keys.alerts_key, 0, RECENT_ALERTS - 1)

    # -- reads --------------------------------------------------------------------------------
    async def recent_alerts(self, limit: int) -> list[dict[str, Any]]:
        raw = await self._redis.lrange(self._keys.alerts_key, 0, limit - 1)
        return [orjson.loads(item) for item in raw]

    async def newest_hour(self) -> int | None:
        """The newest event-time hour the rankings hold (their "now", and the dashboard's);
        None before any usage was counted."""
        newest = await self._redis.zrevrange(self._keys.top_key("hours"), 0, 0)
        return int(cast(bytes, newest[0])) if newest else None

    async def top_identities(self, n: int, hours: int = 2) -> list[tuple[str, float]]:
        """The `n` identities with the most tokens in the newest `hours` event-time hours
        (the newest one is still filling up), highest first."""
        return await self._ranking("tokens", n, hours)

    async def top_by_cost(self, n: int, hours: int = 2) -> list[tuple[str, float]]:
        """As top_identities, by cost in nano-USD."""
        return await self._ranking("cost", n, hours)

    async def _ranking(self, what: str, n: int, hours: int) -> list[tuple[str, float]]:
        newest = await self._redis.zrevrange(self._keys.top_key("hours"), 0, 0)
        if not newest:
            return []
        last = int(cast(bytes, newest[0]))
        keys = [self._keys.top_key(what, h) for h in range(last - hours + 1, last + 1)]
        # ZUNION returns every member; the top n of a few hours' identities is cheap to pick.
        raw = await self._redis.zunion(keys, withscores=True)
        pairs = cast(list[tuple[bytes, float]], raw)  # redis-py types the reply loosely
        ranked = sorted(((text(k), float(s)) for k, s in pairs), key=lambda p: (-p[1], p[0]))
        return ranked[:n]
