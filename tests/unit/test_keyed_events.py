"""The keyed hop's records (streams/decoding/keyed_events.py): one identity's events of a decode
batch per record, read back in order; older single-event records still read; anything else
on the topic a dead letter, never a crash."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from meterguard.models import DeadLetter, MeteringEvent
from meterguard.streams.decoding.keyed_events import (
    INVALID,
    encode_events,
    keyed_records,
    read_keyed,
)
from tests.support.traffic import T0, as_events, series

NOW = datetime(2026, 1, 6, 0, 0, tzinfo=UTC)


def events_of(*identities: str, minutes: int = 2) -> list[MeteringEvent]:
    docs = [d for identity in identities for d in series(identity, minutes, 3, start=T0)]
    docs.sort(key=lambda d: (d["event_time"], d["identity"]))  # identities interleaved
    return [e.model_copy(update={"ingest_time": NOW}) for e in as_events(docs)]


def read_all(records: list[tuple[bytes, bytes]]) -> list[MeteringEvent | DeadLetter]:
    return [item for _, value in records for item in read_keyed(value, NOW)]


def test_one_record_per_identity_keyed_by_it_in_order_of_first_appearance() -> None:
    events = events_of("svc-b", "svc-a", "svc-c")
    records = keyed_records(events)
    assert [key for key, _ in records] == [b"svc-a", b"svc-b", b"svc-c"]
    for key, value in records:
        mine = [e for e in events if e.identity.encode() == key]
        assert read_keyed(value, NOW) == mine  # every event, in input order


def test_a_record_is_the_array_of_the_single_event_records() -> None:
    events = events_of("svc-a")
    ((_, value),) = keyed_records(events)
    assert value == b"[" + b",".join(e.to_json() for e in events) + b"]"
    assert encode_events(events) == value


def test_records_split_past_the_size_limit_keep_the_order() -> None:
    events = events_of("svc-a", "svc-b", minutes=20)
    one = len(events[0].to_json())
    records = keyed_records(events, max_bytes=one * 7)
    assert len(records) > 2
    assert all(len(value) <= one * 7 for _, value in records)
    for identity in ("svc-a", "svc-b"):
        mine = [v for k, v in records if k == identity.encode()]
        got = [item for value in mine for item in read_keyed(value, NOW)]
        assert got == [e for e in events if e.identity == identity]


def test_an_event_bigger_than_the_limit_still_gets_its_record() -> None:
    (event,) = events_of("svc-a", minutes=1)[:1]
    assert keyed_records([event], max_bytes=10) == [(b"svc-a", encode_events([event]))]


def test_an_older_single_event_record_still_reads() -> None:
    event = events_of("svc-a")[0]
    assert read_keyed(event.to_json(), NOW) == [event]
    assert read_keyed(b"  \n" + event.to_json(), NOW) == [event]


def letter(item: MeteringEvent | DeadLetter) -> DeadLetter:
    assert isinstance(item, DeadLetter), item
    assert item.reason == INVALID and item.ingest_time == NOW and item.error
    return item


def test_anything_else_is_one_dead_letter_with_the_record_bytes() -> None:
    for value in (b'{"identity": "svc-quiet-0"}', b"nope", b"", b"[1, 2", b"[", b"42"):
        (item,) = read_keyed(value, NOW)
        assert letter(item).raw.encode() == value
    (item,) = read_keyed(None, NOW)
    assert letter(item).raw == ""


def test_an_empty_batch_is_a_dead_letter() -> None:
    (item,) = read_keyed(b"[]", NOW)
    assert letter(item).raw == "[]"


def test_a_bad_element_dies_alone_the_others_are_read_in_order() -> None:
    first, second = events_of("svc-a")[:2]
    bad = {"event_id": "x", "identity": "svc-a", "event_time": "yesterday"}
    value = b"[" + b",".join([first.to_json(), orjson.dumps(bad), b"7", second.to_json()]) + b"]"
    items = read_keyed(value, NOW)
    assert items[0] == first and items[3] == second
    assert orjson.loads(letter(items[1]).raw) == bad
    assert "event_time" in items[1].error  # type: ignore[union-attr]
    assert letter(items[2]).raw == "7"
