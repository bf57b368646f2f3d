"""Per-identity minute windows: ingest (dedupe, lateness), detector checkpoints, window reads.

Keys (all of one identity share its `{identity}` hash tag, see keys.py):

    {prefix}:{<identity>}:meta    hash: wm (watermark ms), fin/sc (final/scored minute), lo,
                                  counters new/dup/late
    {prefix}:{<identity>}:win     hash: epoch minute -> "calls,in,out,cached,cost_nano,errors"
    {prefix}:{<identity>}:dd      hash: 64-bit hashes of remembered event ids by generation of
                                  first event time (dedupe.py)
    {prefix}:{<identity>}:late    hash: epoch hour -> packed row of events past lateness
    {prefix}:{<identity>}:state   detector + policy checkpoint (JSON)

Scripts: ingest.lua (one batch of one identity), commit_state.lua (checkpoint compare-and-set).
The checkpoint commit also carries the batch's pipeline counters (stats.py), rankings and
recent alerts (history.py) and warm identities' levels for their peer groups (peers.py) in the
same round trip.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from meterguard.detectors.features import MinuteWindow
from meterguard.models import Alert, MeteringEvent
from meterguard.streams.store.dedupe import IDS_PER_BUCKET, generation_ms, id_hash
from meterguard.streams.store.history import History
from meterguard.streams.store.keys import KeyLayout, StoreConfig, load_script, text, unpack_row
from meterguard.streams.store.peers import PeerGroup, PeerReport, Peers
from meterguard.streams.store.rollups import Pending
from meterguard.streams.store.stats import Stats


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
    status: str  # one char per event: n(ew) d(uplicate) l(ate) r(e-observe: see ingest.lua)
    closes: list[MinuteClose]
    scored_through: int | None  # last minute scored by a committed checkpoint
    final_through: int | None  # last final minute after this batch
    final_before: int | None  # last final minute before this batch
    rows: list[MinuteWindow]  # final, unscored minutes in order (zero rows filled in)
    state: bytes | None
    pending_rollups: list[Pending] = field(default_factory=list)  # to apply (rollups.py)


@dataclass(frozen=True)
class StateCommit:
    identity: str
    expected_scored_through: int
    scored_through: int
    state: bytes
    observed: bytes = b""  # the id hashes (dedupe.py) of the events this checkpoint observed
    based_on: str = ""  # SHA-1 hex of the checkpoint it was built from ('' none): see below


class Windows:
    def __init__(
        self,
        client: aioredis.Redis,
        config: StoreConfig,
        keys: KeyLayout,
        history: History,
        stats: Stats,
        peers: Peers,
    ) -> None:
        self._redis = client
        self._config = config
        self._keys = keys
        self._history = history
        self._stats = stats
        self._peers = peers
        self._ingest = load_script(client, "ingest.lua")
        self._commit_state = load_script(client, "commit_state.lua")

    async def ingest(
        self,
        groups: Mapping[str, Sequence[MeteringEvent]],
        attribution: Mapping[str, tuple[str, Sequence[int]]] | None = None,
    ) -> dict[str, IngestResult]:
        """One atomic script per identity, all in one pipelined round trip. `attribution`:
        per identity, its roll-up groups (rollups.pack_groups) and each event's group; without
        it nothing is rolled up."""
        cfg = self._config
        head: list[str | int] = [
            cfg.allowed_lateness_s * 1000,
            cfg.dedupe_horizon_s * 1000,
            cfg.window_minutes,
            cfg.max_rows,
            cfg.ttl_s,
        ]
        dedupe_generation_ms = generation_ms(cfg.dedupe_horizon_s * 1000)
        async with self._redis.pipeline(transaction=False) as pipe:
            for identity, events in groups.items():
                packed_groups, of_event = (attribution or {}).get(identity, ("", ()))
                args = [
                    *head,
                    _pack_events(events, of_event),
                    packed_groups,
                    b"".join(id_hash(e.event_id) for e in events),
                    dedupe_generation_ms,
                    IDS_PER_BUCKET,
                ]
                keys = [
                    self._keys.identity_key(identity, p)
                    for p in ("meta", "win", "dd", "late", "state", "rollout")
                ]
                await self._ingest(keys=keys, args=args, client=pipe)
            replies = await pipe.execute()
        results = {
            identity: _parse_ingest(identity, reply)
            for identity, reply in zip(groups, replies, strict=True)
        }
        for identity, result in results.items():
            if len(result.status) != len(groups[identity]):  # an event the script could not parse
                raise RuntimeError(
                    f"ingest script read {len(result.status)} of "
                    f"{len(groups[identity])} events for {identity!r}"
                )
        return results

    async def commit(
        self,
        commits: Iterable[StateCommit],
        stats: Mapping[str, int],
        usage_by_hour: Mapping[tuple[str, int], Sequence[int]],
        alerts: Iterable[Alert] = (),
        peer_reports: Iterable[PeerReport] = (),
        stale_peers: Mapping[PeerGroup, Iterable[str]] | None = None,
    ) -> list[str]:
        """Checkpoint detector state (compare-and-set on the scored minute and on the
        checkpoint read, `StateCommit.based_on`: commit_state.lua), counters,
        rankings, recent alerts and peer levels in one round trip (throttle keys are written
        earlier, by Throttles.apply). Returns identities whose checkpoint lost the race to
        another worker (their minutes are scored again from the winner's state)."""
        commits = list(commits)
        async with self._redis.pipeline(transaction=False) as pipe:
            for c in commits:
                await self._commit_state(
                    keys=[
                        self._keys.identity_key(c.identity, "meta"),
                        self._keys.identity_key(c.identity, "state"),
                        self._keys.identity_key(c.identity, "dd"),
                    ],
                    args=[
                        c.expected_scored_through,
                        c.scored_through,
                        c.state,
                        self._config.ttl_s,
                        c.observed,
                        c.based_on,
                    ],
                    client=pipe,
                )
            self._stats.queue_counts(pipe, stats)
            self._history.queue_usage(pipe, usage_by_hour)
            self._history.queue_alerts(pipe, alerts)
            self._peers.queue_writes(pipe, peer_reports, stale_peers or {})
            replies = await pipe.execute()
        return [c.identity for c, ok in zip(commits, replies, strict=False) if not ok]

    # -- reads (tests, replay, dashboard) ---------------------------------------------------
    async def read(self, identity: str, first_minute: int, last_minute: int) -> list[MinuteWindow]:
        """Minute rows first..last of one identity (gaps as zero rows)."""
        minutes = list(range(first_minute, last_minute + 1))
        raw = await self._redis.hmget(
            self._keys.identity_key(identity, "win"), [str(m) for m in minutes]
        )
        return [unpack_row(m, r) for m, r in zip(minutes, raw, strict=True)]

    async def read_many(
        self, ranges: Mapping[str, tuple[int, int]]
    ) -> dict[str, list[MinuteWindow]]:
        """Minute rows (first..last minute, gaps as zero rows) of many identities, one round
        trip: the dashboard draws a sparkline for every ranked identity each poll."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for identity, (first, last) in ranges.items():
                pipe.hmget(
                    self._keys.identity_key(identity, "win"),
                    [str(m) for m in range(first, last + 1)],
                )
            replies = await pipe.execute()
        return {
            identity: [unpack_row(first + i, r) for i, r in enumerate(raw)]
            for (identity, (first, _)), raw in zip(ranges.items(), replies, strict=True)
        }

    async def late_totals(self, identity: str) -> dict[int, MinuteWindow]:
        raw = await self._redis.hgetall(self._keys.identity_key(identity, "late"))
        return {int(h): unpack_row(int(h) * 60, v) for h, v in raw.items()}

    async def counters(self, identity: str) -> dict[str, int]:
        raw = await self._redis.hgetall(self._keys.identity_key(identity, "meta"))
        return {text(k): int(float(v)) for k, v in raw.items()}

    async def watermarks(self, identities: Sequence[str]) -> dict[str, int]:
        """Each identity's event-time watermark (newest event ms); unknown ones left out."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for identity in identities:
                pipe.hget(self._keys.identity_key(identity, "meta"), "wm")
            replies = await pipe.execute()
        return {i: int(float(v)) for i, v in zip(identities, replies, strict=True) if v}


def _pack_events(events: Sequence[MeteringEvent], group_of: Sequence[int] = ()) -> str:
    return "".join(
        f"{e.event_time_ms}\t{e.input_tokens}\t{e.output_tokens}\t"
        f"{e.cached_tokens}\t{e.cost_nano_usd}\t{int(e.status == 'error')}\t"
        f"{group_of[i] if group_of else 0}\n"
        for i, e in enumerate(events)
    )


def _parse_ingest(identity: str, reply: list[Any]) -> IngestResult:
    # The ingest script's reply: twelve values of mixed Redis types (ints, nil, arrays, bulk).
    new, dup, late, status, closes, scored, final, first, rows, state, final_before, out = reply
    pending = [Pending(identity, text(out[i]), bytes(out[i + 1])) for i in range(0, len(out), 2)]
    flat = [int(v) for v in closes]
    first_minute = int(first) if first is not None else None
    parsed_rows = (
        []
        if first_minute is None
        else [unpack_row(first_minute + i, r) for i, r in enumerate(rows)]
    )
    return IngestResult(
        new=int(new),
        duplicates=int(dup),
        late=int(late),
        status=text(status),
        closes=[MinuteClose(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)],
        scored_through=int(scored) if scored is not None else None,
        final_through=int(final) if final is not None else None,
        final_before=int(final_before) if final_before is not None else None,
        rows=parsed_rows,
        state=state,
        pending_rollups=pending,
    )
