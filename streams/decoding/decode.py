"""Raw message bytes -> MeteringEvents and DeadLetters. Never raises: bad input is data.

`decode` reads one native event (one event or one dead letter). `decode_message` reads a
message in any input format (streams/decoding/formats: native, CloudEvents, OTLP GenAI spans in
JSON or protobuf, OpenAI responses, LiteLLM spend logs), which may carry many records: every
record is validated by the same rules as native input (size, counts, printable identity,
future skew) and becomes an event or a dead letter of its own. A native message may be one
event object or a JSON array of them; each element is a record, like a CloudEvents batch's.

Pure: the caller passes `ingest_time` (the worker's clock, or the file's for replay).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
from pydantic import ValidationError

from meterguard.models import MAX_ATTRIBUTES_BYTES, DeadLetter, MeteringEvent
from meterguard.streams.decoding.formats import (
    CLOUDEVENTS_BINARY,
    DEFAULT_MAPPING,
    NATIVE,
    OTLP,
    OTLP_PROTOBUF,
    UNKNOWN,
    MappingConfig,
    RawHeaders,
    by_content,
    by_headers,
    normalise,
    otlp_proto,
    read_headers,
)
from meterguard.streams.decoding.formats.cloudevents import binary as cloudevents_binary
from meterguard.streams.decoding.formats.common import (
    Normalised,
    Record,
    as_raw,
    headers_for_dead_letter,
)
from meterguard.streams.decoding.trace_attribution import HeldSpan, SpanLink

MAX_MESSAGE_BYTES = 1_048_576
# The original bytes a dead letter carries: a letter must fit a Kafka message (the producer's
# and most brokers' default limit is 1,000,000 bytes), and JSON may spell a byte as six
# ("\u0001"): 128 KiB is at most ~786 KB of text. A longer original keeps its first bytes,
# its size and its SHA-256 (DeadLetter.raw_truncated); the whole stays on its own topic.
MAX_DEAD_LETTER_RAW_BYTES = 131_072
DEFAULT_MAX_FUTURE_SKEW = timedelta(minutes=5)
# More records than any real export batch (OTel's default is 512 spans, LiteLLM's 100 rows):
# past it, one message would flood the DLQ with a dead letter per element.
MAX_RECORDS_PER_MESSAGE = 10_000


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
    """One native event. A JSON array of events is many records: `decode_message` reads it."""

    def dead(reason: str, error: str) -> DeadLetter:
        return dead_letter(raw, reason, error, ingest_time, origin)

    if len(raw) > MAX_MESSAGE_BYTES:
        return dead("oversize", f"message is {len(raw)} bytes, limit {MAX_MESSAGE_BYTES}")
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return dead("invalid_json", str(exc))
    if not isinstance(doc, dict):
        return dead("not_an_object", _not_an_object(doc))
    return _validate(doc, ingest_time, max_future_skew, dead)


def _validate(
    doc: dict[str, Any],
    ingest_time: datetime,
    max_future_skew: timedelta,
    dead: Callable[[str, str], DeadLetter],
) -> MeteringEvent | DeadLetter:
    """The rules every record obeys, native or translated from another format."""
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


@dataclass(frozen=True)
class DecodeResult:
    """What one message held: events and dead letters in input order, plus how many of its
    parts were well-formed but not metering records (e.g. an HTTP span in an OTLP export)."""

    items: list[MeteringEvent | DeadLetter]
    ignored: int = 0
    format: str = NATIVE
    # OTLP: spans whose identity an ancestor exported later may name, and the export's links
    # (streams/decoding/trace_attribution.py settles them; they are not in `items`).
    held: list[HeldSpan] = field(default_factory=list)
    links: list[SpanLink] = field(default_factory=list)

    @property
    def events(self) -> list[MeteringEvent]:
        return [item for item in self.items if isinstance(item, MeteringEvent)]

    @property
    def dead_letters(self) -> list[DeadLetter]:
        return [item for item in self.items if isinstance(item, DeadLetter)]


def decode_message(
    value: bytes | None,
    headers: RawHeaders,
    ingest_time: datetime,
    origin: Origin = Origin(),
    max_future_skew: timedelta = DEFAULT_MAX_FUTURE_SKEW,
    mapping: MappingConfig = DEFAULT_MAPPING,
) -> DecodeResult:
    """Every record of one message in any input format. Never raises; a message yields at
    least one item unless it is a well-formed export of records that are all ignored."""
    try:
        return _decode_message(value, headers, ingest_time, origin, max_future_skew, mapping)
    except Exception as exc:  # total by construction; this keeps the promise if a bug slips in
        raw = value if isinstance(value, bytes) else b""
        letter = dead_letter(raw, "internal_error", repr(exc), ingest_time, origin, fmt=UNKNOWN)
        return DecodeResult([letter], 0, UNKNOWN)


def _decode_message(
    value: bytes | None,
    headers: RawHeaders,
    ingest_time: datetime,
    origin: Origin,
    max_future_skew: timedelta,
    mapping: MappingConfig,
) -> DecodeResult:
    readable = read_headers(headers)
    evidence = headers_for_dead_letter(headers)
    detected = by_headers(readable)
    fmt = detected.format or UNKNOWN
    raw = value or b""

    def refuse(reason: str, error: str, data: bytes = raw) -> DecodeResult:
        letter = dead_letter(data, reason, error, ingest_time, origin, fmt=fmt, headers=evidence)
        return DecodeResult([letter], 0, fmt)

    if detected.refused:
        return refuse("unsupported_format", detected.refused)
    if value is None and fmt != CLOUDEVENTS_BINARY:  # binary mode: an event without data
        return refuse("empty_message", "message has no value")
    if len(raw) > MAX_MESSAGE_BYTES:
        return refuse("oversize", f"message is {len(raw)} bytes, limit {MAX_MESSAGE_BYTES}")
    if fmt == CLOUDEVENTS_BINARY:
        found = cloudevents_binary(raw, mapping, readable)
    elif fmt == OTLP_PROTOBUF:  # the header said protobuf
        try:
            found = normalise(OTLP, otlp_proto.read(raw), raw, mapping, readable)
        except otlp_proto.NotOtlp as exc:
            return refuse("invalid_protobuf", str(exc))
    elif detected.format in (None, OTLP) and (proto := _otlp_protobuf(raw)) is not None:
        fmt = OTLP_PROTOBUF
        found = normalise(OTLP, proto, raw, mapping, readable)
    else:
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return refuse("invalid_json", str(exc))
        fmt = by_content(doc, detected.format)
        if fmt == NATIVE and isinstance(doc, list):  # many native events in one message
            refused = _refusal(len(doc))  # before building a record per element
            if refused is not None:
                return refuse(*refused)
            found = _native_batch(doc)
        elif fmt == NATIVE:
            if not isinstance(doc, dict):
                return refuse("not_an_object", _not_an_object(doc))

            def native_dead(reason: str, error: str) -> DeadLetter:
                return dead_letter(
                    raw, reason, error, ingest_time, origin, fmt=NATIVE, headers=evidence
                )

            return DecodeResult([_validate(doc, ingest_time, max_future_skew, native_dead)])
        else:
            found = normalise(fmt, doc, raw, mapping, readable)
    return _records(found, raw, fmt, ingest_time, origin, max_future_skew, evidence)


def _not_an_object(doc: Any) -> str:
    return f"expected a JSON object, got {type(doc).__name__}"


def _native_batch(doc: list[Any]) -> Normalised:
    """A JSON array of native events: every element is a record validated like a message of
    its own; its dead letter carries the element's JSON, as a CloudEvents batch element's."""
    return Normalised(
        [
            Record(as_raw(item), doc=item)
            if isinstance(item, dict)
            else Record(as_raw(item), reason="not_an_object", error=_not_an_object(item))
            for item in doc
        ]
    )


def _refusal(count: int) -> tuple[str, str] | None:
    """The dead letter (reason, error) of a whole message of `count` records, if it gets one."""
    if count > MAX_RECORDS_PER_MESSAGE:
        return (
            "too_many_records",
            f"{count} records in one message, limit {MAX_RECORDS_PER_MESSAGE}",
        )
    if count == 0:
        return "empty_batch", "the message holds no records"
    return None


def _otlp_protobuf(raw: bytes) -> dict[str, Any] | None:
    """The OTLP/JSON-shaped document of a header-less protobuf export, or None (then the bytes
    are read as JSON, and its error is the dead letter's)."""
    if not otlp_proto.may_be_protobuf(raw):
        return None
    try:
        return otlp_proto.read(raw)
    except otlp_proto.NotOtlp:
        return None


def _records(
    found: Normalised,
    raw: bytes,
    fmt: str,
    ingest_time: datetime,
    origin: Origin,
    max_future_skew: timedelta,
    evidence: dict[str, str] | None,
) -> DecodeResult:
    def letter(data: bytes, reason: str, error: str) -> DeadLetter:
        return dead_letter(data, reason, error, ingest_time, origin, fmt=fmt, headers=evidence)

    refused = _refusal(len(found.records) + found.ignored)
    if refused is not None:
        return DecodeResult([letter(raw, *refused)], 0, fmt)
    items: list[MeteringEvent | DeadLetter] = []
    held: list[HeldSpan] = []
    for record in found.records:
        if record.doc is None:
            items.append(letter(record.raw, record.reason, record.error))
            continue
        data = record.raw
        item = _validate(
            record.doc,
            ingest_time,
            max_future_skew,
            lambda reason, error, data=data: letter(data, reason, error),  # type: ignore[misc]
        )
        if record.held is None or isinstance(item, DeadLetter):
            items.append(item)
        else:
            unnamed = letter(data, "missing_identity", record.unnamed) if record.unnamed else None
            held.append(HeldSpan(item, record.held[0], record.held[1], unnamed))
    return DecodeResult(items, found.ignored, fmt, held, found.links)


def decode_event_json(raw: bytes) -> MeteringEvent:
    """Read back one event of the keyed `metering.events` topic, in full (an older one-event
    record, or one element of a batch record: streams/decoding/keyed_events.py)."""
    return MeteringEvent.model_validate_json(raw)


def dead_letter(
    raw: bytes,
    reason: str,
    error: str,
    ingest_time: datetime,
    origin: Origin = Origin(),
    fmt: str | None = None,
    headers: dict[str, str] | None = None,
) -> DeadLetter:
    kept = raw[:MAX_DEAD_LETTER_RAW_BYTES]
    truncated = len(kept) < len(raw)
    try:
        text, encoding = kept.decode("utf-8"), "text"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(kept).decode("ascii"), "base64"
    return DeadLetter(
        reason=reason,
        error=error[:2000],
        raw=text,
        raw_encoding=encoding,  # type: ignore[arg-type]
        raw_truncated=truncated,
        raw_size=len(raw) if truncated else None,
        raw_sha256=hashlib.sha256(raw).hexdigest() if truncated else None,
        topic=origin.topic,
        partition=origin.partition,
        offset=origin.offset,
        ingest_time=ingest_time,
        format=fmt,
        headers=headers,
    )


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False)[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "event"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)
