"""All of meterguard's Redis code: windows, dedupe, detector checkpoints, throttle keys.

Key layout (every key of one identity shares the `{identity}` hash tag, so the layout works
on Redis Cluster and one script can touch them atomically):

    {prefix}:{<identity>}:meta    hash: watermark, final/scored minute, counters
    {prefix}:{<identity>}:win     hash: epoch minute -> "calls,in,out,cached,cost_nano,errors"
    {prefix}:{<identity>}:dd      zset: event_id -> event ms (dedupe horizon, event time)
    {prefix}:{<identity>}:late    hash: epoch hour -> packed row of events past lateness
    {prefix}:{<identity>}:state   detector + policy checkpoint (JSON)
    {prefix}:{<identity>}:released hash: alert_id -> operator release command id
    {prefix}:throttle:{<identity>} active ThrottleCommand JSON, TTL = its expiry
    {prefix}:throttle-changes     pub/sub channel: every change of a throttle key (SSE feed)
    {prefix}:audit                list: operator actions, newest first (capped)
    {prefix}:stats                hash: pipeline counters (all identities)
    {prefix}:{top}:tokens:<hour>  zset per event-time hour: identity -> tokens counted (26 h)
    {prefix}:{top}:cost:<hour>    zset per event-time hour: identity -> nano-USD counted (26 h)
    {prefix}:{top}:hours          zset: the hours those exist for (the rankings' "now")
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from importlib.resources import files
from typing import cast

import orjson
import redis.asyncio as aioredis

from meterguard.detectors.features import MinuteWindow
from meterguard.models import Alert, AuditEvent, MeteringEvent, ThrottleCommand

_COMMIT = """
if redis.call('HGET', KEYS[1], 'sc') ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[3], 'EX', tonumber(ARGV[4]))
redis.call('HSET', KEYS[1], 'sc', ARGV[2])
return 1
"""

# Keys per SCAN step when looking for throttle keys among all identities' keys: the default
# (10) took 10 s over 500k keys, 10,000 takes 0.24 s (benchmarks/throttle_scan.py).
SCAN_COUNT = 10_000
RECENT_ALERTS = 1000  # newest alerts kept for GET /api/alerts
TOP_TTL_S = 26 * 3600  # hourly rankings kept a day (+2 h), from their last write
TRACE_TTL_S = 3600  # a trace's call tree is kept this long after its last span
MAX_TRACE_HOPS = 64

# The gateway key holds one command for an identity that several detectors' episodes may
# throttle. The script decides whether a command is *accepted* into the feed (published on
# Kafka too) independently of the wall clock, so a replay of old events accepts the same
# commands; the wall clock only decides whether an accepted command is still worth a key.
#   - an operator released this alert's command: nothing more from that alert
#   - a release only clears its own alert's command
#   - a throttle never replaces another alert's block; a lower version never replaces a higher
# Every change of the key is PUBLISHed for the SSE feed.
_APPLY_THROTTLE = """
local action, alert_id, payload, ttl_ms = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local command_id, version = ARGV[5], tonumber(ARGV[6])
if alert_id ~= '' and redis.call('HEXISTS', KEYS[2], alert_id) == 1 then return 0 end
local current = redis.call('GET', KEYS[1])
local held = current and cjson.decode(current)
if action == 'release' then
  if not held then return 1 end
  if held['alert_id'] ~= alert_id then return 0 end
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[7], payload)
  return 1
end
if held then
  if held['command_id'] == command_id then return 1 end
  if tonumber(held['version']) > version then return 0 end
  if held['action'] == 'block' and action ~= 'block' and held['alert_id'] ~= alert_id then
    return 0
  end
end
if ttl_ms > 0 then
  redis.call('SET', KEYS[1], payload, 'PX', ttl_ms)
  redis.call('PUBLISH', ARGV[7], payload)
end
return 1
"""

# An operator release: compare-and-delete on the command the operator saw, remember the
# released alert so its episode's renewals stay released, publish the release.
_OPERATOR_RELEASE = """
local current = redis.call('GET', KEYS[1])
if not current then return 0 end
if cjson.decode(current)['command_id'] ~= ARGV[1] then return -1 end
redis.call('DEL', KEYS[1])
if ARGV[2] ~= '' then
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
  redis.call('EXPIRE', KEYS[2], tonumber(ARGV[4]))
end
redis.call('PUBLISH', ARGV[5], ARGV[6])
return 1
"""


@dataclass(frozen=True)
class SpanLink:
    """One traced call as the trace store saw it (for the agent-chain detector)."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    identity: str
    cost_nano_usd: int = 0


@dataclass(frozen=True)
class SpanPlace:
    depth: int  # hops from the root span (as far as the parents are known yet)
    cycle: bool  # the identity already appears among the span's ancestors
    root: str | None  # identity of the trace's root span, once the chain reaches it
    fanout: int  # children of the span's parent so far
    trace_cost_nano_usd: int = 0  # the whole trace's cost so far


@dataclass(frozen=True)
class MinuteClose:
    """Event number `event_index` of the batch made every minute up to `minute` final."""

    event_index: int
    minute: int


@dataclass(frozen=True)
class IngestResult:
    new: int
    duplicates: int
    late: int
    status: str  # one char per event: n(ew) d(uplicate) l(ate)
    closes: list[MinuteClose]
    scored_through: int | None  # last minute scored by a committed checkpoint
    final_through: int | None  # last final minute after this batch
    final_before: int | None  # last final minute before this batch
    rows: list[MinuteWindow]  # final, unscored minutes in order (zero rows filled in)
    state: bytes | None


@dataclass(frozen=True)
class HeldIdentity:
    """What the namespace holds for one identity (reconcile reads it whole)."""

    minutes: dict[int, MinuteWindow]  # epoch minute -> window
    late: dict[int, MinuteWindow]  # epoch hour -> late totals (row minute = hour * 60)
    counters: dict[str, int]  # the meta hash: wm, fin, sc, lo, new, dup, late
    unreadable: list[str] = field(default_factory=list)  # "win 29495123: b'garbage'"


@dataclass(frozen=True)
class StateCommit:
    identity: str
    expected_scored_through: int
    scored_through: int
    state: bytes


@dataclass(frozen=True)
class StoreConfig:
    prefix: str = "mg"
    allowed_lateness_s: int = 30
    dedupe_horizon_s: int = 48 * 3600
    window_minutes: int = 24 * 60
    max_rows: int = 120

    @property
    def ttl_s(self) -> int:
        # Keys outlive the dedupe horizon so a redelivery inside it is still recognised.
        return self.dedupe_horizon_s + 3600


class WindowStore:
    def __init__(self, client: aioredis.Redis, config: StoreConfig) -> None:
        self.redis = client
        self.config = config
        self._ingest = client.register_script(
            files("meterguard.streams.store").joinpath("ingest.lua").read_text()
        )
        self._commit = client.register_script(_COMMIT)
        self._apply_throttle = client.register_script(_APPLY_THROTTLE)
        self._operator_release = client.register_script(_OPERATOR_RELEASE)
        self._trace = client.register_script(
            files("meterguard.streams.store").joinpath("trace.lua").read_text()
        )

    # -- keys ------------------------------------------------------------------------------
    def key(self, identity: str, part: str) -> str:
        return f"{self.config.prefix}:{{{identity}}}:{part}"

    def throttle_key(self, identity: str) -> str:
        return f"{self.config.prefix}:throttle:{{{identity}}}"

    @property
    def throttle_channel(self) -> str:
        """Pub/sub channel carrying every change of a throttle key (the SSE feed)."""
        return f"{self.config.prefix}:throttle-changes"

    # -- the batch path --------------------------------------------------------------------
    async def ingest(
        self, groups: Mapping[str, Sequence[MeteringEvent]]
    ) -> dict[str, IngestResult]:
        """One atomic script per identity, all in one pipelined round trip."""
        cfg = self.config
        head: list[str | int] = [
            cfg.allowed_lateness_s * 1000,
            cfg.dedupe_horizon_s * 1000,
            cfg.window_minutes,
            cfg.max_rows,
            cfg.ttl_s,
        ]
        async with self.redis.pipeline(transaction=False) as pipe:
            for identity, events in groups.items():
                args = [*head, _pack_events(events)]
                keys = [self.key(identity, p) for p in ("meta", "win", "dd", "late", "state")]
                await self._ingest(keys=keys, args=args, client=pipe)
            replies = await pipe.execute()
        results = {
            identity: _parse_ingest(reply) for identity, reply in zip(groups, replies, strict=True)
        }
        for identity, result in results.items():
            if len(result.status) != len(groups[identity]):  # an event the script could not parse
                raise RuntimeError(
                    f"ingest script read {len(result.status)} of "
                    f"{len(groups[identity])} events for {identity!r}"
                )
        return results

    async def link_spans(self, spans: Sequence[SpanLink]) -> list[SpanPlace]:
        """Add spans to their traces' call trees (one script per trace, one round trip) and
        return each span's depth, cycle flag, root and parent fan-out, in input order."""
        by_trace: dict[str, list[int]] = {}
        for i, span in enumerate(spans):
            by_trace.setdefault(span.trace_id, []).append(i)
        async with self.redis.pipeline(transaction=False) as pipe:
            for trace_id, indices in by_trace.items():
                packed = "".join(
                    f"{spans[i].span_id}\t{spans[i].parent_span_id or ''}\t{spans[i].identity}"
                    f"\t{spans[i].cost_nano_usd}\n"
                    for i in indices
                )
                key = f"{self.config.prefix}:trace:{{{trace_id}}}"
                args: list[str | int] = [TRACE_TTL_S, MAX_TRACE_HOPS, packed]
                await self._trace(keys=[key], args=args, client=pipe)
            replies = await pipe.execute()
        places: list[SpanPlace | None] = [None] * len(spans)
        for indices, reply in zip(by_trace.values(), replies, strict=True):
            lines = _text(reply).splitlines()
            for i, line in zip(indices, lines, strict=True):
                depth, cycle, root, fanout, cost = line.split("\t")
                places[i] = SpanPlace(
                    int(depth), cycle == "1", root or None, int(fanout), int(cost)
                )
        return [p if p is not None else SpanPlace(0, False, None, 0) for p in places]

    async def commit(
        self,
        commits: Iterable[StateCommit],
        stats: Mapping[str, int],
        usage_by_hour: Mapping[tuple[str, int], Sequence[int]],
        alerts: Iterable[Alert] = (),
    ) -> list[str]:
        """Checkpoint detector state (compare-and-set on the scored minute) and counters in
        one round trip (throttle keys are written earlier, by apply_throttles). Returns
        identities whose checkpoint lost the race to another worker (their minutes are scored
        again from the winner's state)."""
        commits = list(commits)
        async with self.redis.pipeline(transaction=False) as pipe:
            for c in commits:
                await self._commit(
                    keys=[self.key(c.identity, "meta"), self.key(c.identity, "state")],
                    args=[c.expected_scored_through, c.scored_through, c.state, self.config.ttl_s],
                    client=pipe,
                )
            for name, value in stats.items():
                if value:
                    pipe.hincrby(f"{self.config.prefix}:stats", name, value)
            self._queue_usage(pipe, usage_by_hour)
            recent = [a.model_dump_json() for a in alerts]
            if recent:
                pipe.lpush(self._alerts_key, *recent)
                pipe.ltrim(self._alerts_key, 0, RECENT_ALERTS - 1)
            replies = await pipe.execute()
        return [c.identity for c, ok in zip(commits, replies, strict=False) if not ok]

    def _top_key(self, what: str, hour: int | None = None) -> str:
        # One hash tag for all of them: the rankings union several hours (one slot on Cluster).
        return f"{self.config.prefix}:{{top}}:{what}" + ("" if hour is None else f":{hour}")

    def _queue_usage(
        self, pipe: aioredis.client.Pipeline, usage: Mapping[tuple[str, int], Sequence[int]]
    ) -> None:
        hours = set()
        for (identity, hour), (tokens, cost) in usage.items():
            hours.add(hour)
            if tokens:
                pipe.zincrby(self._top_key("tokens", hour), tokens, identity)
            if cost:
                pipe.zincrby(self._top_key("cost", hour), cost, identity)
        for hour in hours:
            for what in ("tokens", "cost"):
                pipe.expire(self._top_key(what, hour), TOP_TTL_S)
            pipe.zadd(self._top_key("hours"), {str(hour): hour})
        if hours:  # the index only needs the hours a ranking can still read
            pipe.zremrangebyscore(self._top_key("hours"), "-inf", max(hours) - TOP_TTL_S // 3600)

    async def apply_throttles(
        self, commands: Sequence[ThrottleCommand], now: datetime
    ) -> list[ThrottleCommand]:
        """Write the gateway keys (one script per command, one round trip, in order) and
        return the commands the feed accepted; see _APPLY_THROTTLE for the rules."""
        if not commands:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for command in commands:
                ttl_ms = math.floor((command.expires_at - now).total_seconds() * 1000)
                args: list[str | int] = [
                    command.action,
                    command.alert_id or "",
                    command.model_dump_json(),
                    ttl_ms,
                    command.command_id,
                    command.version,
                    self.throttle_channel,
                ]
                keys = [self.throttle_key(command.identity), self.key(command.identity, "released")]
                await self._apply_throttle(keys=keys, args=args, client=pipe)
            replies = await pipe.execute()
        return [c for c, ok in zip(commands, replies, strict=True) if ok]

    async def release_by_operator(self, held: ThrottleCommand, release: ThrottleCommand) -> int:
        """Delete `held` if it is still the active command. 1 released, 0 no command any more,
        -1 another command replaced it meanwhile (the caller re-reads and decides again)."""
        keys = [self.throttle_key(held.identity), self.key(held.identity, "released")]
        args: list[str | int] = [
            held.command_id,
            held.alert_id or "",
            release.command_id,
            self.config.ttl_s,
            self.throttle_channel,
            release.model_dump_json(),
        ]
        return int(await self._operator_release(keys=keys, args=args))

    # -- reads (tests, replay, dashboard) ---------------------------------------------------
    async def window(
        self, identity: str, first_minute: int, last_minute: int
    ) -> list[MinuteWindow]:
        minutes = list(range(first_minute, last_minute + 1))
        raw = await self.redis.hmget(self.key(identity, "win"), [str(m) for m in minutes])
        return [_row(m, r) for m, r in zip(minutes, raw, strict=True)]

    async def late_totals(self, identity: str) -> dict[int, MinuteWindow]:
        raw = await self.redis.hgetall(self.key(identity, "late"))
        return {int(h): _row(int(h) * 60, v) for h, v in raw.items()}

    async def counters(self, identity: str) -> dict[str, int]:
        raw = await self.redis.hgetall(self.key(identity, "meta"))
        return {_text(k): int(float(v)) for k, v in raw.items()}

    async def identities(self) -> list[str]:
        """Every identity with counters in this namespace (a SCAN: for reconcile, not the hot
        path). Other namespaces under this prefix (replays: `prefix:replay:…`) do not match."""
        pattern = f"{_glob_escape(self.config.prefix)}:{{*}}:meta"
        head, tail = len(self.config.prefix) + 2, len("}:meta")
        found = {
            _text(k)[head:-tail]
            async for k in self.redis.scan_iter(match=pattern, count=SCAN_COUNT)
        }
        return sorted(found)

    async def holdings(self, identities: Sequence[str]) -> dict[str, HeldIdentity | None]:
        """Whole minute windows, late totals and counters of each identity (None: no keys)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for identity in identities:
                for part in ("meta", "win", "late"):
                    pipe.hgetall(self.key(identity, part))
            replies = await pipe.execute()
        out: dict[str, HeldIdentity | None] = {}
        for n, identity in enumerate(identities):
            meta, win, late = replies[3 * n : 3 * n + 3]
            if not (meta or win or late):
                out[identity] = None
                continue
            held = HeldIdentity({}, {}, {})
            # An audit must report a damaged row, not stop at it.
            for m, v in win.items():
                _read_into(held, held.minutes, "win", m, v, lambda k: int(k))
            for h, v in late.items():
                _read_into(held, held.late, "late", h, v, lambda k: int(k) * 60)
            for k, v in meta.items():
                try:
                    held.counters[_text(k)] = int(float(v))
                except ValueError:
                    held.unreadable.append(f"meta {_text(k)}: {v!r}")
            out[identity] = held
        return out

    @property
    def _alerts_key(self) -> str:
        return f"{self.config.prefix}:alerts:recent"

    async def recent_alerts(self, limit: int) -> list[dict]:
        raw = await self.redis.lrange(self._alerts_key, 0, limit - 1)
        return [orjson.loads(item) for item in raw]

    @property
    def _audit_key(self) -> str:
        return f"{self.config.prefix}:audit"

    async def record_audit(self, event: AuditEvent) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.lpush(self._audit_key, event.model_dump_json())
            pipe.ltrim(self._audit_key, 0, RECENT_ALERTS - 1)
            await pipe.execute()

    async def recent_audit(self, limit: int) -> list[dict]:
        raw = await self.redis.lrange(self._audit_key, 0, limit - 1)
        return [orjson.loads(item) for item in raw]

    async def active_throttles(self) -> list[ThrottleCommand]:
        keys = [
            k
            async for k in self.redis.scan_iter(
                match=f"{_glob_escape(self.config.prefix)}:throttle:*", count=SCAN_COUNT
            )
        ]
        values = await self.redis.mget(keys) if keys else []
        commands = [ThrottleCommand.model_validate_json(v) for v in values if v]
        return sorted(commands, key=lambda c: (c.identity, c.version))

    async def active_throttle(self, identity: str) -> ThrottleCommand | None:
        raw = await self.redis.get(self.throttle_key(identity))
        return ThrottleCommand.model_validate_json(raw) if raw else None

    async def stats(self) -> dict[str, int]:
        raw = await self.redis.hgetall(f"{self.config.prefix}:stats")
        return {_text(k): int(v) for k, v in raw.items()}

    async def top_identities(self, n: int, hours: int = 2) -> list[tuple[str, float]]:
        """The `n` identities with the most tokens in the newest `hours` event-time hours
        (the newest one is still filling up), highest first."""
        return await self._ranking("tokens", n, hours)

    # -- dashboard reads ---------------------------------------------------------------------
    async def top_by_cost(self, n: int, hours: int = 2) -> list[tuple[str, float]]:
        """As top_identities, by cost in nano-USD."""
        return await self._ranking("cost", n, hours)

    async def _ranking(self, what: str, n: int, hours: int) -> list[tuple[str, float]]:
        newest = await self.redis.zrevrange(self._top_key("hours"), 0, 0)
        if not newest:
            return []
        last = int(cast(bytes, newest[0]))
        keys = [self._top_key(what, h) for h in range(last - hours + 1, last + 1)]
        # ZUNION returns every member; the top n of a few hours' identities is cheap to pick.
        raw = await self.redis.zunion(keys, withscores=True)
        pairs = cast(list[tuple[bytes, float]], raw)  # redis-py types the reply loosely
        ranked = sorted(((_text(k), float(s)) for k, s in pairs), key=lambda p: (-p[1], p[0]))
        return ranked[:n]

    async def watermarks(self, identities: Sequence[str]) -> dict[str, int]:
        """Each identity's event-time watermark (newest event ms); unknown ones left out."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for identity in identities:
                pipe.hget(self.key(identity, "meta"), "wm")
            replies = await pipe.execute()
        return {i: int(float(v)) for i, v in zip(identities, replies, strict=True) if v}

    async def windows(self, ranges: Mapping[str, tuple[int, int]]) -> dict[str, list[MinuteWindow]]:
        """Minute rows (first..last minute, gaps as zero rows) of many identities, one round
        trip: the dashboard draws a sparkline for every ranked identity each poll."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for identity, (first, last) in ranges.items():
                pipe.hmget(self.key(identity, "win"), [str(m) for m in range(first, last + 1)])
            replies = await pipe.execute()
        return {
            identity: [_row(first + i, r) for i, r in enumerate(raw)]
            for (identity, (first, _)), raw in zip(ranges.items(), replies, strict=True)
        }


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _pack_events(events: Sequence[MeteringEvent]) -> str:
    return "".join(
        f"{e.event_id}\t{e.event_time_ms}\t{e.input_tokens}\t{e.output_tokens}\t"
        f"{e.cached_tokens}\t{e.cost_nano_usd}\t{int(e.status == 'error')}\n"
        for e in events
    )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _row(minute: int, packed: bytes | str | None) -> MinuteWindow:
    if not packed:
        return MinuteWindow(minute=minute)
    c, i, o, k, cost, e = (int(v) for v in _text(packed).split(","))
    return MinuteWindow(minute, c, i, o, k, cost, e)


def _read_into(
    held: HeldIdentity,
    into: dict[int, MinuteWindow],
    part: str,
    key: bytes | str,
    value: bytes | str,
    minute_of: Callable[[bytes | str], int],
) -> None:
    try:
        index = int(key)
        into[index] = _row(minute_of(key), value)
    except ValueError:
        held.unreadable.append(f"{part} {_text(key)}: {value!r}")


def _parse_ingest(reply: list) -> IngestResult:
    new, dup, late, status, closes, scored, final, first, rows, state, final_before = reply
    flat = [int(v) for v in closes]
    first_minute = int(first) if first is not None else None
    parsed_rows = (
        [] if first_minute is None else [_row(first_minute + i, r) for i, r in enumerate(rows)]
    )
    return IngestResult(
        new=int(new),
        duplicates=int(dup),
        late=int(late),
        status=_text(status),
        closes=[MinuteClose(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)],
        scored_through=int(scored) if scored is not None else None,
        final_through=int(final) if final is not None else None,
        final_before=int(final_before) if final_before is not None else None,
        rows=parsed_rows,
        state=state,
    )
