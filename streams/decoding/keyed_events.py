"""The records of the keyed hop, `metering.events` (decode agent -> score agent). Pure.

One record carries one identity's events of one decode batch, in the order they were read:
key = the identity (UTF-8), value = a JSON array of the events, each element exactly the
object `MeteringEvent.to_json` writes. An identity's events of one batch are split over
several records only past `MAX_RECORD_BYTES` (order kept: one partition, produced in order).
Records written before batching hold one event object; both shapes are read.

The score agent validates every record in full, as it did single events: the topic is open to
any producer, and for the validators a trusted shortcut (`model_construct`) costs about as much
as checking. A record that is neither shape, or an element that is no valid event, becomes a
dead letter of its own (`invalid_internal_event`, with that element's JSON as `raw`); the
record's other events are scored.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

import orjson
from pydantic import TypeAdapter

from meterguard.models import DeadLetter, MeteringEvent
from meterguard.streams.decoding.decode import Origin, dead_letter, decode_event_json
from meterguard.streams.decoding.formats.common import as_raw

INVALID = "invalid_internal_event"
# Well under the producer's request limit (Faust's default 1,000,000 bytes) and Kafka's
# default message.max.bytes; one accepted event is at most ~60 KB (attributes ≤ 16 KiB).
MAX_RECORD_BYTES = 512 * 1024

_EVENTS = TypeAdapter(list[MeteringEvent])


def encode_events(events: Sequence[MeteringEvent]) -> bytes:
    """A batch record's value: the JSON array of the events' `to_json` objects (one call)."""
    return _EVENTS.dump_json(list(events), exclude_none=True)


def keyed_records(
    events: Iterable[MeteringEvent], max_bytes: int = MAX_RECORD_BYTES
) -> list[tuple[bytes, bytes]]:
    """(key, value) records for these events: one per identity (identities in order of first
    appearance, each identity's events in input order), split only past `max_bytes`."""
    by_identity: dict[str, list[MeteringEvent]] = {}
    for event in events:
        by_identity.setdefault(event.identity, []).append(event)
    records = []
    for identity, mine in by_identity.items():
        key = identity.encode()
        records += [(key, value) for value in _values(mine, max_bytes)]
    return records


def _values(events: list[MeteringEvent], max_bytes: int) -> list[bytes]:
    value = encode_events(events)
    if len(value) <= max_bytes or len(events) == 1:
        return [value]
    half = len(events) // 2  # rare (a very busy identity with big attributes): halve, in order
    return _values(events[:half], max_bytes) + _values(events[half:], max_bytes)


def read_keyed(value: bytes | None, now: datetime) -> list[MeteringEvent | DeadLetter]:
    """The events of one `metering.events` record (a batch or an older single event), in
    order; whatever is not a valid event is a dead letter. Never raises."""
    raw = value or b""
    if raw.lstrip()[:1] != b"[":
        try:
            return [decode_event_json(raw)]
        except Exception as exc:  # whatever a foreign producer wrote: a letter, never a crash
            return [_letter(raw, repr(exc), now)]
    try:
        events: list[MeteringEvent | DeadLetter] = list(_EVENTS.validate_json(raw))
    except Exception:
        return _one_by_one(raw, now)
    return events or [_letter(raw, "a batch record without events", now)]


def _one_by_one(raw: bytes, now: datetime) -> list[MeteringEvent | DeadLetter]:
    """A batch some element of which is no valid event: each element on its own."""
    try:
        elements = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return [_letter(raw, repr(exc), now)]
    items: list[MeteringEvent | DeadLetter] = []
    for element in elements:
        data = as_raw(element)
        try:
            items.append(decode_event_json(data))
        except Exception as exc:
            items.append(_letter(data, repr(exc), now))
    return items or [_letter(raw, "a batch record without events", now)]


def _letter(raw: bytes, error: str, now: datetime) -> DeadLetter:
    return dead_letter(raw, INVALID, error[:500], now, Origin())
