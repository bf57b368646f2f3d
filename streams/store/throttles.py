"""Throttle arbitration: the gateway keys, one active command per identity.

Keys:

    {prefix}:throttle:{<identity>} active ThrottleCommand JSON, TTL = its expiry (one GET per
                                  gateway request)
    {prefix}:{<identity>}:released hash: alert_id -> operator release command id (read here,
                                  written by operator_actions.py)
    {prefix}:throttle-changes     pub/sub channel: every change of a throttle key (SSE feed)

Script: apply_throttle.lua, which decides which throttle wins.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime

import redis.asyncio as aioredis

from meterguard.models import ThrottleCommand
from meterguard.streams.store.keys import SCAN_COUNT, KeyLayout, load_script


class Throttles:
    def __init__(self, client: aioredis.Redis, keys: KeyLayout) -> None:
        self._redis = client
        self._keys = keys
        self._apply = load_script(client, "apply_throttle.lua")

    async def apply(
        self, commands: Sequence[ThrottleCommand], now: datetime
    ) -> list[ThrottleCommand]:
        """Write the gateway keys (one script per command, one round trip, in order) and
        return the commands the feed accepted; see apply_throttle.lua for the rules."""
        if not commands:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for command in commands:
                ttl_ms = math.floor((command.expires_at - now).total_seconds() * 1000)
                args: list[str | int] = [
                    command.action,
                    command.alert_id or "",
                    command.model_dump_json(),
                    ttl_ms,
                    command.command_id,
                    command.version,
                    self._keys.throttle_channel,
                ]
                keys = [
                    self._keys.throttle_key(command.identity),
                    self._keys.identity_key(command.identity, "released"),
                ]
                await self._apply(keys=keys, args=args, client=pipe)
            replies = await pipe.execute()
        return [c for c, ok in zip(commands, replies, strict=True) if ok]

    async def active(self) -> list[ThrottleCommand]:
        """Every active command of the namespace, by identity and version (a SCAN)."""
        keys = [
            k
            async for k in self._redis.scan_iter(
                match=self._keys.throttle_pattern, count=SCAN_COUNT
            )
        ]
        # GETs in one pipeline, not MGET: on Redis Cluster the keys live in many slots.
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.get(key)
            values = await pipe.execute()
        commands = [ThrottleCommand.model_validate_json(v) for v in values if v]
        return sorted(commands, key=lambda c: (c.identity, c.version))

    async def active_for(self, identity: str) -> ThrottleCommand | None:
        raw = await self._redis.get(self._keys.throttle_key(identity))
        return ThrottleCommand.model_validate_json(raw) if raw else None
