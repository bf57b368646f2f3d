"""What an operator does by hand: release a throttle, and the audit log of such actions.

Keys:

    {prefix}:throttle:{<identity>} active ThrottleCommand JSON (deleted by a release)
    {prefix}:{<identity>}:released hash: alert_id -> operator release command id, so the
                                  alert's renewals stay released (apply_throttle.lua)
    {prefix}:throttle-changes     pub/sub channel: the release is published (SSE feed)
    {prefix}:audit                list: operator actions, newest first (RECENT_AUDIT kept)

Script: operator_release.lua (compare-and-delete on the command the operator saw).
"""

from __future__ import annotations

from typing import Any

import orjson
import redis.asyncio as aioredis

from meterguard.models import AuditEvent, ThrottleCommand
from meterguard.streams.store.keys import KeyLayout, StoreConfig, load_script

RECENT_AUDIT = 1000  # newest operator actions kept for GET /api/audit


class OperatorActions:
    def __init__(self, client: aioredis.Redis, config: StoreConfig, keys: KeyLayout) -> None:
        self._redis = client
        self._config = config
        self._keys = keys
        self._release = load_script(client, "operator_release.lua")

    async def release(self, held: ThrottleCommand, release: ThrottleCommand) -> int:
        """Delete `held` if it is still the active command. 1 released, 0 no command any more,
        -1 another command replaced it meanwhile (the caller re-reads and decides again)."""
        keys = [
            self._keys.throttle_key(held.identity),
            self._keys.identity_key(held.identity, "released"),
        ]
        args: list[str | int] = [
            held.command_id,
            held.alert_id or "",
            release.command_id,
            self._config.ttl_s,
            self._keys.throttle_channel,
            release.model_dump_json(),
        ]
        return int(await self._release(keys=keys, args=args))

    async def record_audit(self, event: AuditEvent) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.lpush(self._keys.audit_key, event.model_dump_json())
            pipe.ltrim(self._keys.audit_key, 0, RECENT_AUDIT - 1)
            await pipe.execute()

    async def recent_audit(self, limit: int) -> list[dict[str, Any]]:
        raw = await self._redis.lrange(self._keys.audit_key, 0, limit - 1)
        return [orjson.loads(item) for item in raw]
