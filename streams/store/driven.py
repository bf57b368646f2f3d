"""Root-caller attribution: the cost each identity's calls caused other identities to spend.

Every traced span is credited once to the identity at the root of its chain of parents (the
trace's root span; trace.lua decides, store/traces.py drives it). The *cost driven* of X in
an event-time hour is the calls, tokens, cost and errors of the spans of that hour whose root
is X and whose own identity is not X: what X's calls made other agents and keys spend. X's own
spans, even deep in its traces (a cycle back into X), are its own cost, never driven.

Keys:

    {prefix}:rollup:{driven|<root>}          hash: h<hour> -> "calls,in,out,cached,cost_nano,
                                             errors" (a roll-up dimension `driven`, the root
                                             percent-encoded: store/rollups.py reads it as any
                                             other dimension); ROLLUP_TTL_S after its last credit
    {prefix}:rollup:{driven|<root>}:applied  zset: "<trace_id>\\t<span_id>" -> applied at (ms),
                                             remembered for the dedupe horizon
    {prefix}:rollup-index:driven             set: the roots credited so far
    {prefix}:trace:{<trace_id>}:credits      hash: span_id -> "root\\thour\\trow": credits made
                                             by trace.lua, not applied yet (store/traces.py)

Read API (the report):

    store.traces.driven(identity, first_hour, last_hour) -> {hour: MinuteWindow}, the cost
        driven per event-time hour (MinuteWindow.minute = hour * 60, as roll-up hours);
        the same rows: store.rollups.rows("driven", identity).hours
    store.traces.driven_identities() -> the roots with any (= store.rollups.values("driven"))
    own cost per hour: store.rollups.rows("identity", identity).hours (late events included)

Exactly once across hash slots (a trace's keys and a root's roll-up are in different slots on
Redis Cluster, so no script can do both):

1. trace.lua credits a span in the same atomic step that marks it credited (deletes its
   waiting row) and writes the credit into the trace's `credits` hash; every call returns
   all credits waiting there.
2. `Driven.apply` adds each credit to its root's hours with driven.lua, which records the
   token `<trace_id>\\t<span_id>` in the roll-up's own slot in the same step and refuses a
   token it holds: a credit is added at most once, however often it is applied.
3. Only then are the credits deleted from the `credits` hash.

A crash after 1 leaves the credits waiting: the trace's next call (the redelivery of the
same spans, or any other span of the trace, on any worker) returns them, and `Traces.sweep`
applies what traces that never come back left (the hash outlives the dedupe horizon). A crash
after 2 applies them again: refused. Two workers whose batches touch one trace both see its
waiting credits; the tokens let one count. A redelivery after the trace's call tree expired
(1 h of silence) links and credits the spans again: the tokens (48 h) refuse them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote

import redis.asyncio as aioredis

from meterguard.detectors.features import MinuteWindow
from meterguard.models import utc_now
from meterguard.streams.store.keys import KeyLayout, StoreConfig, load_script, text, unpack_row
from meterguard.streams.store.rollups import ROLLUP_TTL_S
from meterguard.timeutil import to_ms

DIMENSION = "driven"


@dataclass(frozen=True)
class Credit:
    """One span's usage, credited to the root identity of its chain (trace.lua's reply)."""

    trace_id: str
    span_id: str
    root: str
    hour: int  # epoch hour of the span's event time
    row: str  # packed "calls,input,output,cached,cost_nano,errors"

    @property
    def cost_nano_usd(self) -> int:
        return int(self.row.split(",")[4])


def parse_credits(trace_id: str, packed: str) -> list[Credit]:
    """trace.lua's credit lines: span \\t root \\t hour \\t row."""
    out = []
    for line in packed.splitlines():
        span, root, hour, row = line.split("\t")
        out.append(Credit(trace_id, span, root, int(hour), row))
    return out


class Driven:
    def __init__(self, client: aioredis.Redis, config: StoreConfig, keys: KeyLayout) -> None:
        self._redis = client
        self._config = config
        self._keys = keys
        self._apply = load_script(client, "driven.lua")

    def key(self, root: str) -> str:
        """The root's roll-up: the key store/rollups.py names ("driven", root)."""
        return f"{self._keys.prefix}:rollup:{{{DIMENSION}|{quote(root, safe='')}}}"

    @property
    def index_key(self) -> str:
        return f"{self._keys.prefix}:rollup-index:{DIMENSION}"

    async def apply(self, credits: Sequence[Credit], now_ms: int | None = None) -> int:
        """Add credits to their roots' hours, each at most once; -> how many were new."""
        if not credits:
            return 0
        now = now_ms if now_ms is not None else to_ms(utc_now())
        by_root: dict[str, list[str]] = defaultdict(list)
        for c in credits:
            by_root[c.root].append(f"{c.trace_id}\t{c.span_id}\t{c.hour}\t{c.row}\n")
        async with self._redis.pipeline(transaction=False) as pipe:
            for root, lines in by_root.items():
                key = self.key(root)
                args: list[str | int] = [
                    now,
                    self._config.dedupe_horizon_s * 1000,
                    ROLLUP_TTL_S,
                    "".join(lines),
                ]
                await self._apply(keys=[key, f"{key}:applied"], args=args, client=pipe)
            pipe.sadd(self.index_key, *by_root)
            replies = await pipe.execute()
        return sum(int(r) for r in replies[: len(by_root)])

    async def hours(
        self, root: str, first_hour: int | None = None, last_hour: int | None = None
    ) -> dict[int, MinuteWindow]:
        """The cost `root` drove per event-time hour, within [first_hour, last_hour]."""
        out: dict[int, MinuteWindow] = {}
        for name, packed in (await self._redis.hgetall(self.key(root))).items():
            field = text(name)
            if not field.startswith("h") or not field[1:].isdigit():
                continue
            hour = int(field[1:])
            if (first_hour is None or hour >= first_hour) and (
                last_hour is None or hour <= last_hour
            ):
                out[hour] = unpack_row(hour * 60, packed)
        return dict(sorted(out.items()))

    async def roots(self) -> list[str]:
        return sorted(text(v) for v in await self._redis.smembers(self.index_key))
