"""Team, business-unit and environment roll-ups: calls, tokens, cost and errors per event-time
minute and hour, exact (deduped like the identity windows, each event counted once).

Keys:

    {prefix}:{<identity>}:rollout         hash: sequence -> one ingest step's roll-up deltas,
                                          written by ingest.lua atomically with the windows,
                                          deleted once applied                    (windows)
    {prefix}:rollup:{<dim>|<value>}       hash: m<minute>, h<hour>, l<hour> (late events of
                                          the hour) -> "calls,in,out,cached,cost_nano,errors";
                                          lo/hi: the minutes kept
    {prefix}:rollup:{<dim>|<value>}:applied  hash: identity -> newest ingest step applied
    {prefix}:rollup-members:{<dim>|<value>}  set: the identities seen in a team, business
                                          unit or environment (group budgets' commands)
    {prefix}:rollup-index:<dim>           set: the values seen (report listing)
    {prefix}:unregistered                 set: identities a configured registry does not list

`<value>` is percent-encoded (peer groups' rule), the empty value is "(unassigned)".

Redis Cluster: a roll-up, its `applied` zset and its `rollup-members` set share the hash tag
`{<dim>|<value>}` (store/budget_marks.py's marks too). The members set is written by SADD
(+ EXPIRE) alone, after the roll-up's script, never inside a script with another key: an
identity's step adds itself to each group it counts in, idempotently (a step applied again
after a crash adds nothing new). Only `team`, `business_unit` and `environment` keep
members: budgets act on those groups, and a model's "members" would be most identities.

Exactly once across hash slots (Redis Cluster): ingest.lua cannot touch a team's key, so it
leaves its deltas in the identity's own `rollout` under a sequence number that only grows
(it starts from the clock when an identity's keys are new, so it outlives their expiry);
`apply` adds them to each roll-up with rollup.lua in sequence order, which remembers the
newest sequence applied per identity in the roll-up's own slot and refuses an older or equal
one; only then are the deltas deleted. One number per (roll-up, identity), not a token per
step: a token per step cost about 10 KiB per identity after two hours of replay. A crash in
between leaves them waiting, and the identity's next ingest returns them to be applied again,
at most once (`sweep` applies what identities that never come back left).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

import redis.asyncio as aioredis

from meterguard.detectors.features import MinuteWindow
from meterguard.streams.store.keys import (
    SCAN_COUNT,
    KeyLayout,
    StoreConfig,
    load_script,
    text,
    unpack_row,
)

UNASSIGNED_LABEL = "(unassigned)"
# Hours are kept this long after a roll-up's last change: a year of showback, and a quarter
# to restate.
ROLLUP_TTL_S = 400 * 24 * 3600
GROUP_SEPARATOR = "\t"
MEMBER_DIMENSIONS = frozenset({"team", "business_unit", "environment"})
# Every counted event, once: the pipeline's exact counters of unique and late events (its
# running totals "T" and "L", rollup.lua), applied exactly once like any roll-up, so a worker
# killed between ingest and checkpoint leaves them exact (Stats.pipeline_counters reads them).
PIPELINE_TARGET = ("pipeline", "all")


@dataclass(frozen=True)
class Pending:
    """One ingest step's roll-up deltas, waiting in an identity's `rollout` hash."""

    identity: str
    sequence: str
    payload: bytes


@dataclass
class RollupRows:
    """One roll-up's rows: minute -> row, hour -> row (late included), hour -> late row."""

    minutes: dict[int, MinuteWindow] = field(default_factory=dict)
    hours: dict[int, MinuteWindow] = field(default_factory=dict)
    late_hours: dict[int, MinuteWindow] = field(default_factory=dict)


def pack_groups(groups: Sequence[Sequence[tuple[str, str]]]) -> str:
    """ARGV 7 of ingest.lua: one line per attribution group, `<dim>|<value>` targets
    separated by tabs, values percent-encoded (no tab or newline can reach the script)."""
    return "".join(
        GROUP_SEPARATOR.join(f"{dim}|{quote(value, safe='')}" for dim, value in group) + "\n"
        for group in groups
    )


def label(value: str) -> str:
    return value if value else UNASSIGNED_LABEL


class Rollups:
    def __init__(self, client: aioredis.Redis, config: StoreConfig, keys: KeyLayout) -> None:
        self._redis = client
        self._config = config
        self._keys = keys
        self._apply = load_script(client, "rollup.lua")

    def key(self, dimension: str, value: str) -> str:
        return f"{self._keys.prefix}:rollup:{{{dimension}|{quote(value, safe='')}}}"

    def members_key(self, dimension: str, value: str) -> str:
        return f"{self._keys.prefix}:rollup-members:{{{dimension}|{quote(value, safe='')}}}"

    def _index(self, dimension: str) -> str:
        return f"{self._keys.prefix}:rollup-index:{dimension}"

    @property
    def unregistered_key(self) -> str:
        return f"{self._keys.prefix}:unregistered"

    async def apply(self, pending: Iterable[Pending]) -> int:
        """Add every pending step's deltas to its roll-ups (at most once each), then delete
        them. Returns how many steps were new to their roll-ups."""
        # In sequence order per identity: rollup.lua keeps only the newest step applied.
        steps = sorted(pending, key=lambda p: (p.identity, int(p.sequence)))
        if not steps:
            return 0
        # One script call per roll-up, carrying every step's deltas for it (in order).
        by_target: dict[tuple[str, str], list[str]] = defaultdict(list)
        members: dict[tuple[str, str], set[str]] = defaultdict(set)  # (dimension, value)
        for step in steps:
            for (dimension, value), lines in _targets(step.payload).items():
                if dimension in MEMBER_DIMENSIONS:
                    members[dimension, value].add(step.identity)
                by_target[dimension, value] += (step.identity, step.sequence, lines)
        async with self._redis.pipeline(transaction=False) as pipe:
            for (dimension, value), entries in by_target.items():
                key = self.key(dimension, value)
                args: list[str | int] = [ROLLUP_TTL_S, self._config.window_minutes, *entries]
                await self._apply(keys=[key, f"{key}:applied"], args=args, client=pipe)
            replies = await pipe.execute()
        async with self._redis.pipeline(transaction=False) as pipe:
            for dimension in {d for d, _ in by_target}:
                pipe.sadd(self._index(dimension), *{v for d, v in by_target if d == dimension})
                pipe.expire(self._index(dimension), ROLLUP_TTL_S)  # as long as its newest
            for (dimension, value), identities in sorted(members.items()):
                pipe.sadd(self.members_key(dimension, value), *sorted(identities))
                pipe.expire(self.members_key(dimension, value), ROLLUP_TTL_S)
            for step in steps:
                pipe.hdel(self._keys.identity_key(step.identity, "rollout"), step.sequence)
            await pipe.execute()
        # (step, roll-up) pairs applied, the pipeline's own totals not counted
        return sum(int(r) for t, r in zip(by_target, replies, strict=True) if t != PIPELINE_TARGET)

    async def note_unregistered(self, identities: Iterable[str]) -> None:
        found = sorted(set(identities))
        if found:
            await self._redis.sadd(self.unregistered_key, *found)

    async def unregistered(self) -> list[str]:
        return sorted(text(v) for v in await self._redis.smembers(self.unregistered_key))

    async def values(self, dimension: str) -> list[str]:
        return sorted(text(v) for v in await self._redis.smembers(self._index(dimension)))

    async def rows(self, dimension: str, value: str) -> RollupRows:
        raw = await self._redis.hgetall(self.key(dimension, value))
        out = RollupRows()
        for name, packed in raw.items():
            field_name = text(name)
            kind, bucket = field_name[:1], field_name[1:]
            if kind not in ("m", "h", "l") or not bucket.isdigit():
                continue
            n = int(bucket)
            if kind == "m":
                out.minutes[n] = unpack_row(n, packed)
            elif kind == "h":
                out.hours[n] = unpack_row(n * 60, packed)
            else:
                out.late_hours[n] = unpack_row(n * 60, packed)
        return out

    async def members(self, groups: Sequence[tuple[str, str]]) -> list[list[str]]:
        """The identities seen in each (dimension, value): team, business unit, environment
        (one round trip)."""
        if not groups:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for dimension, value in groups:
                pipe.smembers(self.members_key(dimension, value))
            replies = await pipe.execute()
        return [sorted(text(v) for v in reply) for reply in replies]

    async def hour_totals(
        self, spans: Sequence[tuple[str, str, range]]
    ) -> list[tuple[MinuteWindow, int | None]]:
        """Per (dimension, value, epoch hours): the sum of those hour rows (late events
        included) and the roll-up's newest minute (`hi`, None if it has none); one round
        trip for all of them."""
        if not spans:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for dimension, value, hours in spans:
                pipe.hmget(self.key(dimension, value), ["hi", *(f"h{h}" for h in hours)])
            replies = await pipe.execute()
        out = []
        for reply in replies:
            hi, *rows = reply
            found = {i: unpack_row(0, row) for i, row in enumerate(rows) if row}
            newest = int(text(hi)) if hi else -1  # -1: only late rows so far
            out.append((totals(found), newest if newest >= 0 else None))
        return out

    async def sweep(self) -> int:
        """Apply what crashed workers left in identities' `rollout` hashes (a SCAN of the
        namespace: run at start, not per batch). Returns the steps applied."""
        pattern = f"{self._keys.prefix}:{{*}}:rollout"
        pending: list[Pending] = []
        async for key in self._redis.scan_iter(match=pattern, count=SCAN_COUNT):
            name = text(key)
            identity = unquote_identity(name, self._keys.prefix)
            for sequence, payload in (await self._redis.hgetall(name)).items():
                data = payload.encode() if isinstance(payload, str) else bytes(payload)
                pending.append(Pending(identity, text(sequence), data))
        return await self.apply(pending)


def _targets(payload: bytes) -> dict[tuple[str, str], str]:
    """The ingest step's deltas per roll-up: {(dimension, value): "kind\\tbucket\\trow\\n"...},
    and every event's hour rows once more for the whole pipeline (PIPELINE_TARGET)."""
    groups_part, _, deltas = payload.decode().partition("--\n")
    groups = [line.split(GROUP_SEPARATOR) for line in groups_part.splitlines()]
    out: dict[tuple[str, str], list[str]] = defaultdict(list)
    for line in deltas.splitlines():
        group, kind, bucket, row = line.split("\t")
        delta = f"{kind}\t{bucket}\t{row}\n"
        for target in groups[int(group)]:
            dimension, _, value = target.partition("|")
            out[(dimension, unquote(value))].append(delta)
        if kind != "m":  # an event is in exactly one group: its hour rows count it once
            out[PIPELINE_TARGET].append(delta)
    return {target: "".join(lines) for target, lines in out.items()}


def unquote_identity(key: str, prefix: str) -> str:
    """The identity of `{prefix}:{<identity>}:rollout` (identities are not encoded in keys)."""
    return key[len(prefix) + 2 : -len("}:rollout")]


def totals(rows: Mapping[int, MinuteWindow]) -> MinuteWindow:
    """The sum of some rows (minute 0)."""
    out = [0, 0, 0, 0, 0, 0]
    for row in rows.values():
        for i, v in enumerate(_fields(row)):
            out[i] += v
    return MinuteWindow(0, *out)


def _fields(row: MinuteWindow) -> tuple[int, int, int, int, int, int]:
    return (
        row.calls,
        row.input_tokens,
        row.output_tokens,
        row.cached_tokens,
        row.cost_nano_usd,
        row.errors,
    )
