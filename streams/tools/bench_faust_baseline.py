"""The bare Faust baseline of `meterguard bench`: one agent that counts messages, nothing else.

    python -m meterguard.streams.tools.bench_faust_baseline   (environment below)

It consumes MGB_TOPIC from the earliest offset as consumer group MGB_APP_ID, with the
worker's consumer-group timings (MG_REBALANCE_TIMEOUT_S, ...), one message at a time
(`async for`), and writes its count to the Redis key MGB_COUNT_KEY every COUNT_EVERY_S, where
the bench reads it the way it reads the worker's `events_new` (bench_traffic.Throughput).

Environment: MGB_BROKER (kafka://host:port), MGB_TOPIC, MGB_PARTITIONS, MGB_APP_ID,
MGB_REDIS_URL, MGB_COUNT_KEY, MGB_DATA_DIR.
"""

from __future__ import annotations

import os
import sys

import faust

from meterguard.streams.settings import Settings
from meterguard.streams.store.connection import redis_client

COUNT_EVERY_S = 0.1


def create_baseline_app(env: dict[str, str]) -> faust.App:
    settings = Settings()
    app = faust.App(
        env["MGB_APP_ID"],
        broker=env["MGB_BROKER"],
        topic_partitions=int(env["MGB_PARTITIONS"]),
        broker_rebalance_timeout=settings.rebalance_timeout_s,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_interval_s,
        consumer_auto_offset_reset="earliest",
        store="memory://",
        datadir=env["MGB_DATA_DIR"],
        web_enabled=False,
    )
    topic = app.topic(
        env["MGB_TOPIC"],
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )
    client = redis_client(env["MGB_REDIS_URL"], settings.redis_options)
    key = env["MGB_COUNT_KEY"]
    counted = [0]

    @app.agent(topic)
    async def count(stream: faust.StreamT[bytes]) -> None:
        async for _value in stream:
            counted[0] += 1

    @app.timer(interval=COUNT_EVERY_S)  # type: ignore[untyped-decorator]
    async def publish_count() -> None:
        await client.set(key, counted[0])

    return app


def main() -> None:
    app = create_baseline_app(dict(os.environ))
    sys.argv = [sys.argv[0], "worker", "--without-web", "--loglevel", "warn"]
    app.main()


if __name__ == "__main__":
    main()
