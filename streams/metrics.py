"""Prometheus metrics of one worker process (GET /metrics), names prefixed `meterguard_`.

Counters count what this process did; sum them over workers. The figures for all identities
at once (events per identity, windows) live in Redis, not here.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from streams.pipeline import BatchOutcome

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


def count_batch(outcome: BatchOutcome, seconds: float) -> None:
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


def exposition() -> bytes:
    return generate_latest(REGISTRY)
