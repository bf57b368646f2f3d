"""Reading `kcat -C -J` lines (pure)."""

from __future__ import annotations

import orjson
import pytest

from meterguard.streams.decoding.kcat_envelope import EnvelopeError, read_kcat_line


def test_a_kcat_record_gives_value_headers_coordinates_and_timestamp():
    line = orjson.dumps(
        {
            "topic": "metering.raw",
            "partition": 2,
            "offset": 41,
            "tstype": "create",
            "ts": 1_767_600_000_123,
            "broker": 1,
            "headers": ["ce_specversion", "1.0", "ce_id", "e-1", "empty", None],
            "key": "svc-a",
            "payload": '{"identity": "svc-a"}',
        }
    )
    record = read_kcat_line(line)
    assert record.value == b'{"identity": "svc-a"}'
    assert record.headers == (("ce_specversion", b"1.0"), ("ce_id", b"e-1"))
    assert (record.origin.topic, record.origin.partition, record.origin.offset) == (
        "metering.raw",
        2,
        41,
    )
    assert record.timestamp_ms == 1_767_600_000_123


def test_a_null_payload_and_no_headers_are_kept_as_such():
    record = read_kcat_line(b'{"payload": null}')
    assert record.value is None and record.headers == () and record.timestamp_ms is None


@pytest.mark.parametrize(
    ("line", "why"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "no 'payload'"),
        (b'{"topic": "t"}', "no 'payload'"),
        (b'{"payload": 12}', "string or null"),
        (b'{"payload": "x", "headers": ["odd"]}', "pairs"),
        (b'{"payload": "x", "headers": [1, "v"]}', "strings"),
    ],
)
def test_anything_else_is_an_envelope_error_saying_what_is_wrong(line: bytes, why: str):
    with pytest.raises(EnvelopeError, match=why):
        read_kcat_line(line)
