"""Topic dumps as files: one `kcat -C -J` record per line, read back as the topic's messages.

`kcat -C -b BROKER -t metering.raw -J -e > dump.jsonl` writes each record as
`{"topic", "partition", "offset", "tstype", "ts", "broker", "headers": [name, value, ...],
"key", "payload"}`. Replaying such a file gives each message its Kafka headers (binary-mode
CloudEvents, `mg-identity`...), its coordinates (for dead letters) and its broker timestamp
(the ingest time, as for a topic replay), so a dump replays exactly like the topic it came from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from meterguard.streams.decoding.decode import Origin


@dataclass(frozen=True)
class KcatRecord:
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    origin: Origin
    timestamp_ms: int | None


class EnvelopeError(ValueError):
    pass


def read_kcat_line(line: bytes) -> KcatRecord:
    """One `kcat -J` line; EnvelopeError (with what is wrong) for anything else."""
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise EnvelopeError(f"not JSON: {exc}") from exc
    if not isinstance(doc, dict) or "payload" not in doc:
        raise EnvelopeError("not a kcat -J record (no 'payload' field)")
    payload = doc["payload"]
    if payload is not None and not isinstance(payload, str):
        raise EnvelopeError("'payload' must be a string or null")
    return KcatRecord(
        value=None if payload is None else payload.encode("utf-8", "surrogateescape"),
        headers=_headers(doc.get("headers")),
        origin=Origin(
            _text(doc.get("topic")), _whole(doc.get("partition")), _whole(doc.get("offset"))
        ),
        timestamp_ms=_whole(doc.get("ts")),
    )


def _headers(raw: Any) -> tuple[tuple[str, bytes], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or len(raw) % 2:
        raise EnvelopeError("'headers' must be a list of name, value pairs")
    pairs = []
    for name, value in zip(raw[::2], raw[1::2], strict=True):
        if not isinstance(name, str) or not isinstance(value, str | None):
            raise EnvelopeError("header names and values must be strings")
        if value is not None:  # a null header value carries nothing to read
            pairs.append((name, value.encode("utf-8", "surrogateescape")))
    return tuple(pairs)


def _whole(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None
