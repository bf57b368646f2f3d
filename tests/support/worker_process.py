"""`meterguard worker` as a real child process, for the integration tests that need one.

Each test module gets its own topics, Redis key prefix and consumer group (a unique tag), so
modules never see each other's data on the session's broker and Redis.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from meterguard.streams.runtime.topics import ensure_topics, topic_specs
from meterguard.streams.settings import Settings
from meterguard.streams.store import Store, build_store
from meterguard.streams.store.connection import redis_client
from meterguard.streams.store.stats import CHECKPOINTED, ROLLED_UP
from meterguard.streams.tools.embedded import EmbeddedBroker, free_port
from tests.support.polling import eventually

TOPICS = ("RAW", "EVENTS", "DLQ", "ALERTS", "THROTTLE", "ALERTS_DLQ", "AUDIT")


@dataclass
class Worker:
    settings: Settings
    env: dict[str, str]
    web: str  # http://127.0.0.1:<port>
    log: Path
    process: subprocess.Popen
    store: Store

    async def wait_counted(self, n: int, statuses: Iterable[str] = ("events_new",)) -> None:
        """Until the pipeline has counted `n` events with these statuses (all workers), and
        the steps that counted them have published and checkpointed (events_checkpointed:
        events_new / events_late are counted at ingest, before the step's checkpoint)."""
        statuses = tuple(statuses)

        async def counted() -> bool:
            stats = await self.store.stats.pipeline_counters()
            committed = stats.get(CHECKPOINTED, 0) + sum(
                stats.get(s, 0) for s in statuses if s not in ROLLED_UP
            )
            return sum(stats.get(s, 0) for s in statuses) >= n and committed >= n

        await eventually(counted, f"{n} events to be counted", log=self.log)

    async def wait_ready(self) -> None:
        """Until the worker's web server answers /readyz with 200 (Redis and broker up)."""

        async def ready() -> bool:
            try:
                async with aiohttp.ClientSession() as http, http.get(f"{self.web}/readyz") as r:
                    return r.status == 200
            except aiohttp.ClientError:
                return False  # not serving yet

        await eventually(ready, "the worker's web server ready", log=self.log)

    async def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=20)
        await self.store.redis.aclose()


def worker_env(
    broker: EmbeddedBroker, redis_url: str, tag: str, data_dir: Path, extra: Mapping[str, str]
) -> dict[str, str]:
    return {
        **os.environ,
        "MG_KAFKA_BROKER": broker.url,
        "MG_REDIS_URL": redis_url,
        "MG_APP_ID": f"mg-test-{tag}",
        "MG_KEY_PREFIX": f"t{tag}",
        "MG_DATA_DIR": str(data_dir),
        **{f"MG_TOPIC_{k}": f"{tag}.{k.lower()}" for k in TOPICS},
        "MG_TOPIC_PARTITIONS": "2",
        **extra,
    }


def settings_of(env: Mapping[str, str]) -> Settings:
    """Exactly the MG_ values of `env`: no process environment or .env file mixed in."""
    return Settings.model_validate(
        {k[3:].lower(): v for k, v in env.items() if k.startswith("MG_")}
    )


async def start_worker(
    broker: EmbeddedBroker,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    extra_env: Mapping[str, str] = {},
) -> Worker:
    """Creates the run's topics (Tansu would auto-create them with 4 partitions), then starts
    the worker. It joins its consumer group while the caller produces: the group reads from
    the earliest offset, so nothing produced meanwhile is missed."""
    tag = uuid.uuid4().hex[:8]
    env = worker_env(broker, redis_url, tag, tmp_path_factory.mktemp("faust"), extra_env)
    settings = settings_of(env)
    await ensure_topics(broker.bootstrap, topic_specs(settings))
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    port = free_port()
    # Popen returns once the long-running worker is forked; nothing here waits on it.
    process = subprocess.Popen(  # noqa: ASYNC220
        [sys.executable, "-m", "meterguard.streams.tools.cli", "worker", "--web-port", str(port)],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    store = build_store(redis_client(redis_url, settings.redis_options), settings.store_config())
    return Worker(settings, env, f"http://127.0.0.1:{port}", log, process, store)


async def produce(
    bootstrap: str, topic: str, docs: Iterable[dict], key: str | None = "identity"
) -> int:
    """Send each document as JSON, keyed by its `key` field; flushed before returning."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=10)
    await producer.start()
    sent = 0
    try:
        for doc in docs:
            k = str(doc[key]).encode() if key and key in doc else None
            await producer.send(topic, key=k, value=orjson.dumps(doc))
            sent += 1
        await producer.flush()
    finally:
        await producer.stop()
    return sent


async def read_topics(settings: Settings, topics: list[str]) -> dict[str, list[dict]]:
    """Every JSON document of these topics so far, per topic, in partition order. A record
    holding a JSON array (a batch on `metering.events`) counts as its elements, in order."""
    consumer = AIOKafkaConsumer(
        *topics, bootstrap_servers=settings.bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    found: dict[str, list[dict]] = {t: [] for t in topics}
    try:
        while True:
            batches = await consumer.getmany(timeout_ms=1500)
            if not batches:
                return found
            for tp, records in batches.items():
                for record in records:
                    doc = orjson.loads(record.value)
                    found[tp.topic] += doc if isinstance(doc, list) else [doc]
    finally:
        await consumer.stop()
