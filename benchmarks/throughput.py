"""Throughput benchmark (decode, replay with and without the GC tuning, a real worker):
prints numbers, asserts nothing.

    .venv/bin/python benchmarks/throughput.py [--identities 300 --minutes 240]

1. decode: µs per native JSON event.
2. replay: the shared batch pipeline (decode -> Redis script -> detectors -> policy) on a
   simulated file, events/s, batch 5000 vs 500 side by side.
3. worker: a real `meterguard worker` process on an embedded Tansu broker and Redis, events/s
   from the first produced event until Redis has counted them all.
Redis memory per identity and per event id: `meterguard bench` (streams/tools/bench_memory.py).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer

from meterguard.models import utc_now
from meterguard.streams.decoding.decode import decode
from meterguard.streams.offline.replay import ReplayOutputs, replay_file
from meterguard.streams.runtime.topics import ensure_topics, topic_specs
from meterguard.streams.settings import Settings
from meterguard.streams.simulation.config import SimConfig
from meterguard.streams.simulation.simulate import generate
from meterguard.streams.store import build_store
from meterguard.streams.tools.cli import tune_gc
from meterguard.streams.tools.embedded import EmbeddedBroker, EmbeddedRedis


def simulated_file(folder: Path, identities: int, minutes: int) -> tuple[Path, int]:
    start = (datetime.now(UTC) - timedelta(minutes=minutes + 10)).replace(second=0, microsecond=0)
    cfg = SimConfig(identities=identities, start=start, minutes=minutes, seed=3)
    path = folder / "events.jsonl"
    count = 0
    with path.open("wb") as out:
        for event in generate(cfg):
            out.write(orjson.dumps(event) + b"\n")
            count += 1
    return path, count


def bench_decode(path: Path, limit: int = 50_000) -> float:
    lines = path.read_bytes().splitlines()[:limit]
    now = utc_now()
    started = time.perf_counter()
    for raw in lines:
        decode(raw, now)
    return (time.perf_counter() - started) / len(lines) * 1e6


def bench_replay(path: Path, count: int, redis_url: str, batch: int, folder: Path) -> float:
    outputs = ReplayOutputs(folder / "a.jsonl", folder / "t.jsonl", folder / "s.jsonl")
    settings = Settings(_env_file=None)
    started = time.perf_counter()
    asyncio.run(replay_file(path, outputs, settings, redis_url, batch, show_progress=False))
    return count / (time.perf_counter() - started)


async def bench_worker(path: Path, count: int, folder: Path) -> float:
    with (
        EmbeddedBroker(workdir=folder / "broker") as broker,
        EmbeddedRedis(workdir=folder / "redis") as server,
    ):
        env = {
            **os.environ,
            "MG_KAFKA_BROKER": broker.url,
            "MG_REDIS_URL": server.url,
            "MG_DATA_DIR": str(folder / "faust"),
        }
        settings = Settings(_env_file=None, kafka_broker=broker.url, redis_url=server.url)
        await ensure_topics(broker.bootstrap, topic_specs(settings))
        log = (folder / "worker.log").open("wb")
        # Popen returns once the long-running worker is forked; nothing here waits on it.
        worker = subprocess.Popen(  # noqa: ASYNC220
            [sys.executable, "-m", "meterguard.streams.tools.cli", "worker", "--without-web"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        client = aioredis.Redis.from_url(server.url)
        store = build_store(client, settings.store_config())
        try:
            producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=20)
            await producer.start()
            started = time.perf_counter()
            with path.open("rb") as handle:
                for line in handle:
                    key = orjson.loads(line)["identity"].encode()
                    await producer.send(settings.topic_raw, key=key, value=line.rstrip())
            await producer.stop()
            produced_s = time.perf_counter() - started
            print(f"  produced {count:,} events in {produced_s:.1f}s", flush=True)
            last = -1
            while True:
                counted = (await store.stats.pipeline_counters()).get("events_new", 0)
                if counted >= count:
                    break
                if counted != last:
                    print(f"  counted {counted:,}/{count:,}", flush=True)
                    last = counted
                await asyncio.sleep(2.0)
            return count / (time.perf_counter() - started)
        finally:
            worker.terminate()
            worker.wait(timeout=30)
            await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--identities", type=int, default=300)
    parser.add_argument("--minutes", type=int, default=240)
    parser.add_argument("--skip-worker", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mg-bench-") as tmp:
        folder = Path(tmp)
        path, count = simulated_file(folder, args.identities, args.minutes)
        print(f"simulated {count:,} events, {args.identities} identities, {args.minutes} min")
        print(f"decode: {bench_decode(path):.1f} µs/event")
        with EmbeddedRedis(workdir=folder / "replay-redis") as server:
            # Side by side: the interpreter's default collector, then meterguard's tuning
            # (streams/tools/cli.py tune_gc, what `meterguard replay` and workers run with).
            defaults = gc.get_threshold()
            for batch in (5000, 500):
                gc.set_threshold(*defaults)
                plain = bench_replay(path, count, server.url, batch, folder)
                tune_gc()
                tuned = bench_replay(path, count, server.url, batch, folder)
                gc.unfreeze()
                print(
                    f"replay (batch {batch}): {tuned:,.0f} events/s with tune_gc, "
                    f"{plain:,.0f} with the default collector ({tuned / plain:.2f}x)"
                )
            gc.set_threshold(*defaults)
        if not args.skip_worker:
            print("worker (2 agents, one process, embedded Tansu + Redis):")
            rate = asyncio.run(bench_worker(path, count, folder))
            print(f"worker: {rate:,.0f} events/s end to end")


if __name__ == "__main__":
    main()
