"""`meterguard bench` phases (bench_run.py runs them in order): the context of a run, the
Faust baseline, a worker run (with the latency run on the same worker), replay, Redis memory,
and deleting what a run left on configured servers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient

from meterguard.streams.offline.replay import (
    ReplayOutputs,
    drop_namespace,
    replay_file,
    unlink_matching,
)
from meterguard.streams.settings import Settings
from meterguard.streams.store import build_store
from meterguard.streams.store.connection import redis_client
from meterguard.streams.store.keys import KeyLayout, glob_escape
from meterguard.streams.tools import bench_memory as memory
from meterguard.streams.tools.bench_latency import LatencyResult, LatencyRun, measure_latency
from meterguard.streams.tools.bench_procs import (
    BenchError,
    WorkerNames,
    child_env,
    drain,
    rss_mb,
    start_faust_baseline,
    start_worker,
    stop_child,
    worker_env,
)
from meterguard.streams.tools.bench_sizes import Sizes
from meterguard.streams.tools.bench_traffic import Progress, Throughput, Traffic


@dataclass(frozen=True)
class Options:
    sizes: Sizes
    batch_format: str
    latency_load: float  # background traffic as a fraction of pipeline_eps
    probe_interval_s: float
    seed: int
    phase_timeout_s: float


@dataclass
class Context:
    options: Options
    settings: Settings
    workdir: Path
    broker: str  # kafka://host:port
    redis_url: str
    run_id: str
    policy: Path
    progress: Progress

    @property
    def bootstrap(self) -> str:
        return ",".join(h.strip().removeprefix("kafka://") for h in self.broker.split(","))

    def offline_settings(self, prefix: str) -> Settings:
        """Replay's settings: the bench policy, no registry or mapping of the caller's."""
        return Settings(
            key_prefix=prefix,
            policy_file=str(self.policy),
            registry_file=None,
            registry_url=None,
            mapping_file=None,
            kafka_broker=self.broker,
            redis_url=self.redis_url,
        )


async def faust_baseline(ctx: Context, topic: str, expected: int) -> Throughput:
    ctx.progress("Faust baseline (bare counting agent)")
    key = f"{ctx.run_id}-faust:count"
    env = child_env(
        {
            "MGB_BROKER": ctx.broker,
            "MGB_TOPIC": topic,
            "MGB_PARTITIONS": str(ctx.settings.topic_partitions),
            "MGB_APP_ID": f"{ctx.run_id}-faust",
            "MGB_REDIS_URL": ctx.redis_url,
            "MGB_COUNT_KEY": key,
            "MGB_DATA_DIR": str(ctx.workdir / "faust-baseline"),
        }
    )
    log = ctx.workdir / "faust-baseline.log"
    proc = start_faust_baseline(env, log)
    client = redis_client(ctx.redis_url, ctx.settings.redis_options)

    async def count() -> int:
        return int(await client.get(key) or 0)

    try:
        result = await drain(
            "faust", count, expected, proc, log, ctx.options.phase_timeout_s, ctx.progress
        )
    finally:
        await asyncio.to_thread(stop_child, proc)
        await client.aclose()
    ctx.progress(f"  {result.rate:,.0f} events/s")
    return result


@dataclass
class WorkerRun:
    throughput: Throughput
    rss_mb: float
    counters: dict[str, int]
    latency: LatencyResult | None = None


async def worker_run(
    ctx: Context,
    role: str,
    topic: str,
    expected: int,
    then: Callable[[WorkerNames, Throughput], Awaitable[LatencyResult]] | None = None,
) -> WorkerRun:
    """A real worker on `topic` until Redis counted `expected` events (new, late or
    duplicate: all of them accounted for), then `then` on the same worker."""
    ctx.progress(f"worker ({role} records)")
    names = WorkerNames(f"{ctx.run_id}-{role}", topic)
    env = worker_env(names, ctx.broker, ctx.redis_url, ctx.policy, ctx.workdir / f"{role}-faust")
    log = ctx.workdir / f"worker-{role}.log"
    proc = start_worker(env, log)
    client = redis_client(ctx.redis_url, ctx.settings.redis_options)
    stats = build_store(client, ctx.settings.store_config(prefix=names.prefix)).stats

    async def counted() -> int:
        got = await stats.pipeline_counters()
        if got.get("events_dead_lettered"):
            raise BenchError(
                f"{role}: {got['events_dead_lettered']:,} dead letters: this worker does not "
                f"read these records (see {names.prefix}.dlq, {log})"
            )
        return sum(got.get(k, 0) for k in ("events_new", "events_late", "events_duplicate"))

    timeout = ctx.options.phase_timeout_s
    try:
        result = await drain(role, counted, expected, proc, log, timeout, ctx.progress)
        ctx.progress(f"  {result.rate:,.0f} events/s")
        latency = await then(names, result) if then is not None else None
        run = WorkerRun(result, rss_mb(proc.pid), await stats.pipeline_counters(), latency)
    finally:
        await asyncio.to_thread(stop_child, proc)
        await client.aclose()
    return run


async def latency_run(
    ctx: Context, names: WorkerNames, pipeline: Throughput, traffic: Traffic, probes: list[str]
) -> LatencyResult:
    rate = pipeline.rate * ctx.options.latency_load
    ctx.progress(f"latency: {len(probes)} probes, background traffic {rate:,.0f} events/s")
    run = LatencyRun(
        bootstrap=ctx.bootstrap,
        redis_url=ctx.redis_url,
        redis_options=ctx.settings.redis_options,
        channel=KeyLayout(names.prefix).throttle_channel,
        topic=names.topic_raw,
        partitions=ctx.settings.topic_partitions,
        lateness_s=ctx.settings.allowed_lateness_s,
        rate=rate,
        probes=probes,
        interval_s=ctx.options.probe_interval_s,
        run_id=ctx.run_id,
    )
    result = await measure_latency(run, traffic.docs, ctx.progress)
    p50, p99 = result.percentile(50), result.percentile(99)
    ctx.progress(f"  p50 {p50:,.0f} ms, p99 {p99:,.0f} ms")
    return result


async def replay_run(ctx: Context, traffic: Traffic) -> Throughput:
    ctx.progress("replay (in process)")
    settings = ctx.offline_settings(f"{ctx.run_id}-replay")
    outputs = ReplayOutputs(
        ctx.workdir / "replay-alerts.jsonl", ctx.workdir / "replay-throttles.jsonl"
    )
    started = time.perf_counter()
    summary = await replay_file(
        traffic.path, outputs, settings, ctx.redis_url, ctx.options.sizes.replay_batch,
        show_progress=False, keep_state=True,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    client = redis_client(ctx.redis_url, ctx.settings.redis_options)
    try:
        await drop_namespace(client, summary.namespace)  # not timed
    finally:
        await client.aclose()
    result = Throughput(summary.events, 0, seconds)
    ctx.progress(f"  {result.rate:,.0f} events/s")
    return result


async def memory_run(ctx: Context) -> memory.MemoryReport:
    sizes = ctx.options.sizes
    ctx.progress(
        f"memory: replaying {sizes.memory_templates:,} identities x {sizes.memory_minutes} min"
    )
    client = redis_client(ctx.redis_url, ctx.settings.redis_options)
    try:
        used_before = int((await client.info("memory"))["used_memory"])
        namespace = await memory.fill_templates(
            ctx.workdir, ctx.offline_settings(f"{ctx.run_id}-mem"), ctx.redis_url,
            sizes.memory_templates, sizes.memory_minutes, ctx.options.seed, sizes.replay_batch,
        )  # fmt: skip
        found = await memory.census(client, namespace)
        if not found.identities:
            raise BenchError("memory: the template replay left no identity in Redis")
        notes: list[str] = []
        wanted = max(sizes.identities, len(found.identities))
        count = await memory.headroom_cap(client, found, wanted, notes)
        ctx.progress(f"memory: copying to {count:,} identities")
        copies = await memory.clone(client, found, count, ctx.progress)
        report = await memory.measure(
            client, found, copies, sizes.memory_sample, ctx.options.seed,
            sizes.memory_minutes, used_before,
        )  # fmt: skip
        report.notes += notes
        return report
    finally:
        await client.aclose()


async def cleanup(ctx: Context, configured: tuple[bool, bool]) -> None:
    """On configured servers, delete what the run created (embedded ones just stop)."""
    if configured[1]:
        client = redis_client(ctx.redis_url, ctx.settings.redis_options)
        try:
            await unlink_matching(client, f"{glob_escape(ctx.run_id)}*")
        finally:
            await client.aclose()
    if configured[0]:
        admin = AIOKafkaAdminClient(bootstrap_servers=ctx.bootstrap)
        try:
            await admin.start()
            topics = [t for t in await admin.list_topics() if t.startswith(ctx.run_id)]
            if topics:
                await admin.delete_topics(topics)
        except Exception as exc:  # best effort: report, never fail the run for it
            ctx.progress(f"could not delete the bench topics: {exc!r}")
        finally:
            await admin.close()
