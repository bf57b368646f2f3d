"""`meterguard bench --quick --json`: every key measured, on the configured servers (the
session's broker and Redis), and nothing of the run left behind on them. No timing
thresholds: --quick sizes say nothing about speed."""

from __future__ import annotations

import asyncio
import math
import os
import subprocess
import sys
from pathlib import Path

import orjson
import redis
from aiokafka.admin import AIOKafkaAdminClient

from meterguard.streams.tools.embedded import EmbeddedBroker

KEYS = (
    "raw_consume_eps",
    "faust_baseline_eps",
    "pipeline_eps",
    "pipeline_batched_eps",
    "replay_eps",
    "latency_p50_ms",
    "latency_p99_ms",
    "redis_bytes_per_identity",
    "redis_bytes_per_event_id",
    "rss_mb",
)


async def _topics(bootstrap: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return list(await admin.list_topics())
    finally:
        await admin.close()


def test_quick_bench_prints_every_key_and_cleans_up_the_configured_servers(
    broker: EmbeddedBroker, redis_url: str, tmp_path: Path
):
    client = redis.Redis.from_url(redis_url)
    client.set("someone-elses-data", "kept")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MG_")}
    env |= {"MG_KAFKA_BROKER": broker.url, "MG_REDIS_URL": redis_url}
    done = subprocess.run(
        [sys.executable, "-m", "meterguard.streams.tools.cli", "bench", "--quick", "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]
    result = orjson.loads(done.stdout.splitlines()[-1])
    for key in KEYS:
        value = result[key]
        assert isinstance(value, int | float), (key, value)
        assert math.isfinite(value), (key, value)
        assert value > 0, (key, value)
    # The run's topics, consumer groups' topics and keys are gone; other data is not.
    assert [k.decode() for k in client.scan_iter(count=1000)] == ["someone-elses-data"]
    client.close()
    assert not [t for t in asyncio.run(_topics(broker.bootstrap)) if t.startswith("mgbench-")]
