"""Every Redis key a replay leaves: an identity's keys carry it as their hash tag (one Redis
Cluster slot per identity), every key expires or is bounded by design, and an identity's
windows, checkpoint and dedupe stay within their stated sizes."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import redis.asyncio as aioredis

from meterguard.streams.offline.replay import ReplayOutputs, replay_file
from meterguard.streams.settings import Settings
from meterguard.streams.simulation.config import SimConfig
from meterguard.streams.simulation.simulate import generate

WINDOW_MINUTES = 30
# Keys that never expire, each bounded another way.
UNEXPIRING = {
    "stats": "one hash of pipeline counters",
    "{top}:hours": "trimmed to the hours a ranking can read (history.py)",
    "alerts:recent": "a list trimmed to the newest alerts (history.py)",
    "births-since": "one number: the namespace's first minute with a birth (births.py)",
}


async def test_keys_share_their_identity_slot_expire_and_stay_bounded(
    redis_url: str, tmp_path: Path
) -> None:
    start = (datetime.now(UTC) - timedelta(minutes=200)).replace(second=0, microsecond=0)
    events = list(generate(SimConfig(identities=25, start=start, minutes=120, seed=4)))
    source = tmp_path / "events.jsonl"
    source.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    identities = {e["identity"] for e in events}
    settings = Settings(_env_file=None, key_prefix="layout", window_minutes=WINDOW_MINUTES)
    outputs = ReplayOutputs(tmp_path / "a.jsonl", tmp_path / "t.jsonl")
    summary = await replay_file(
        source, outputs, settings, redis_url, 500, show_progress=False, keep_state=True
    )
    client = aioredis.Redis.from_url(redis_url)
    try:
        prefix = summary.namespace + ":"
        keys = [k.decode() async for k in client.scan_iter(match=prefix + "*", count=1000)]
        assert len(keys) > 4 * len(identities)
        for key in keys:
            rest = key[len(prefix) :]
            tags = re.findall(r"\{([^}]*)\}", rest)
            # An identity is named in a key only as its hash tag (its slot), never outside.
            outside = re.sub(r"\{[^}]*\}", "", rest).split(":")
            assert not identities.intersection(outside), key
            if rest.startswith("rollup:{identity|"):
                assert tags[0].removeprefix("identity|") in identities
            ttl = await client.ttl(key)
            assert ttl > 0 or rest in UNEXPIRING, f"{key} never expires"
        for identity in identities:
            tag = f"{prefix}{{{identity}}}"
            if not await client.exists(f"{tag}:meta"):
                continue
            # Final minutes beyond the window are dropped (a few open ones may wait).
            assert await client.hlen(f"{tag}:win") <= WINDOW_MINUTES + 3
            state = await client.get(f"{tag}:state")
            assert state is not None and len(state) < 8 * 1024
            assert await client.type(f"{tag}:dd") == b"hash"
    finally:
        await client.aclose()
