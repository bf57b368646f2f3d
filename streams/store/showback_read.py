"""Showback and chargeback, the reads: one period's hour and late rows of every roll-up of a
dimension (store/rollups.py keys), then the pure report of showback.py.

Short periods read only their own fields (HMGET `h<hour>` and `l<hour>` for each hour of the
period), long ones the whole hash (HGETALL: a roll-up holds at most a window of minutes and
its hours), pipelined in chunks; `progress(done, total)` is called after each chunk.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import redis.asyncio as aioredis

from meterguard.streams.store.keys import text
from meterguard.streams.store.rollups import Rollups
from meterguard.streams.store.showback import GroupRows, Period, Report, Usage, build

Progress = Callable[[int, int], None]
# Above this many fields per key a period reads whole hashes (HGETALL) instead of HMGET.
MAX_FIELDS_PER_KEY = 4096
# Fields asked for per pipeline round trip (HMGET), keys per round trip (HGETALL).
FIELDS_PER_ROUND = 200_000
KEYS_PER_ROUND = 200


async def load_report(
    client: aioredis.Redis,
    rollups: Rollups,
    by: str,
    period: Period,
    namespace: str,
    progress: Progress | None = None,
) -> Report:
    """The report of one namespace's roll-ups by `by` over `period`."""
    values = await rollups.values(by)
    strays = await rollups.unregistered()
    total = len(values) + len(strays)
    done = 0

    def step(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    if progress is not None:
        progress(0, total)
    groups = await read_rows(client, rollups, by, values, period, step)
    unregistered = await read_rows(client, rollups, "identity", strays, period, step)
    # Per identity, also the cost it drove downstream (store/driven.py keeps it as the
    # `driven` roll-up of the root identity).
    driven = (
        await read_rows(client, rollups, "driven", values, period) if by == "identity" else None
    )
    return build(by, period, namespace, groups, unregistered, driven)


async def read_rows(
    client: aioredis.Redis,
    rollups: Rollups,
    dimension: str,
    values: Sequence[str],
    period: Period,
    step: Callable[[int], None] = lambda n: None,
) -> dict[str, GroupRows]:
    """value -> its hour and late rows within the period."""
    hours = period.hours
    whole = 2 * len(hours) > MAX_FIELDS_PER_KEY
    fields = [f"{kind}{h}" for h in hours for kind in ("h", "l")]
    per_round = KEYS_PER_ROUND if whole else max(1, FIELDS_PER_ROUND // max(1, len(fields)))
    out: dict[str, GroupRows] = {}
    for start in range(0, len(values), per_round):
        chunk = values[start : start + per_round]
        async with client.pipeline(transaction=False) as pipe:
            for value in chunk:
                key = rollups.key(dimension, value)
                if whole:
                    pipe.hgetall(key)
                else:
                    pipe.hmget(key, fields)
            replies = await pipe.execute()
        for value, reply in zip(chunk, replies, strict=True):
            found = (
                {text(k): v for k, v in reply.items()}
                if whole
                else dict(zip(fields, reply, strict=True))
            )
            out[value] = _rows(found, period)
        step(len(chunk))
    return out


def _rows(found: dict[str, bytes | str | None], period: Period) -> GroupRows:
    rows = GroupRows()
    for name, packed in found.items():
        kind, bucket = name[:1], name[1:]
        if packed is None or kind not in ("h", "l") or not bucket.isdigit():
            continue
        hour = int(bucket)
        if hour not in period.hours:
            continue
        (rows.hours if kind == "h" else rows.late)[hour] = Usage.parse(packed)
    return rows
