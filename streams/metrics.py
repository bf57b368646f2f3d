"""Prometheus metrics of one worker process (GET /metrics), names prefixed `meterguard_`.

Counters count what this process did; sum them over workers. The figures for all identities
at once (events per identity, windows) live in Redis, not here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from meterguard.models import Alert, MeteringEvent, ThrottleCommand

REGISTRY = CollectorRegistry(auto_describe=True)

EVENTS = Counter("meterguard_events", "Decoded events by status", ["status"], registry=REGISTRY)
DEAD_LETTERS = Counter(
    "meterguard_dead_letters",
    "Inputs sent to the dead-letter topic",
    ["reason"],
    registry=REGISTRY,
)
ALERTS = Counter(
    "meterguard_alerts", "Alerts published", ["detector", "severity", "status"], registry=REGISTRY
)
COMMANDS = Counter(
    "meterguard_throttle_commands", "Throttle commands published", ["action"], registry=REGISTRY
)
MINUTES = Counter("meterguard_minutes_scored", "Identity-minutes scored", registry=REGISTRY)
BATCH_SECONDS = Histogram(
    "meterguard_batch_seconds",
    "Pipeline time per batch (ingest, score, publish, checkpoint)",
    registry=REGISTRY,
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

EVENT_LATENCY = Histogram(
    "meterguard_event_latency_seconds",
    "Ingest (decode) to scored and published, per event",
    registry=REGISTRY,
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
)
THROTTLES_ACTIVE = Gauge(
    "meterguard_throttles_active",
    "Identities with an active throttle or block (all workers; read at scrape time)",
    registry=REGISTRY,
)
CONSUMER_LAG = Gauge(
    "meterguard_consumer_lag",
    "Messages behind the partition's high watermark (this worker's partitions; on Tansu the "
    "high watermark is imprecise, see INFRA-NOTES)",
    ["topic", "partition"],
    registry=REGISTRY,
)
PARTITION_ASSIGNED = Gauge(
    "meterguard_partition_assigned",
    "1 for each partition this worker holds now (read at scrape time; a revoked partition's "
    "series is removed)",
    ["topic", "partition"],
    registry=REGISTRY,
)
SSE_CLIENTS = Gauge(
    "meterguard_throttle_stream_clients",
    "Open /api/throttles/stream connections",
    registry=REGISTRY,
)
OPERATOR_ACTIONS = Counter(
    "meterguard_operator_actions", "Audited operator actions", ["action"], registry=REGISTRY
)


class BatchCounts(Protocol):
    """What a scored batch reports (runtime.pipeline.BatchOutcome), as metrics read it."""

    @property
    def stats(self) -> Mapping[str, int]: ...
    @property
    def alerts(self) -> Sequence[Alert]: ...
    @property
    def commands(self) -> Sequence[ThrottleCommand]: ...


def count_batch(outcome: BatchCounts, seconds: float) -> None:
    for status, name in (
        ("new", "events_new"),
        ("duplicate", "events_duplicate"),
        ("late", "events_late"),
    ):
        EVENTS.labels(status).inc(outcome.stats.get(name, 0))
    MINUTES.inc(outcome.stats.get("minutes_scored", 0))
    for alert in outcome.alerts:
        ALERTS.labels(alert.detector, alert.severity, alert.status).inc()
    for command in outcome.commands:
        COMMANDS.labels(command.action).inc()
    BATCH_SECONDS.observe(seconds)


def observe_latency(events: list[MeteringEvent], now: datetime) -> None:
    for event in events:
        if event.ingest_time is not None:
            EVENT_LATENCY.observe(max(0.0, (now - event.ingest_time).total_seconds()))


def count_formats(messages: Mapping[str, int], ignored: Mapping[str, int]) -> None:
    for fmt, n in messages.items():
        MESSAGES_BY_FORMAT.labels(fmt).inc(n)
    for fmt, n in ignored.items():
        if n:
            IGNORED_RECORDS.labels(fmt).inc(n)


def labelled(gauge: Gauge) -> set[tuple[str, ...]]:
    """The label values of every series the gauge holds now."""
    return {
        tuple(sample.labels[name] for name in gauge._labelnames)
        for metric in gauge.collect()
        for sample in metric.samples
    }


def exposition() -> bytes:
    return generate_latest(REGISTRY)


# Alert delivery (streams/delivery/deliverer.py). `destination` is the secret-free destination key
# (webhook-<hash>); the worker logs which URL each key stands for at startup.
SINK_DELIVERIES = Counter(
    "meterguard_sink_deliveries",
    "Alert delivery attempts by outcome (delivered, retry, failed)",
    ["sink", "outcome"],
    registry=REGISTRY,
)
SINK_DEAD_LETTERS = Counter(
    "meterguard_sink_dead_letters",
    "Alerts sent to the alerts dead-letter topic",
    ["sink"],
    registry=REGISTRY,
)
SINK_DELIVERY_SECONDS = Histogram(
    "meterguard_sink_delivery_seconds",
    "From enqueue in the outbox to the destination's 2xx",
    ["sink"],
    registry=REGISTRY,
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900),
)
SINK_OUTBOX_DEPTH = Gauge(
    "meterguard_sink_outbox_depth",
    "Alerts waiting or in flight in the delivery outbox",
    ["sink", "destination"],
    registry=REGISTRY,
)
SINK_OUTBOX_FULL = Counter(
    "meterguard_sink_outbox_full",
    "Alerts a full outbox refused (MG_OUTBOX_MAX_PENDING), sent to the alerts DLQ",
    ["sink", "destination"],
    registry=REGISTRY,
)

# Input formats (issue 5): what each raw message was, and the parts of messages that were
# well-formed but not metering records (non-GenAI spans in an OTLP export, agent spans).
MESSAGES_BY_FORMAT = Counter(
    "meterguard_messages_by_format",
    "Raw messages decoded, by detected input format",
    ["format"],
    registry=REGISTRY,
)
IGNORED_RECORDS = Counter(
    "meterguard_ignored_records",
    "Records inside messages that are not metering records (e.g. non-GenAI spans)",
    ["format"],
    registry=REGISTRY,
)
