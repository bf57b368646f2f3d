"""CloudEvents over Kafka as the official `cloudevents` SDK writes them (issue 11): the Kafka
protocol binding's structured and binary modes, a structured event that also carries the
`ce_*` headers (allowed by the binding, §3.3.3), and a JSON batch (JSON format §4)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from meterguard.streams.decoding.decode import decode_message

FMT = JSONFormat()
AT = datetime.now(UTC).replace(microsecond=123000) - timedelta(minutes=5)
INGEST = AT + timedelta(minutes=5)


def usage(i: int) -> CloudEvent:
    return CloudEvent(
        attributes={
            "id": f"evt-{i:04d}",
            "source": "/llm-gateway/eu-1",
            "type": "com.example.llm.usage.v1",
            "specversion": "1.0",
            "time": AT,
            "subject": "agent-7",
            "datacontenttype": "application/json",
        },
        data={"model": "gpt-4o-mini", "input_tokens": 1200 + i, "output_tokens": 35},
    )


def pairs(headers: dict[str, bytes]) -> list[tuple[str, bytes]]:
    return list(headers.items())


def check(value: bytes | None, headers: list[tuple[str, bytes]], ids: list[int]) -> None:
    result = decode_message(value, headers, INGEST)
    assert result.dead_letters == []
    got = [(e.event_id, e.identity, e.input_tokens, e.output_tokens) for e in result.events]
    assert got == [(f"evt-{i:04d}", "agent-7", 1200 + i, 35) for i in ids]
    assert all(e.event_time_ms == int(AT.timestamp() * 1000) for e in result.events)


def test_structured_mode() -> None:
    msg = ce_kafka.to_structured(usage(1), FMT)
    assert msg.headers["content-type"].startswith(b"application/cloudevents+json")
    check(msg.value, pairs(msg.headers), [1])


def test_binary_mode() -> None:
    msg = ce_kafka.to_binary(usage(2), FMT)
    assert b"ce_specversion" not in msg.value and "ce_specversion" in msg.headers
    check(msg.value, pairs(msg.headers), [2])


def test_a_structured_event_with_ce_headers_is_read_as_structured() -> None:
    """The binding lets a structured message carry the binary headers too; content-type
    decides. Read as binary, the whole envelope was taken for the data: zero tokens."""
    structured = ce_kafka.to_structured(usage(3), FMT)
    binary = ce_kafka.to_binary(usage(3), FMT)
    headers = {**binary.headers, **structured.headers}  # structured's content-type wins
    assert "ce_specversion" in headers
    check(structured.value, pairs(headers), [3])


@pytest.mark.parametrize("content_type", [b"application/cloudevents-batch+json", None])
def test_a_json_batch(content_type: bytes | None) -> None:
    value = b"[" + b",".join(FMT.write(usage(i)) for i in (4, 5, 6)) + b"]"
    headers = [("content-type", content_type)] if content_type else []
    check(value, headers, [4, 5, 6])
