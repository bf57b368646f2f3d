"""HTTP ingest for gateways that cannot write to Kafka (pure: the routes do the I/O).

`POST /api/events` (in the spirit of OpenMeter's ingest API) takes one event, a JSON array, JSON
Lines, a CloudEvents batch or LiteLLM's `generic_api` array; `POST /v1/traces` takes OTLP/HTTP
(JSON or protobuf), so any OpenTelemetry exporter can send straight to a worker. Neither
decodes for good: the body becomes message(s) on `metering.raw`, with the request headers the
decoder reads, so one decoder and one set of dead-letter rules apply to every path in. The
body is decoded once here only to answer with the counts it will yield.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

import orjson

from meterguard.streams.decoding.decode import MAX_MESSAGE_BYTES, decode_message

# The request headers that mean something to the decoder, forwarded as Kafka headers.
FORWARDED = ("content-type", "mg-format", "mg-identity", "mg-team", "mg-environment")
FORWARDED_PREFIXES = ("ce_", "mg-")
JSON_LINES = frozenset({"application/x-ndjson", "application/jsonl", "application/x-jsonlines"})
OTLP_TYPES = frozenset({"application/json", "application/x-protobuf", "application/protobuf"})
MAX_BODY_BYTES = MAX_MESSAGE_BYTES  # a body is a message (or, as JSON Lines, several)


@dataclass(frozen=True)
class Ingest:
    """What one request becomes: Kafka messages (value, headers) and the counts they yield."""

    messages: list[tuple[bytes, list[tuple[str, bytes]]]]
    accepted: int
    dead_lettered: int

    def body(self) -> dict[str, int]:
        return {
            "messages": len(self.messages),
            "accepted": self.accepted,
            "dead_lettered": self.dead_lettered,
        }


def media_type(value: str | None) -> str:
    return (value or "").split(";", 1)[0].strip().lower()


def kafka_headers(request_headers: Mapping[str, str]) -> list[tuple[str, bytes]]:
    """The request headers the decoder reads, as Kafka headers (names lower-cased)."""
    out = []
    for name, value in request_headers.items():
        lower = name.lower()
        if lower in FORWARDED or lower.startswith(FORWARDED_PREFIXES):
            # aiohttp decodes header bytes as UTF-8 with surrogateescape: this gives the
            # client's very bytes back (latin-1 failed on any non-latin-1 byte: a 500).
            out.append((lower, value.encode("utf-8", "surrogateescape")))
    return out


def plan(body: bytes, request_headers: Mapping[str, str], now: datetime) -> Ingest:
    """The messages a body becomes (JSON Lines: one per line; anything else: one) and the
    events and dead letters the worker will make of them. Header names are lower case."""
    headers = kafka_headers(request_headers)
    if media_type(request_headers.get("content-type")) in JSON_LINES or _json_lines(body):
        lines = [line for line in body.splitlines() if line.strip()]
        # Each line is a message of its own, read by content (its type is not JSON Lines).
        headers = [(k, v) for k, v in headers if k != "content-type"]
        messages = [(line, headers) for line in lines]
    else:
        messages = [(body, headers)]
    accepted = dead = 0
    for value, message_headers in messages:
        result = decode_message(value, message_headers, now)
        accepted += len(result.events)
        dead += len(result.dead_letters)
    return Ingest(messages, accepted, dead)


def _json_lines(body: bytes) -> bool:
    """JSON Lines sent as application/json (LiteLLM's generic_api logger with `log_format:
    ndjson` keeps `Content-Type: application/json`): not one JSON document, but every
    non-empty line is one."""
    lines = [line for line in body.splitlines() if line.strip()]
    if len(lines) < 2:
        return False
    try:
        orjson.loads(body)
        return False
    except orjson.JSONDecodeError:
        pass
    try:
        for line in lines:
            orjson.loads(line)
    except orjson.JSONDecodeError:
        return False
    return True
