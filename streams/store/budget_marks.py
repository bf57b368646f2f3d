"""Group budgets' marks: each warning fraction, the cap and each member's command at most
once per group and period, across restarts and workers (policy/group_budgets.py names the
marks; this module remembers them).

Keys:

    {prefix}:budget-marks:{<dim>|<value>}:<period start ms>
        hash: mark ("a|0.8", "a|cap", "c|<identity>") -> "s" (published) or "p<ms>" (claimed
        at that wall-clock ms, not confirmed yet); expires 2 periods + the dedupe horizon
        after its last write

`<value>` is percent-encoded as in the roll-ups' keys. Redis Cluster: the hash tag is the
group's, `{<dim>|<value>}`, shared with its roll-up and `rollup-members` (one slot), and
budget_marks.lua touches this one key only.

Two steps, so a crash never loses an alert or a command: `claim` (budget_marks.lua) before
publishing marks what the caller will publish as claimed; `confirm` once it was published
makes it final. A claim left unconfirmed for `LEASE_MS` (its worker stopped between the two)
may be claimed again by whoever evaluates the group next: the same ids are published again,
which the alert outbox and the throttle arbitration take as the same alert and command. A
live worker's unconfirmed claim is left alone for the lease, so two workers evaluating one
team do not both publish; after the lease the worst case is one repeat of the same id.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import quote

import redis.asyncio as aioredis

from meterguard.streams.store.keys import KeyLayout, StoreConfig, load_script, text

# How long a claimed mark waits for its claimer's confirmation before another evaluation may
# publish it again (wall clock; a batch is claimed and confirmed within seconds).
LEASE_MS = 60_000
PUBLISHED = "s"


@dataclass(frozen=True)
class MarkKey:
    """One group's period: the hash of its marks."""

    dimension: str
    value: str
    period_start_ms: int
    ttl_s: int


@dataclass(frozen=True)
class Claim:
    """Marks claimed in one group's period, to confirm once published."""

    key: MarkKey
    marks: tuple[str, ...]


class BudgetMarks:
    def __init__(
        self,
        client: aioredis.Redis,
        config: StoreConfig,
        keys: KeyLayout,
        lease_ms: int | None = None,
    ) -> None:
        self._redis = client
        self._config = config
        self._keys = keys
        self.lease_ms = LEASE_MS if lease_ms is None else lease_ms
        self._claim = load_script(client, "budget_marks.lua")

    def key(self, mark_key: MarkKey) -> str:
        tag = f"{mark_key.dimension}|{quote(mark_key.value, safe='')}"
        return f"{self._keys.prefix}:budget-marks:{{{tag}}}:{mark_key.period_start_ms}"

    def ttl_s(self, period_ms: int) -> int:
        """Marks outlive their period twice over, and a redelivery within the dedupe horizon."""
        return 2 * period_ms // 1000 + self._config.dedupe_horizon_s

    async def published(self, keys: Sequence[MarkKey]) -> list[set[str]]:
        """Per group's period, the marks already published (one round trip)."""
        if not keys:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for mark_key in keys:
                pipe.hgetall(self.key(mark_key))
            replies = await pipe.execute()
        return [
            {text(m) for m, state in reply.items() if text(state) == PUBLISHED} for reply in replies
        ]

    async def claim(self, wanted: Mapping[MarkKey, Sequence[str]], now_ms: int) -> list[Claim]:
        """Claim the wanted marks (one script per group's period, one round trip); returns
        those claimed now: the caller publishes them, then `confirm`s."""
        items = [(k, list(marks)) for k, marks in wanted.items() if marks]
        if not items:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for mark_key, marks in items:
                args: list[str | int] = [now_ms, self.lease_ms, mark_key.ttl_s, *marks]
                await self._claim(keys=[self.key(mark_key)], args=args, client=pipe)
            replies = await pipe.execute()
        return [
            Claim(mark_key, tuple(text(m) for m in reply))
            for (mark_key, _), reply in zip(items, replies, strict=True)
            if reply
        ]

    async def confirm(self, claims: Sequence[Claim]) -> None:
        """The claimed marks were published: final."""
        if not claims:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for claim in claims:
                key = self.key(claim.key)
                pipe.hset(key, mapping=dict.fromkeys(claim.marks, PUBLISHED))
                pipe.expire(key, claim.key.ttl_s)
            await pipe.execute()
