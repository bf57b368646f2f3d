"""All of meterguard's Redis code, one module per job (the key layout: keys.py).

    keys.py              key names, StoreConfig, helpers every module shares
    windows.py           ingest (dedupe, lateness; ingest.lua), checkpoints (commit_state.lua),
                         minute window / late / counter / watermark reads
    traces.py            traces' call trees (trace.lua); root-caller credits (driven.py,
                         driven.lua): the cost each identity drove downstream, exactly once
    trace_agents.py      OTLP spans held for their agent's span, traces' span links
    throttles.py         which throttle wins (apply_throttle.lua), active throttles
    operator_actions.py  operator release (operator_release.lua), audit log
    history.py           recent alerts, hourly rankings by tokens and cost
    stats.py             pipeline counters, the identities and what the namespace holds
    peers.py             peer groups' levels: a new identity's yardstick (written in commits)
    rollups.py           team, business unit and environment roll-ups, exactly once (rollup.lua)
    births.py            identities seen for the first time, per minute (the flood detector)
    connection.py        every client: one Redis or a Redis Cluster, TLS, ACL (redis_client)
    retry.py             riding out a Redis outage or a cluster failover (retrying)

Callers hold one `Store`, made by `build_store(client, config)`: `store.throttles.apply(...)`.
This package is the lowest layer of streams: it imports nothing from other streams packages.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis

from meterguard.streams.store.births import Births
from meterguard.streams.store.history import History
from meterguard.streams.store.keys import KeyLayout, StoreConfig
from meterguard.streams.store.operator_actions import OperatorActions
from meterguard.streams.store.peers import Peers
from meterguard.streams.store.rollups import Rollups
from meterguard.streams.store.stats import Stats
from meterguard.streams.store.throttles import Throttles
from meterguard.streams.store.traces import Traces
from meterguard.streams.store.windows import Windows

__all__ = ["Store", "StoreConfig", "build_store"]


@dataclass(frozen=True)
class Store:
    """One namespace of Redis, by job; all parts share one client."""

    redis: aioredis.Redis
    config: StoreConfig
    keys: KeyLayout
    windows: Windows
    traces: Traces
    throttles: Throttles
    operator: OperatorActions
    history: History
    stats: Stats
    peers: Peers
    rollups: Rollups
    births: Births


def build_store(client: aioredis.Redis, config: StoreConfig) -> Store:
    keys = KeyLayout(config.prefix)
    history = History(client, keys)
    stats = Stats(client, keys)
    peers = Peers(client, config, keys)
    return Store(
        redis=client,
        config=config,
        keys=keys,
        windows=Windows(client, config, keys, history, stats, peers),
        traces=Traces(client, keys, config),
        throttles=Throttles(client, keys),
        operator=OperatorActions(client, config, keys),
        history=history,
        stats=stats,
        peers=peers,
        rollups=Rollups(client, config, keys),
        births=Births(client, keys),
    )
