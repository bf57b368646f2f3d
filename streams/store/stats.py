"""Pipeline counters and what the namespace holds: for /metrics, the demo and reconcile.

Keys:

    {prefix}:stats                hash: pipeline counters of all identities (duplicates, minutes
                                  scored, ...), incremented in the checkpoint round trip of
                                  Windows.commit
    {prefix}:rollup:{pipeline|all}  events_new and events_late, exactly once: the running
                                  totals "T" (every counted event) and "L" (late ones) of the
                                  pipeline's roll-up (rollups.py PIPELINE_TARGET)
    {prefix}:{<identity>}:meta    } read whole by `holdings` (written by windows.py):
    {prefix}:{<identity>}:win     } counters, minute rows, late totals of each identity;
    {prefix}:{<identity>}:late    } `identities` SCANs for the meta keys
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import redis.asyncio as aioredis

from meterguard.detectors.features import MinuteWindow
from meterguard.streams.store.keys import SCAN_COUNT, KeyLayout, text, unpack_row


@dataclass(frozen=True)
class HeldIdentity:
    """What the namespace holds for one identity (reconcile reads it whole)."""

    minutes: dict[int, MinuteWindow]  # epoch minute -> window
    late: dict[int, MinuteWindow]  # epoch hour -> late totals (row minute = hour * 60)
    counters: dict[str, int]  # the meta hash: wm, fin, sc, lo, new, dup, late
    unreadable: list[str] = field(default_factory=list)  # "win 29495123: b'garbage'"


class Stats:
    def __init__(self, client: aioredis.Redis, keys: KeyLayout) -> None:
        self._redis = client
        self._keys = keys

    def queue_counts(self, pipe: aioredis.client.Pipeline, counts: Mapping[str, int]) -> None:
        """Add a batch's counters (zeros skipped) on the checkpoint's pipeline; events_new and
        events_late come from the pipeline roll-up instead (exactly once across a crash)."""
        for name, value in counts.items():
            if value and name not in ROLLED_UP:
                pipe.hincrby(self._keys.stats_key, name, value)
        # New and late events whose step has checkpointed (exact unless a worker died between
        # ingest and checkpoint: then short by that step). Who waits for a step's published
        # alerts and checkpoint, not just its counting, reads this (tests' wait_counted).
        checkpointed = sum(counts.get(name, 0) for name in ROLLED_UP)
        if checkpointed:
            pipe.hincrby(self._keys.stats_key, CHECKPOINTED, checkpointed)

    async def pipeline_counters(self) -> dict[str, int]:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self._keys.stats_key)
            pipe.hmget(self._keys.pipeline_totals_key, "T", "L")
            raw, (unique, late) = await pipe.execute()
        out = {text(k): int(v) for k, v in raw.items() if text(k) not in ROLLED_UP}
        calls_unique, calls_late = _calls(unique), _calls(late)
        if calls_unique:
            out["events_new"] = calls_unique - calls_late
        if calls_late:
            out["events_late"] = calls_late
        return out

    async def identities(self) -> list[str]:
        """Every identity with counters in this namespace (a SCAN: for reconcile, not the hot
        path). Other namespaces under this prefix (replays: `prefix:replay:…`) do not match."""
        found = {
            self._keys.identity_of_meta_key(k)
            async for k in self._redis.scan_iter(match=self._keys.meta_pattern, count=SCAN_COUNT)
        }
        return sorted(found)

    async def holdings(self, identities: Sequence[str]) -> dict[str, HeldIdentity | None]:
        """Whole minute windows, late totals and counters of each identity (None: no keys)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for identity in identities:
                for part in ("meta", "win", "late"):
                    pipe.hgetall(self._keys.identity_key(identity, part))
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
                    held.counters[text(k)] = int(float(v))
                except ValueError:
                    held.unreadable.append(f"meta {text(k)}: {v!r}")
            out[identity] = held
        return out


# Counters read from the pipeline roll-up, not the stats hash.
ROLLED_UP = frozenset({"events_new", "events_late"})
CHECKPOINTED = "events_checkpointed"


def _calls(row: bytes | str | None) -> int:
    """The calls of a packed row ("calls,input,...")."""
    return int(text(row).split(",", 1)[0]) if row else 0


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
        into[index] = unpack_row(minute_of(key), value)
    except ValueError:
        held.unreadable.append(f"{part} {text(key)}: {value!r}")
