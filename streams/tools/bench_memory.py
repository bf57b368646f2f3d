"""`meterguard bench` Redis memory: bytes per active identity and per remembered event id.

Fill. `templates` identities of the classic simulation send `minutes` of traffic through the
replay pipeline (every detector, the checkpoint written) into a kept namespace. Each template's
own keys (hash tag `{<identity>}`, or `{<dimension>|<identity>}` for its roll-ups) are then
copied server-side (COPY: same encoding, same TTL) under new identities until the namespace
holds `identities` of them, and every shared zset, hash or set that has a template as a member
(rankings, roll-up member sets, peer groups) gets the copies as members too, with the
template's score or value. Replaying the whole population would take far too long.

Measure. MEMORY USAGE (all elements) of the keys of a random sample of `sample` identities,
per key kind, divided by the sample; shared keys in full, divided by the identities, except
the per-trace keys (TRAFFIC_KINDS), which grow with traffic, not identities: divided by the
templates whose traffic wrote them. `redis_bytes_per_identity` is the sum without the dedupe
kinds; `redis_bytes_per_event_id` is the sampled dedupe keys' bytes over the event ids they
remember (`ids_remembered`).
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import orjson
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from meterguard.streams.offline.replay import ReplayOutputs, replay_file
from meterguard.streams.settings import Settings
from meterguard.streams.simulation.config import SimConfig
from meterguard.streams.simulation.simulate import generate
from meterguard.streams.store.keys import text
from meterguard.streams.tools.bench_traffic import Progress

# The key-kind suffixes of an identity's dedupe keys (`{prefix}:{<identity>}:<kind>`).
DEDUPE_KINDS = ("dd",)
# Shared key kinds keyed by trace, not identity: their share is per template identity.
TRAFFIC_KINDS = ("trace", "tagents", "tagents-due")
PIPELINE_CHUNK = 2000  # commands per round trip


async def ids_remembered(client: aioredis.Redis, key: str) -> int:
    """How many event ids one dedupe key remembers. A zset holds one member per id; a hash of
    packed 64-bit hashes (store/dedupe.py) holds "<ids>,<depth>" in each generation's head
    field (the fields without a `:`)."""
    kind = await client.type(key)
    if kind == b"zset":
        return int(await client.zcard(key))
    if kind == b"hash":
        fields = await client.hgetall(key)
        return sum(int(text(v).split(",")[0]) for f, v in fields.items() if ":" not in text(f))
    return 0


@dataclass
class Census:
    """A namespace's keys: each identity's own (with its tag and kind) and the shared ones."""

    identities: list[str]
    owned: dict[str, list[tuple[str, str, str]]]  # identity -> (key, tag, kind)
    shared: dict[str, str]  # key -> kind


@dataclass
class MemoryReport:
    identities: int
    templates: int
    minutes: int
    sampled: int
    per_kind: dict[str, float]  # bytes per identity by key kind ("shared <kind>" for shared)
    per_identity: float  # without DEDUPE_KINDS
    dedupe_per_identity: float
    ids_per_identity: float
    per_event_id: float
    used_memory_per_identity: float  # INFO used_memory growth / identities (all keys)
    notes: list[str] = field(default_factory=list)


def classify(rest: str, identities: set[str]) -> tuple[str | None, str, str]:
    """(owner identity or None, tag, kind) of a key, `rest` being it without `namespace:`."""
    if "{" in rest and "}" in rest:
        tag = rest[rest.index("{") + 1 : rest.index("}")]
        owner = tag if tag in identities else tag.split("|", 1)[-1]
        if owner in identities:
            head, tail = rest.split("{", 1)[0], rest.split("}", 1)[1]
            dimension = tag[: -len(owner)].rstrip("|")
            kind = (head + dimension + tail).strip(":") or "meta"
            return owner, tag, kind
        if rest.startswith("{"):
            return None, tag, "{" + tag + "}"
    return None, "", rest.replace("{", ":").split(":", 1)[0]


async def census(client: aioredis.Redis, namespace: str) -> Census:
    keys = [k.decode() async for k in client.scan_iter(match=f"{namespace}:*", count=10_000)]
    start = len(namespace) + 1
    identities = {
        k[start + 1 : -len("}:meta")]
        for k in keys
        if k.endswith("}:meta") and k[start:].startswith("{") and k.count("{") == 1
    }
    out = Census(sorted(identities), defaultdict(list), {})
    for key in keys:
        owner, tag, kind = classify(key[start:], identities)
        if owner is None:
            out.shared[key] = kind
        else:
            out.owned[owner].append((key, tag, kind))
    return out


async def fill_templates(
    folder: Path, settings: Settings, redis_url: str, templates: int, minutes: int, seed: int,
    batch: int,
) -> str:  # fmt: skip
    """Replay `minutes` of `templates` identities into a kept namespace -> its name."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    start = now - timedelta(minutes=minutes + 2)
    cfg = SimConfig(identities=templates, start=start, minutes=minutes, seed=seed, incidents=0)
    path = folder / "memory-templates.jsonl"
    with path.open("wb") as out:
        for doc in generate(cfg):
            out.write(orjson.dumps(doc) + b"\n")
    outputs = ReplayOutputs(folder / "memory-alerts.jsonl", folder / "memory-throttles.jsonl")
    summary = await replay_file(path, outputs, settings, redis_url, batch, False, keep_state=True)
    return summary.namespace


async def clone(
    client: aioredis.Redis, found: Census, count: int, progress: Progress
) -> dict[str, str]:
    """Copies of the templates until there are `count` identities -> copy -> its template."""
    templates = found.identities
    copies = {
        f"clone-{n:08d}": templates[n % len(templates)] for n in range(count - len(templates))
    }
    commands: list[tuple[str, str]] = []
    for name, template in copies.items():
        for key, tag, _kind in found.owned[template]:
            new_tag = tag[: len(tag) - len(template)] + name
            commands.append((key, key.replace("{" + tag + "}", "{" + new_tag + "}", 1)))
    for at in range(0, len(commands), PIPELINE_CHUNK):
        await _copy(client, commands[at : at + PIPELINE_CHUNK])
        if at and at % (50 * PIPELINE_CHUNK) == 0:
            progress(f"  memory: {at:,}/{len(commands):,} keys copied")
    by_template: dict[str, list[str]] = defaultdict(list)
    for name, template in copies.items():
        by_template[template].append(name)
    for key, kind in found.shared.items():
        if kind not in TRAFFIC_KINDS:
            await _add_members(client, key, by_template)
    return copies


async def _copy(client: aioredis.Redis, pairs: list[tuple[str, str]]) -> None:
    try:
        async with client.pipeline(transaction=False) as pipe:
            for source, target in pairs:
                pipe.copy(source, target, replace=True)
            await pipe.execute()
    except ResponseError:  # no COPY (Redis < 6.2): DUMP + RESTORE with the same TTL
        async with client.pipeline(transaction=False) as pipe:
            for source, _target in pairs:
                pipe.dump(source)
                pipe.pttl(source)
            replies = await pipe.execute()
        async with client.pipeline(transaction=False) as pipe:
            for (_source, target), dumped, ttl in zip(
                pairs, replies[::2], replies[1::2], strict=True
            ):
                pipe.restore(target, max(int(ttl), 0), dumped, replace=True)
            await pipe.execute()


async def _add_members(client: aioredis.Redis, key: str, copies: dict[str, list[str]]) -> None:
    kind = await client.type(key)
    if kind == b"zset":
        pairs = cast(list[tuple[bytes, float]], await client.zrange(key, 0, -1, withscores=True))
        scores = {text(m): float(s) for m, s in pairs}
        ranked = [(c, scores[t]) for t, names in copies.items() if t in scores for c in names]
        for at in range(0, len(ranked), PIPELINE_CHUNK):
            await client.zadd(key, dict(ranked[at : at + PIPELINE_CHUNK]))
    elif kind == b"hash":
        values = {text(f): text(v) for f, v in (await client.hgetall(key)).items()}
        fields = [(c, values[t]) for t, names in copies.items() if t in values for c in names]
        for at in range(0, len(fields), PIPELINE_CHUNK):
            await client.hset(key, mapping=dict(fields[at : at + PIPELINE_CHUNK]))
    elif kind == b"set":
        members = {text(m) for m in await client.smembers(key)}
        added = [c for t, names in copies.items() if t in members for c in names]
        for at in range(0, len(added), PIPELINE_CHUNK):
            await client.sadd(key, *added[at : at + PIPELINE_CHUNK])


async def measure(
    client: aioredis.Redis,
    found: Census,
    copies: dict[str, str],
    sample: int,
    seed: int,
    minutes: int,
    used_before: int,
) -> MemoryReport:
    everyone = found.identities + list(copies)
    chosen = random.Random(seed).sample(everyone, min(sample, len(everyone)))
    keys: list[tuple[str, str]] = []  # (key, kind)
    for identity in chosen:
        template = copies.get(identity, identity)
        for key, tag, kind in found.owned[template]:
            if identity != template:
                new_tag = tag[: len(tag) - len(template)] + identity
                key = key.replace("{" + tag + "}", "{" + new_tag + "}", 1)
            keys.append((key, kind))
    sizes = await _usage(client, [k for k, _ in keys])
    per_kind: dict[str, float] = defaultdict(float)
    ids = 0
    for (key, kind), used in zip(keys, sizes, strict=True):
        per_kind[kind] += used / len(chosen)
        if kind in DEDUPE_KINDS:
            ids += await ids_remembered(client, key)
    shared = list(found.shared.items())
    for (_key, kind), used in zip(
        shared, await _usage(client, [k for k, _ in shared]), strict=True
    ):
        divisor = len(found.identities) if kind in TRAFFIC_KINDS else len(everyone)
        per_kind[f"shared {kind}"] += used / divisor
    dedupe = sum(v for k, v in per_kind.items() if k in DEDUPE_KINDS)
    used_after = int((await client.info("memory"))["used_memory"])
    return MemoryReport(
        identities=len(everyone),
        templates=len(found.identities),
        minutes=minutes,
        sampled=len(chosen),
        per_kind=dict(sorted(per_kind.items())),
        per_identity=sum(per_kind.values()) - dedupe,
        dedupe_per_identity=dedupe,
        ids_per_identity=ids / len(chosen),
        per_event_id=dedupe * len(chosen) / ids if ids else 0.0,
        used_memory_per_identity=(used_after - used_before) / len(everyone),
    )


async def _usage(client: aioredis.Redis, keys: list[str]) -> list[int]:
    out: list[int] = []
    for at in range(0, len(keys), PIPELINE_CHUNK):
        async with client.pipeline(transaction=False) as pipe:
            for key in keys[at : at + PIPELINE_CHUNK]:
                pipe.memory_usage(key, samples=0)
            out += [int(v or 0) for v in await pipe.execute()]
    return out


async def headroom_cap(client: aioredis.Redis, found: Census, wanted: int, notes: list[str]) -> int:
    """`wanted`, or fewer identities if a configured maxmemory could not hold the copies
    (at most half the remaining headroom)."""
    info = await client.info("memory")
    limit, used = int(info.get("maxmemory", 0)), int(info["used_memory"])
    if not limit or not found.identities:
        return wanted
    owned = await _usage(client, [k for i in found.identities for k, _t, _k in found.owned[i]])
    each = sum(owned) / len(found.identities)
    fits = len(found.identities) + int(max(0, (limit - used) / 2) / max(each, 1.0))
    if fits < wanted:
        notes.append(f"identities capped at {fits:,} (maxmemory {limit / 2**20:,.0f} MiB)")
        return fits
    return wanted
