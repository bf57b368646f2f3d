"""The Redis key layout of one namespace, the store's settings and the helpers every part shares.

Every key of one identity shares the `{identity}` hash tag, so the layout works on Redis
Cluster and one script can touch them atomically; a key without a hash tag (stats, audit,
recent alerts, the due list, the roll-up indexes) is only ever touched by a command of its own.
tests/integration/test_redis_cluster.py runs the worker on a three-node cluster and checks
every identity's keys share its slot (connection.py builds the cluster client). The whole
layout (the module named owns the key):

    {prefix}:{<identity>}:meta    hash: watermark, final/scored minute, counters   windows
    {prefix}:{<identity>}:win     hash: epoch minute -> "calls,in,out,cached,cost_nano,errors"
    {prefix}:{<identity>}:dd      hash: 64-bit id hashes by generation (dedupe.py) windows
    {prefix}:{<identity>}:late    hash: epoch hour -> packed row past lateness      windows
    {prefix}:{<identity>}:state   detector + policy checkpoint (JSON)               windows
    {prefix}:{<identity>}:released hash: alert_id -> operator release command id    throttles
    {prefix}:trace:{<trace_id>}   hash: one trace's call tree (1 h)                 traces
    {prefix}:trace:{<trace_id>}:credits  hash: root-caller credits to apply         traces
    {prefix}:rollup:{driven|<root>}[:applied]  cost a root identity drove, per hour driven
    {prefix}:tagents:{<trace_id>} hash: span links, held OTLP spans, decisions (1 h) trace_agents
    {prefix}:tagents-due          zset: trace_id -> earliest hold end               trace_agents
    {prefix}:throttle:{<identity>} active ThrottleCommand JSON, TTL = its expiry    throttles
    {prefix}:throttle-changes     pub/sub channel: every change of a throttle key   throttles
    {prefix}:audit                list: operator actions, newest first (capped)     operator_actions
    {prefix}:alerts:recent        list: newest alerts first (capped)                history
    {prefix}:{top}:tokens:<hour>  zset per event-time hour: identity -> tokens (26 h) history
    {prefix}:{top}:cost:<hour>    zset per event-time hour: identity -> nano-USD (26 h) history
    {prefix}:{top}:hours          zset: the hours those exist for (the rankings' "now") history
    {prefix}:stats                hash: pipeline counters (all identities)          stats
    {prefix}:peers:{<team>|<env>} hash: identity -> its packed levels (peer group)  peers

A peer group's key has a hash tag of its own: team and environment percent-encoded (`|`, `{`,
`}` and `%` included), so no team or environment name can make two groups share a key.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files
from urllib.parse import quote

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

from meterguard.detectors.features import MinuteWindow

# Keys per SCAN step when looking for throttle keys among all identities' keys: the default
# (10) took 10 s over 500k keys, 10,000 takes 0.24 s (benchmarks/throttle_scan.py).
SCAN_COUNT = 10_000


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


@dataclass(frozen=True)
class KeyLayout:
    """Every key name of one namespace (`prefix`)."""

    prefix: str

    def identity_key(self, identity: str, part: str) -> str:
        """One of an identity's keys: part is meta, win, dd, late, state or released."""
        return f"{self.prefix}:{{{identity}}}:{part}"

    def throttle_key(self, identity: str) -> str:
        return f"{self.prefix}:throttle:{{{identity}}}"

    @property
    def throttle_channel(self) -> str:
        """Pub/sub channel carrying every change of a throttle key (the SSE feed)."""
        return f"{self.prefix}:throttle-changes"

    def trace_key(self, trace_id: str) -> str:
        return f"{self.prefix}:trace:{{{trace_id}}}"

    def top_key(self, what: str, hour: int | None = None) -> str:
        # One hash tag for all of them: the rankings union several hours (one slot on Cluster).
        return f"{self.prefix}:{{top}}:{what}" + ("" if hour is None else f":{hour}")

    def peers_key(self, team: str, environment: str) -> str:
        """The peer group (team, environment)'s levels; a missing part is ""."""
        return f"{self.prefix}:peers:{{{peer_group_tag(team, environment)}}}"

    @property
    def alerts_key(self) -> str:
        return f"{self.prefix}:alerts:recent"

    @property
    def audit_key(self) -> str:
        return f"{self.prefix}:audit"

    @property
    def stats_key(self) -> str:
        return f"{self.prefix}:stats"

    @property
    def pipeline_totals_key(self) -> str:
        """The pipeline roll-up (rollups.PIPELINE_TARGET): exact new and late counts."""
        return f"{self.prefix}:rollup:{{pipeline|all}}"

    @property
    def meta_pattern(self) -> str:
        """SCAN pattern of every identity's meta key in this namespace only (replays'
        namespaces, `prefix:replay:…`, do not match)."""
        return f"{glob_escape(self.prefix)}:{{*}}:meta"

    def identity_of_meta_key(self, key: bytes | str) -> str:
        return text(key)[len(self.prefix) + 2 : -len("}:meta")]

    @property
    def throttle_pattern(self) -> str:
        return f"{glob_escape(self.prefix)}:throttle:*"


def load_script(client: aioredis.Redis, name: str) -> AsyncScript:
    """Register one of this package's `.lua` files with the client."""
    return client.register_script(files("meterguard.streams.store").joinpath(name).read_text())


def peer_group_tag(team: str, environment: str) -> str:
    """`<team>|<environment>`, each percent-encoded (every character but letters, digits and
    `_.-~`): injective, and free of `|` (the separator) and of `{`/`}` (the hash tag's ends)."""
    return f"{quote(team, safe='')}|{quote(environment, safe='')}"


def glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def unpack_row(minute: int, packed: bytes | str | None) -> MinuteWindow:
    """A minute (or late hour) row as the scripts pack it; None or empty: a zero row."""
    if not packed:
        return MinuteWindow(minute=minute)
    c, i, o, k, cost, e = (int(v) for v in text(packed).split(","))
    return MinuteWindow(minute, c, i, o, k, cost, e)
