"""Peer groups' current levels: a new identity's only yardstick (cold start from peers).

Key (one per peer group = the identity's team and environment; its own hash tag, see keys.py):

    {prefix}:peers:{<team>|<environment>}  hash: identity -> "minute,calls,tokens,cost_usd,
                                           calls_phi,tokens_phi,cost_usd_phi" (per minute)

Only warm identities write, at most once per REPORT_EVERY_MINUTES of event time each
(runtime/peer_rates.py decides), and only in the checkpoint commit's pipelined round trip
(Windows.commit): one HSET per group with the batch's reports of that group, then EXPIRE
(ttl_s, like identity keys). Never inside an identity's script: the key is not the identity's.

Reads: one pipelined HSCAN per group (cursor 0, COUNT MAX_PEERS) for groups with a cold
identity. A small hash (listpack, ≤ 128 fields by default) comes back whole; a big one gives
about MAX_PEERS fields in hash order (a sample unrelated to rate: an unbiased quantile), and
of those the newest MAX_PEERS are kept. A field reported more than ttl_s of event time before
the group's newest one, or unreadable, is stale: left out, and deleted in the next commit.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

import redis.asyncio as aioredis
from redis.typing import EncodableT, FieldT

from meterguard.streams.store.keys import KeyLayout, StoreConfig, text

# Peers read per group and batch. Why 1,000: a team's busiest among 1,000 identities is its
# busy end for any practical purpose; more would only grow the reply (~80 bytes each) on
# every batch with a newcomer.
MAX_PEERS = 1000
# The packed value's figures after the minute, in order: the spike detector's per-minute level
# of each metric and its dispersion (IdentityContext.peer_rates' names).
LEVEL_FIELDS = ("calls", "tokens", "cost_usd", "calls_phi", "tokens_phi", "cost_usd_phi")


class PeerGroup(NamedTuple):
    """An identity's peers: the same team and environment ("" when missing, not both)."""

    team: str
    environment: str


@dataclass(frozen=True)
class PeerLevels:
    minute: int  # the event-time minute the levels were reported at
    rates: Mapping[str, float]  # LEVEL_FIELDS -> value

    def pack(self) -> str:
        return ",".join(
            [str(self.minute), *(format(self.rates.get(f, 0.0), ".6g") for f in LEVEL_FIELDS)]
        )

    @classmethod
    def unpack(cls, packed: bytes | str) -> PeerLevels | None:
        """None for a value this layout cannot read (never fails a batch)."""
        parts = text(packed).split(",")
        if len(parts) != 1 + len(LEVEL_FIELDS):
            return None
        try:
            minute, values = int(parts[0]), [float(v) for v in parts[1:]]
        except ValueError:
            return None
        if not all(math.isfinite(v) and v >= 0 for v in values):
            return None
        return cls(minute, dict(zip(LEVEL_FIELDS, values, strict=True)))


@dataclass(frozen=True)
class PeerReport:
    """One warm identity's levels, to be written with the commit."""

    group: PeerGroup
    identity: str
    levels: PeerLevels


@dataclass
class PeerSnapshot:
    """What one read found in a group: current peers, and fields past the horizon."""

    levels: dict[str, PeerLevels] = field(default_factory=dict)
    stale: list[str] = field(default_factory=list)


class Peers:
    def __init__(self, client: aioredis.Redis, config: StoreConfig, keys: KeyLayout) -> None:
        self._redis = client
        self._config = config
        self._keys = keys

    def key(self, group: PeerGroup) -> str:
        return self._keys.peers_key(group.team, group.environment)

    async def read(self, groups: Iterable[PeerGroup]) -> dict[PeerGroup, PeerSnapshot]:
        """Each group's peers, one HSCAN per group in one round trip."""
        groups = list(groups)
        if not groups:
            return {}
        async with self._redis.pipeline(transaction=False) as pipe:
            for group in groups:
                pipe.hscan(self.key(group), 0, count=MAX_PEERS)
            replies = await pipe.execute()
        horizon = self._config.ttl_s // 60
        return {
            group: _snapshot(fields, horizon)
            for group, (_, fields) in zip(groups, replies, strict=True)
        }

    def queue_writes(
        self,
        pipe: aioredis.client.Pipeline,
        reports: Iterable[PeerReport],
        stale: Mapping[PeerGroup, Iterable[str]],
    ) -> None:
        """On the checkpoint's pipeline: the reports (HSET + EXPIRE per group), then the stale
        fields a read found (HDEL; a peer that reports again meanwhile is back within
        `report_every` minutes)."""
        by_group: dict[PeerGroup, dict[FieldT, EncodableT]] = defaultdict(dict)
        for report in reports:
            by_group[report.group][report.identity] = report.levels.pack()
        for group, mapping in by_group.items():
            pipe.hset(self.key(group), mapping=mapping)
            pipe.expire(self.key(group), self._config.ttl_s)
        for group, fields in stale.items():
            gone = [f for f in fields if f not in by_group.get(group, {})]
            if gone:
                pipe.hdel(self.key(group), *gone)


def _snapshot(fields: Mapping[bytes | str, bytes | str], horizon_minutes: int) -> PeerSnapshot:
    snapshot = PeerSnapshot()
    found = [(text(k), PeerLevels.unpack(v)) for k, v in fields.items()]
    readable = [(identity, levels) for identity, levels in found if levels is not None]
    snapshot.stale = [identity for identity, levels in found if levels is None]
    if not readable:
        return snapshot
    newest = max(levels.minute for _, levels in readable)
    current = []
    for identity, levels in readable:
        if levels.minute < newest - horizon_minutes:
            snapshot.stale.append(identity)
        else:
            current.append((identity, levels))
    current.sort(key=lambda item: item[1].minute, reverse=True)
    snapshot.levels = dict(current[:MAX_PEERS])
    return snapshot
