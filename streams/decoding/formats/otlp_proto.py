"""OTLP traces in protobuf (the Collector's Kafka exporter default, `otlp_proto`) -> the
OTLP/JSON document `otlp.normalise` reads (pure).

The bytes are an `ExportTraceServiceRequest` (opentelemetry-proto,
`opentelemetry/proto/collector/trace/v1/trace_service.proto`), read with the upstream
generated classes and rendered with protobuf's JSON mapping: lowerCamelCase keys
(`resourceSpans`, `startTimeUnixNano`), integer enums, 64-bit integers as strings, ids as
base64 (`otlp_values.hex_id` reads both base64 and hex), exactly the shape OTLP/JSON has but for the
ids. One reader, one set of rules, for both encodings.

Telling protobuf from JSON without a header: a JSON export starts with `{` (after optional
whitespace); a non-empty protobuf request starts with 0x0a (field 1, `resource_spans`,
length-delimited) and never with `{` (0x7b would be field 15, wire type 3: invalid here).
So without a header only bytes that start with 0x0a are tried as protobuf, and when they do
not read as an export they go on to the JSON reader, whose error (as for any native input)
is the dead letter's reason.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

_JSON_START = frozenset(b"{[")
_WHITESPACE = b" \t\r\n"


def may_be_protobuf(raw: bytes) -> bool:
    """Whether the bytes can be an export: field 1 (resource_spans) first, and no JSON (which
    may also start with 0x0a, a newline, before its `{` or `[`)."""
    if raw[:1] != b"\x0a":
        return False
    stripped = raw.lstrip(_WHITESPACE)
    return not stripped or stripped[0] not in _JSON_START


class NotOtlp(ValueError):
    """The bytes are not an OTLP protobuf trace export."""


def read(raw: bytes) -> dict[str, Any]:
    """The export as an OTLP/JSON-shaped document; NotOtlp if it is not one (or is empty:
    an export of nothing is not worth a record, and garbage often parses as an empty one)."""
    try:
        request = ExportTraceServiceRequest.FromString(raw)
    except (DecodeError, ValueError, RecursionError) as exc:
        raise NotOtlp(f"not an OTLP protobuf trace export: {exc}") from exc
    if not request.resource_spans:
        raise NotOtlp("not an OTLP protobuf trace export: no resource_spans")
    doc: dict[str, Any] = json_format.MessageToDict(request, use_integers_for_enums=True)
    return doc
