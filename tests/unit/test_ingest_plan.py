"""What an HTTP ingest body becomes (streams/web/ingest.py), before any I/O."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from meterguard.streams.web.ingest import kafka_headers, plan

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def event(i: int) -> dict:
    return {"event_id": f"e{i}", "identity": "svc", "event_time": "2026-12-03T11:59:00Z"}


def test_a_json_array_of_cloudevents_is_one_message_of_many_events() -> None:
    batch = [
        {"specversion": "1.0", "id": f"c{i}", "source": "/gw", "type": "usage",
         "time": "2026-12-03T11:59:00Z", "data": {"identity": "svc", "input_tokens": 3}}
        for i in range(3)
    ]  # fmt: skip
    work = plan(orjson.dumps(batch), {"content-type": "application/cloudevents-batch+json"}, NOW)
    assert len(work.messages) == 1
    assert (work.accepted, work.dead_lettered) == (3, 0)
    assert work.messages[0][1] == [("content-type", b"application/cloudevents-batch+json")]


def test_json_lines_are_a_message_per_line_read_by_content() -> None:
    body = b"\n".join(orjson.dumps(event(i)) for i in range(2)) + b"\n\nnot json\n"
    work = plan(body, {"content-type": "application/x-ndjson", "mg-team": "t"}, NOW)
    assert [value for value, _ in work.messages] == [
        *(orjson.dumps(event(i)) for i in range(2)),
        b"not json",
    ]
    assert all(headers == [("mg-team", b"t")] for _, headers in work.messages)
    assert (work.accepted, work.dead_lettered) == (2, 1)
    assert work.body() == {"messages": 3, "accepted": 2, "dead_lettered": 1}


def test_only_headers_the_decoder_reads_are_forwarded() -> None:
    given = {"content-type": "application/json", "authorization": "Bearer x", "ce_id": "1",
             "mg-identity": "a", "x-forwarded-for": "10.0.0.1"}  # fmt: skip
    assert kafka_headers(given) == [
        ("content-type", b"application/json"), ("ce_id", b"1"), ("mg-identity", b"a")
    ]  # fmt: skip
