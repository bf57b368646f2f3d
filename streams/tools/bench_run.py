"""`meterguard bench` phases, one after the other (2 cores: nothing measured runs alongside
another measurement): simulate, fill two topics, raw consume, the Faust baseline, the worker
on single-event records followed by the latency run on that same worker, the worker on
batched records, replay, Redis memory. Broker and Redis: MG_KAFKA_BROKER / MG_REDIS_URL, else
embedded ones on free ports. Everything the bench creates is named after its run id
(`mgbench-<hex>`: topics, consumer groups, key prefixes); on configured servers it is deleted
afterwards, and a configured webhook or registry is never handed to the bench's workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from pathlib import Path

import orjson

from meterguard.streams.runtime.topics import TopicSpec, ensure_topics
from meterguard.streams.settings import Settings
from meterguard.streams.store.connection import redacted
from meterguard.streams.tools.bench_latency import LatencyResult
from meterguard.streams.tools.bench_phases import (
    Context,
    Options,
    cleanup,
    faust_baseline,
    latency_run,
    memory_run,
    replay_run,
    worker_run,
)
from meterguard.streams.tools.bench_procs import BenchError, WorkerNames
from meterguard.streams.tools.bench_report import BenchResults
from meterguard.streams.tools.bench_traffic import (
    Progress,
    Throughput,
    batched_records,
    fill_topic,
    raw_consume,
    simulate_traffic,
    single_records,
)
from meterguard.streams.tools.embedded import EmbeddedBroker, EmbeddedRedis


def run_bench(
    settings: Settings, options: Options, workdir: Path, progress: Progress
) -> BenchResults:
    if settings.redis_cluster:  # its memory phase COPYs keys across identities' slots
        raise BenchError("bench measures one Redis server, not a cluster: unset MG_REDIS_CLUSTER")
    run_id = f"mgbench-{uuid.uuid4().hex[:8]}"
    probes = [f"{run_id}-probe-{n:04d}" for n in range(options.sizes.latency_probes)]
    policy = workdir / "bench-policy.yaml"  # YAML is a superset of JSON
    policy.write_bytes(orjson.dumps({"offboarded_identities": probes}))
    with contextlib.ExitStack() as stack:
        broker, redis_url = settings.kafka_broker, settings.redis_url
        if not broker:
            progress("starting an embedded broker (Tansu)")
            broker = stack.enter_context(EmbeddedBroker(workdir=workdir / "broker")).url
        if not redis_url:
            progress("starting an embedded Redis")
            redis_url = stack.enter_context(EmbeddedRedis(workdir=workdir / "redis")).url
        ctx = Context(options, settings, workdir, broker, redis_url, run_id, policy, progress)
        configured = bool(settings.kafka_broker), bool(settings.redis_url)
        return asyncio.run(_measure(ctx, probes, configured))


async def _measure(ctx: Context, probes: list[str], configured: tuple[bool, bool]) -> BenchResults:
    sizes, opts, say = ctx.options.sizes, ctx.options, ctx.progress
    try:
        say(f"simulating {sizes.events:,} events of {sizes.traffic_identities:,} identities")
        traffic = await asyncio.to_thread(
            simulate_traffic, ctx.workdir, sizes.traffic_identities, sizes.events, opts.seed
        )
        p = ctx.settings.topic_partitions
        single, batched = f"{ctx.run_id}.single", f"{ctx.run_id}.batched"
        await ensure_topics(ctx.bootstrap, [TopicSpec(single, p), TopicSpec(batched, p)])
        fill_s = await fill_topic(ctx.bootstrap, single, single_records(traffic, p), say)
        records = batched_records(traffic, p, sizes.record_size, opts.batch_format)
        await fill_topic(ctx.bootstrap, batched, records, say)
        say(f"filled {single} in {fill_s:.1f} s and {batched} ({len(records):,} records)")
        say("raw consume")
        raw = await raw_consume(ctx.bootstrap, single, p, len(traffic.lines), opts.phase_timeout_s)
        say(f"  {raw.rate:,.0f} events/s")
        faust = await faust_baseline(ctx, single, len(traffic.lines))

        async def latency(names: WorkerNames, pipeline: Throughput) -> LatencyResult:
            return await latency_run(ctx, names, pipeline, traffic, probes)

        main = await worker_run(ctx, "single", single, len(traffic.lines), latency)
        batch = await worker_run(ctx, "batched", batched, len(traffic.lines))
        replay = await replay_run(ctx, traffic)
        mem = await memory_run(ctx)
    finally:
        await cleanup(ctx, configured)
    if main.latency is None:
        raise BenchError("latency: not measured")
    servers = (
        f"broker {ctx.broker} ({'configured' if configured[0] else 'embedded'}), "
        f"redis {redacted(ctx.redis_url)} ({'configured' if configured[1] else 'embedded'})"
    )
    return BenchResults(
        sizes={
            **vars(sizes),
            "batch_format": opts.batch_format,
            "load": opts.latency_load,
            "traffic_identities_seen": traffic.identities,
        },
        raw=raw,
        faust=faust,
        pipeline=main.throughput,
        batched=batch.throughput,
        replay=replay,
        latency=main.latency,
        memory=mem,
        rss_mb=main.rss_mb,
        details={
            "worker counters (single)": main.counters,
            "worker counters (batched)": batch.counters,
            "worker RSS MiB (batched)": round(batch.rss_mb, 1),
            "background traffic": f"{main.latency.background_events:,} events at "
            f"{main.latency.background_rate:,.0f}/s",
            "latency p50 ms, first / second half of the probes": main.latency.halves(),
            "servers": servers,
        },
    )
