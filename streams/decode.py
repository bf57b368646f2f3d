"""Raw message bytes -> MeteringEvent or DeadLetter. Never raises: bad input is data.

Pure: the caller passes `ingest_time` (the worker's clock, or the file's for replay).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime, timedelta

import orjson
from pydantic import ValidationError

from meterguard.models import MAX_ATTRIBUTES_BYTES, DeadLetter, MeteringEvent

MAX_MESSAGE_BYTES = 1_048_576
DEFAULT_MAX_FUTURE_SKEW = timedelta(minutes=5)


@dataclass(frozen=True)
class Origin:
    """Where a message came from, copied into its dead letter."""

    topic: str | None = None
    partition: int | None = None
    offset: int | None = None


def decode(
    raw: bytes,
    ingest_time: datetime,
    origin: Origin = Origin(),
    max_future_skew: timedelta = DEFAULT_MAX_FUTURE_SKEW,
) -> MeteringEvent | DeadLetter:
    def dead(reason: str, error: str) -> DeadLetter:
        return dead_letter(raw, reason, error, ingest_time, origin)

    if len(raw) > MAX_MESSAGE_BYTES:
        return dead("oversize", f"message is {len(raw)} bytes, limit {MAX_MESSAGE_BYTES}")
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return dead("invalid_json", str(exc))
    if not isinstance(doc, dict):
        return dead("not_an_object", f"expected a JSON object, got {type(doc).__name__}")
    doc.pop("ingest_time", None)  # the pipeline's field: a producer cannot set it
    try:
        event = MeteringEvent.model_validate({**doc, "ingest_time": ingest_time})
    except ValidationError as exc:
        return dead("invalid_event", _describe(exc))
    except (ValueError, TypeError, OverflowError, ArithmeticError, OSError) as exc:
        return dead("invalid_event", str(exc))
    if event.attributes and len(orjson.dumps(event.attributes, default=str)) > MAX_ATTRIBUTES_BYTES:
        return dead("attributes_too_large", f"attributes exceed {MAX_ATTRIBUTES_BYTES} bytes")
    if event.event_time - ingest_time > max_future_skew:
        ahead = event.event_time - ingest_time
        return dead("event_time_in_future", f"event_time is {ahead} ahead of ingest_time")
    return event


def decode_event_json(raw: bytes) -> MeteringEvent:
    """Read back an event this pipeline already validated (the keyed `metering.events` topic)."""
    return MeteringEvent.model_validate_json(raw)


def dead_letter(
    raw: bytes, reason: str, error: str, ingest_time: datetime, origin: Origin = Origin()
) -> DeadLetter:
    try:
        text, encoding = raw.decode("utf-8"), "text"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(raw).decode("ascii"), "base64"
    return DeadLetter(
        reason=reason,
        error=error[:2000],
        raw=text,
        raw_encoding=encoding,  # type: ignore[arg-type]
        topic=origin.topic,
        partition=origin.partition,
        offset=origin.offset,
        ingest_time=ingest_time,
    )


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False)[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "event"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)
