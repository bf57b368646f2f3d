"""What the pipeline reads off one event (pure): its facts for the event-level detectors, its
place as a span of its trace, its attribution."""

from __future__ import annotations

from meterguard.detectors.base import MinuteDetector
from meterguard.detectors.features import EventFacts
from meterguard.models import MeteringEvent
from meterguard.streams.policy.episodes import Attribution
from meterguard.streams.store.traces import SpanLink, SpanPlace
from meterguard.timeutil import MINUTE_MS

HOUR_MS = 60 * MINUTE_MS


def observes_events(detector: object) -> bool:
    """Whether a detector has an event hook (MinuteDetector's is a no-op)."""
    return getattr(type(detector), "observe_one", None) is not MinuteDetector.observe_one


def attribution(event: MeteringEvent, current: Attribution) -> Attribution:
    if event.team is None and event.environment is None:
        return current
    return Attribution(
        team=event.team or current.team, environment=event.environment or current.environment
    )


def attribution_after(events: list[MeteringEvent], who: Attribution) -> Attribution:
    for event in events:
        who = attribution(event, who)
    return who


def linkable(event: MeteringEvent) -> bool:
    ids = (event.trace_id or "", event.span_id or "", event.parent_span_id or "")
    return bool(event.trace_id and event.span_id) and not any(
        "\t" in part or "\n" in part for part in ids
    )


def span_of(event: MeteringEvent) -> SpanLink:
    """The event as a span of its trace, with the usage its root identity is credited."""
    return SpanLink(
        event.trace_id or "",
        event.span_id or "",
        event.parent_span_id,
        event.identity,
        event.cost_nano_usd,
        hour=event.event_time_ms // HOUR_MS,
        input_tokens=event.input_tokens,
        output_tokens=event.output_tokens,
        cached_tokens=event.cached_tokens,
        errors=int(event.status == "error"),
    )


def event_facts(event: MeteringEvent, span: SpanPlace | None = None) -> EventFacts:
    fingerprint = event.request_fingerprint
    if fingerprint is None and event.status == "error":
        # No fingerprint: the failing operation stands in for "the same request".
        fingerprint = f"op:{event.operation or ''}|{event.endpoint or ''}|{event.model or ''}"
    return EventFacts(
        time_ms=event.event_time_ms,
        minute=event.event_time_ms // MINUTE_MS,
        is_error=event.status == "error",
        fingerprint=fingerprint,
        model=event.model,
        workload=event.workload,
        source=event.source,
        credential_id=event.credential_id,
        caller=event.caller_identity,
        tokens=event.input_tokens + event.output_tokens,
        cost_nano_usd=event.cost_nano_usd,
        depth=span.depth if span else None,
        cycle=span.cycle if span else False,
        fanout=span.fanout if span else 0,
        trace_root=span.root if span else None,
        trace_cost_nano_usd=span.trace_cost_nano_usd if span else 0,
        trace_id=event.trace_id if span else None,
    )
