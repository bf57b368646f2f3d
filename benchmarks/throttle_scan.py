"""Reading every active throttle among many identities' keys: prints numbers, asserts nothing.

    .venv/bin/python benchmarks/throttle_scan.py [--identities 100000]

`Store.throttles.active` (GET /api/throttles, the SSE snapshot, the dashboard, the
throttles-active gauge) SCANs for throttle keys among every identity's keys (5 per identity).
Measured side by side on an embedded Redis: redis-py's default SCAN step vs `SCAN_COUNT`.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import redis.asyncio as aioredis

from meterguard.streams.store import StoreConfig, build_store
from meterguard.streams.store.keys import SCAN_COUNT
from meterguard.streams.tools.embedded import EmbeddedRedis

COMMAND = (
    '{"command_id":"c","identity":"%s","action":"throttle","limits":{},"reason":"r",'
    '"alert_id":"a","issued_at":"2026-01-01T00:00:00Z","expires_at":"2099-01-01T00:00:00Z",'
    '"version":1}'
)


async def run(identities: int, throttled: int, workdir: Path) -> None:
    with EmbeddedRedis(workdir=workdir) as server:
        client = aioredis.Redis.from_url(server.url)
        store = build_store(client, StoreConfig(prefix="mg"))
        print(f"writing {identities * 5:,} keys…", flush=True)
        async with client.pipeline(transaction=False) as pipe:
            for i in range(identities):
                for part in ("meta", "win", "dd", "late", "state"):
                    pipe.set(store.keys.identity_key(f"id-{i}", part), "x")
                if i < throttled:
                    pipe.set(store.keys.throttle_key(f"id-{i}"), COMMAND % f"id-{i}")
            await pipe.execute()
        pattern = f"{store.config.prefix}:throttle:*"
        for label, count in (("redis-py default step (10)", None), ("SCAN_COUNT", SCAN_COUNT)):
            started = time.perf_counter()
            keys = [k async for k in client.scan_iter(match=pattern, count=count)]
            print(f"  {label:<28} {len(keys)} keys in {time.perf_counter() - started:.3f} s")
        started = time.perf_counter()
        found = await store.throttles.active()
        print(
            f"  throttles.active()           {len(found)} commands in "
            f"{time.perf_counter() - started:.3f} s"
        )
        await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--identities", type=int, default=100_000)
    parser.add_argument("--throttled", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mg-scan-") as tmp:
        asyncio.run(run(args.identities, args.throttled, Path(tmp)))


if __name__ == "__main__":
    main()
