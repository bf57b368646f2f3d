"""The demo's plain-text pieces (pure): where alerts go, without secrets, and delivery counts
read from a worker's /metrics."""

from __future__ import annotations

from urllib.parse import urlsplit

from rich.markup import escape

from meterguard.streams.settings import Settings


def describe_destinations(settings: Settings) -> str:
    """Where alerts go, without secrets (URLs may carry tokens: show scheme and host only)."""
    targets = [f"webhook {_host(u)}" for u in (settings.webhook_url or "").split(",") if u.strip()]
    if settings.webhook_url and not settings.webhook_secret:
        targets[-1] += " (unsigned: MG_WEBHOOK_SECRET is not set)"
    if settings.slack_bot_token and settings.slack_channel:
        targets.append(f"Slack channel {settings.slack_channel} (Web API, one thread per episode)")
    elif settings.slack_webhook_url:
        targets.append(f"Slack {_host(settings.slack_webhook_url)}")
    if not targets:
        return (
            "alerts are not delivered anywhere: set MG_WEBHOOK_URL (+ MG_WEBHOOK_SECRET) and/or "
            "MG_SLACK_WEBHOOK_URL (or MG_SLACK_BOT_TOKEN + MG_SLACK_CHANNEL) to receive them"
        )
    return "delivering alerts to: " + ", ".join(escape(t) for t in targets)


def _host(url: str) -> str:
    parts = urlsplit(url.strip())
    return f"{parts.scheme}://{parts.hostname or '?'}" + (f":{parts.port}" if parts.port else "")


def delivery_counts(metrics_text: str) -> dict[str, float]:
    """`meterguard_sink_deliveries_total{sink=…,outcome=…} n` lines summed by outcome."""
    counts: dict[str, float] = {}
    for line in metrics_text.splitlines():
        if line.startswith("meterguard_sink_deliveries_total{"):
            labels, _, value = line.rpartition(" ")
            outcome = labels.split('outcome="', 1)[1].split('"', 1)[0]
            counts[outcome] = counts.get(outcome, 0) + float(value)
    return counts
