"""`meterguard bench` output: the metrics (one JSON object, the last stdout line with --json),
their ratios against the targets, and the tables."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from meterguard.streams.tools.bench_latency import LatencyResult
from meterguard.streams.tools.bench_memory import DEDUPE_KINDS, MemoryReport
from meterguard.streams.tools.bench_traffic import Throughput

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

HOW = {
    "raw_consume_eps": "aiokafka getmany + orjson.loads, single-event topic",
    "faust_baseline_eps": "bare counting Faust agent (subprocess), same topic",
    "pipeline_eps": "meterguard worker, 1 native event per record, until Redis counted all",
    "pipeline_batched_eps": "meterguard worker, {record_size} events per record ({batch_format})",
    "replay_eps": "replay_file in process, every detector, no --scores-out",
    "latency_p50_ms": "probe produced -> throttle key (pub/sub), load {load:.0%} of pipeline_eps",
    "latency_p99_ms": "same, nearest rank over {latency_probes} probes",
    "redis_bytes_per_identity": "MEMORY USAGE, {sampled:,} of {identities:,} identities, no dedupe",
    "redis_bytes_per_event_id": "dedupe keys' bytes / ids remembered ({ids:,.0f} per identity)",
    "rss_mb": "worker VmRSS after the pipeline_eps and latency runs",
}


@dataclass(frozen=True)
class Target:
    name: str  # a metric or "a / b"
    op: str  # ">=" or "<="
    bound: float

    def value(self, metrics: dict[str, float]) -> float:
        if " / " in self.name:
            top, bottom = self.name.split(" / ")
            return metrics[top] / metrics[bottom] if metrics[bottom] else math.inf
        return metrics[self.name]

    def check(self, metrics: dict[str, float]) -> tuple[float, bool, float]:
        """(value, met, factor): factor >= 1 is how far it is met or missed by."""
        v = self.value(metrics)
        met = v >= self.bound if self.op == ">=" else v <= self.bound
        big, small = (v, self.bound) if self.op == ">=" else (self.bound, v)
        if not met:
            big, small = small, big
        return v, met, big / small if small > 0 else math.inf


TARGETS = (
    Target("pipeline_eps / faust_baseline_eps", ">=", 0.8),
    Target("pipeline_batched_eps", ">=", 100_000),
    Target("pipeline_batched_eps / raw_consume_eps", ">=", 0.25),
    Target("replay_eps", ">=", 50_000),
    Target("latency_p99_ms", "<=", 250),
    Target("redis_bytes_per_event_id", "<=", 12),
    Target("redis_bytes_per_identity", "<=", 8 * 1024),
)


@dataclass
class BenchResults:
    sizes: dict[str, Any]
    raw: Throughput
    faust: Throughput
    pipeline: Throughput
    batched: Throughput
    replay: Throughput
    latency: LatencyResult
    memory: MemoryReport
    rss_mb: float
    details: dict[str, Any] = field(default_factory=dict)

    def metrics(self) -> dict[str, float]:
        return {
            "raw_consume_eps": self.raw.rate,
            "faust_baseline_eps": self.faust.rate,
            "pipeline_eps": self.pipeline.rate,
            "pipeline_batched_eps": self.batched.rate,
            "replay_eps": self.replay.rate,
            "latency_p50_ms": self.latency.percentile(50),
            "latency_p99_ms": self.latency.percentile(99),
            "redis_bytes_per_identity": self.memory.per_identity,
            "redis_bytes_per_event_id": self.memory.per_event_id,
            "rss_mb": self.rss_mb,
        }

    def json_line(self) -> bytes:
        metrics = self.metrics()
        targets = {}
        for target in TARGETS:
            value, met, factor = target.check(metrics)
            targets[target.name] = {
                "value": round(value, 4),
                "target": f"{target.op} {target.bound:g}",
                "met": met,
                "factor": round(factor, 3) if math.isfinite(factor) else None,
            }
        doc = {**{k: round(v, 3) for k, v in metrics.items()}, "targets": targets}
        doc["sizes"] = self.sizes
        return orjson.dumps(doc)

    def missing(self) -> list[str]:
        """Keys that are not a positive finite number (a failed measurement)."""
        return [k for k, v in self.metrics().items() if not (math.isfinite(v) and v > 0)]


def print_tables(results: BenchResults, console: Console) -> None:
    metrics = results.metrics()
    fmt = {**results.sizes, **_memory_fmt(results.memory)}
    table = Table(title="meterguard bench", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("measured")
    coarse = {
        "raw_consume_eps": results.raw.coarse,
        "faust_baseline_eps": results.faust.coarse,
        "pipeline_eps": results.pipeline.coarse,
        "pipeline_batched_eps": results.batched.coarse,
    }
    for key in KEYS:
        note = " (coarse: too few events)" if coarse.get(key) else ""
        table.add_row(key, _number(metrics[key]), HOW[key].format(**fmt) + note)
    console.print(table)

    checks = Table(title="targets", title_justify="left")
    for column in ("check", "value", "target", "result"):
        checks.add_column(column, justify="right" if column == "value" else "left")
    for target in TARGETS:
        value, met, factor = target.check(metrics)
        verdict = f"met x{factor:,.2f}" if met else f"[red]missed by x{factor:,.2f}[/red]"
        checks.add_row(target.name, _number(value), f"{target.op} {target.bound:,g}", verdict)
    console.print(checks)

    mem = results.memory
    kinds = Table(
        title=f"redis bytes per identity by key kind ({mem.identities:,} identities: "
        f"{mem.templates:,} replayed for {mem.minutes} min, copied; {mem.sampled:,} sampled)",
        title_justify="left",
    )
    kinds.add_column("key kind")
    kinds.add_column("bytes / identity", justify="right")
    for kind, used in mem.per_kind.items():
        kinds.add_row(kind + (" (dedupe)" if kind in DEDUPE_KINDS else ""), f"{used:,.0f}")
    kinds.add_row("total without dedupe", f"{mem.per_identity:,.0f}")
    kinds.add_row(
        "cross-check: INFO used_memory growth / identity (all keys, traces not copied)",
        f"{mem.used_memory_per_identity:,.0f}",
    )
    console.print(kinds)
    for note in mem.notes:
        console.print(f"note: {note}")
    for name, value in results.details.items():
        console.print(f"{name}: {value}")


def _memory_fmt(mem: MemoryReport) -> dict[str, Any]:
    return {"sampled": mem.sampled, "identities": mem.identities, "ids": mem.ids_per_identity}


def _number(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}"
