"""Delivery latency benchmark: prints numbers, asserts nothing.

    .venv/bin/python benchmarks/delivery_latency.py [--runaways 12]

A real `meterguard worker` on an embedded Tansu broker and Redis, a local webhook receiver
(signed deliveries verified) and an SSE follower of /api/throttles/stream. Traffic: quiet
identities plus `--runaways` agents whose bursts start a minute apart, so alerts and throttle
commands keep coming while the worker is busy scoring. Measured, per alert / command:

1. alert record on meterguard.alerts (its Kafka timestamp) -> webhook receipt;
2. throttle command on meterguard.throttle (Kafka timestamp) -> the SSE event's receipt;
3. the worker's own enqueue -> 2xx histogram (meterguard_sink_delivery_seconds).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from standardwebhooks.webhooks import Webhook

from meterguard.streams.runtime.topics import ensure_topics, topic_specs
from meterguard.streams.settings import Settings
from meterguard.streams.tools.embedded import EmbeddedBroker, EmbeddedRedis, free_port

SECRET = "whsec_" + base64.b64encode(b"meterguard-benchmark-secret-key!").decode()


def traffic(runaways: int, quiet: int, start: datetime) -> list[dict]:
    """75 minutes at 6 calls/min; runaway i bursts to 180/min from minute 62 + i % 12."""
    docs = []
    names = [f"svc-quiet-{i}" for i in range(quiet)] + [f"agent-run-{i}" for i in range(runaways)]
    for n, identity in enumerate(names):
        burst_from = 62 + (n - quiet) % 12 if n >= quiet else 10_000
        for minute in range(75):
            calls = 180 if minute >= burst_from else 6
            for k in range(calls):
                at = start + timedelta(minutes=minute, milliseconds=k * 60_000 // calls + 1)
                docs.append(
                    {
                        "event_id": f"{identity}-{minute}-{k}",
                        "identity": identity,
                        "event_time": at.isoformat().replace("+00:00", "Z"),
                        "environment": "prod",
                        "input_tokens": 400,
                        "output_tokens": 100,
                        "cost_usd": 0.0004,
                    }
                )
    return sorted(docs, key=lambda d: (d["event_time"], d["event_id"]))


def summary(name: str, seconds: list[float]) -> str:
    if not seconds:
        return f"  {name:<44} (none)"
    ordered = sorted(seconds)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return (
        f"  {name:<44} n={len(seconds):<4} median {statistics.median(seconds):.3f}s  "
        f"p95 {p95:.3f}s  max {max(seconds):.3f}s"
    )


async def follow_sse(url: str, received: dict[str, float], stop: asyncio.Event) -> None:
    async with httpx.AsyncClient(timeout=None) as client:
        while not stop.is_set():
            try:
                async with client.stream("GET", url) as response:
                    async for line in response.aiter_lines():
                        if line.startswith("data: {") and '"command_id"' in line:
                            doc = orjson.loads(line[6:])
                            received.setdefault(doc["command_id"], time.time())
            except httpx.HTTPError:
                await asyncio.sleep(0.2)  # worker still starting: reconnect


async def read_records(settings: Settings, topic: str) -> dict[str, tuple[dict, float]]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=settings.bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    found: dict[str, tuple[dict, float]] = {}
    try:
        while batches := await consumer.getmany(timeout_ms=1500):
            for records in batches.values():
                for r in records:
                    doc = orjson.loads(r.value)
                    key = doc.get("alert_id") if "alert_id" in doc and "detector" in doc else None
                    found[key or doc["command_id"]] = (doc, r.timestamp / 1000)
    finally:
        await consumer.stop()
    return found


async def run(args: argparse.Namespace, workdir: Path) -> None:
    received: dict[str, float] = {}

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        doc = Webhook(SECRET).verify(body, dict(request.headers))  # raises if not signed right
        received.setdefault(doc["data"]["alert_id"], time.time())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    hook_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", hook_port).start()

    with (
        EmbeddedBroker(workdir=workdir / "broker") as broker,
        EmbeddedRedis(workdir=workdir / "redis") as redis_server,
    ):
        web_port = free_port()
        env = {
            **os.environ,
            "MG_KAFKA_BROKER": broker.url,
            "MG_REDIS_URL": redis_server.url,
            "MG_DATA_DIR": str(workdir / "faust"),
            "MG_TOPIC_PARTITIONS": "2",
            "MG_WEBHOOK_URL": f"http://127.0.0.1:{hook_port}/hook",
            "MG_WEBHOOK_SECRET": SECRET,
        }
        settings = Settings.model_validate(
            {k[3:].lower(): v for k, v in env.items() if k.startswith("MG_")}
        )
        await ensure_topics(broker.bootstrap, topic_specs(settings))
        log = (workdir / "worker.log").open("wb")
        # Popen returns once the long-running worker is forked; nothing here waits on it.
        worker = subprocess.Popen(  # noqa: ASYNC220
            [
                sys.executable,
                "-m",
                "meterguard.streams.tools.cli",
                "worker",
                "--web-port",
                str(web_port),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        stop = asyncio.Event()
        sse_seen: dict[str, float] = {}
        follower = asyncio.create_task(
            follow_sse(f"http://127.0.0.1:{web_port}/api/throttles/stream", sse_seen, stop)
        )
        try:
            start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=76)
            docs = traffic(args.runaways, args.quiet, start)
            print(f"producing {len(docs):,} events ({args.runaways} runaways)…", flush=True)
            producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=10)
            await producer.start()
            for doc in docs:
                value = orjson.dumps(doc)
                await producer.send(settings.topic_raw, key=doc["identity"].encode(), value=value)
            await producer.flush()
            await producer.stop()
            deadline = time.monotonic() + args.timeout
            alerts: dict[str, tuple[dict, float]] = {}
            while time.monotonic() < deadline:
                alerts = await read_records(settings, settings.topic_alerts)
                firing = {a for a, (doc, _) in alerts.items() if doc["status"] == "firing"}
                print(f"  alerts {len(alerts)}, delivered {len(received)}", flush=True)
                if len(firing) >= args.runaways and set(alerts) <= set(received):
                    break
                await asyncio.sleep(1.0)  # progress cadence of the wait, not a synchronisation
            commands = await read_records(settings, settings.topic_throttle)
            async with httpx.AsyncClient() as client:
                metrics = (await client.get(f"http://127.0.0.1:{web_port}/metrics")).text
        finally:
            stop.set()
            follower.cancel()
            worker.terminate()
            worker.wait(timeout=30)
            await runner.cleanup()

    to_hook = [received[a] - at for a, (_, at) in alerts.items() if a in received]
    to_sse = [sse_seen[c] - at for c, (_, at) in commands.items() if c in sse_seen]
    print(f"\n{len(alerts)} alerts, {len(received)} delivered; {len(commands)} commands")
    print(summary("alert on Kafka -> signed webhook received", to_hook))
    print(summary("throttle command on Kafka -> SSE received", to_sse))
    for line in metrics.splitlines():
        if line.startswith("meterguard_sink_delivery_seconds_") and "bucket" not in line:
            print(f"  worker: {line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runaways", type=int, default=12)
    parser.add_argument("--quiet", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=180.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mg-bench-") as tmp:
        asyncio.run(run(args, Path(tmp)))


if __name__ == "__main__":
    main()
