"""The I/O side of the attribution check (streams/evaluation/attribution.py): replay a file
into a fresh namespace as `meterguard replay` does, read its roll-ups and driven cost, compare,
and drop the namespace only then (unless asked to keep it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from meterguard.streams.evaluation.attribution import (
    GROUP_DIMENSIONS,
    AttributionCheck,
    Observed,
    Rows,
    compare,
    recompute,
)
from meterguard.streams.offline.reconcile_run import rules_of
from meterguard.streams.offline.replay import (
    ReplayOutputs,
    ReplayRun,
    ReplaySummary,
    drop_namespace,
    feed_file,
)
from meterguard.streams.policy.config import PolicyConfig
from meterguard.streams.settings import Settings
from meterguard.streams.simulation.chains import NO_USAGE, ChainLabel, Usage, add
from meterguard.streams.store import Store, build_store
from meterguard.streams.store.rollups import RollupRows


@dataclass(frozen=True)
class CheckedReplay:
    summary: ReplaySummary
    attribution: AttributionCheck


async def replay_and_check(
    source: Path,
    outputs: ReplayOutputs | None,
    settings: Settings,
    redis_url: str,
    chains: Sequence[ChainLabel],
    *,
    batch_size: int = 5000,
    show_progress: bool = True,
    policy: PolicyConfig | None = None,
    keep_namespace: bool = False,
    facts: dict[str, Any] | None = None,
) -> CheckedReplay:
    """Replay `source` (settings.registry attributes it), then check its attribution against
    the events recomputed under the same registry and the chains' known root costs."""
    run = ReplayRun(outputs, settings, redis_url, keep_state=True, policy=policy)
    async with run:
        try:
            await feed_file(source, batch_size, False, show_progress, source.name, run.batch)
            await run.finish()
            store = build_store(run.client, settings.store_config(prefix=run.namespace))
            observed = await read_observed(store)
        finally:
            if not keep_namespace:
                await drop_namespace(run.client, run.namespace)
    want = await asyncio.to_thread(recompute, _lines(source), settings.registry, rules_of(settings))
    check = compare(
        want, observed, chains, {"registered": len(settings.registry.identities), **(facts or {})}
    )
    return CheckedReplay(run.summary, check)


async def read_observed(store: Store) -> Observed:
    """Every team, business-unit, environment and identity roll-up, the unregistered list and
    each root's driven cost summed over its hours."""
    out = Observed()
    targets = [
        (d, v) for d in (*GROUP_DIMENSIONS, "identity") for v in await store.rollups.values(d)
    ]
    rows = await asyncio.gather(*(store.rollups.rows(d, v) for d, v in targets))
    for (dimension, value), found in zip(targets, rows, strict=True):
        if dimension == "identity":
            out.identities[value] = _rows(found)
        else:
            out.groups[(dimension, value)] = _rows(found)
    out.unregistered = set(await store.rollups.unregistered())
    roots = await store.traces.driven_identities()
    hours = await asyncio.gather(*(store.traces.driven(root) for root in roots))
    for root, by_hour in zip(roots, hours, strict=True):
        total = NO_USAGE
        for row in by_hour.values():
            total = add(total, _usage(row))
        if total[0]:
            out.driven[root] = total
    return out


def _usage(row: Any) -> Usage:
    return (
        row.calls, row.input_tokens, row.output_tokens, row.cached_tokens,
        row.cost_nano_usd, row.errors,
    )  # fmt: skip


def _rows(found: RollupRows) -> Rows:
    return Rows(
        hours={h: _usage(r) for h, r in found.hours.items()},
        late={h: _usage(r) for h, r in found.late_hours.items()},
    )


def _lines(path: Path) -> Iterator[dict[str, Any]]:
    with path.open("rb") as handle:
        for line in handle:
            if line.strip():
                try:
                    doc = orjson.loads(line)
                except orjson.JSONDecodeError:
                    doc = None
                yield doc if isinstance(doc, dict) else {}
