"""Regenerate cloudevents_structured.json (+ .headers.json) and its native twin with the real
`cloudevents` SDK 2.x.

    .venv/bin/python tests/data/formats/make_cloudevents_structured.py [OUT_DIR]

A `cloudevents.core.v1.event.CloudEvent` is written by the SDK's Kafka protocol binding in
structured mode (`cloudevents.core.bindings.kafka.to_structured` with `JSONFormat`): the value
is `JSONFormat().write(event)` (the whole event as JSON, `time` as RFC 3339 with `Z`) and the
only header is `content-type: application/cloudevents+json`. `traceparent` is the distributed
tracing extension, carried as an extension attribute. Id and time are fixed. The native twin is
written from this script's own inputs, never from our decoder.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import orjson
from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

HERE = Path(__file__).resolve().parent
NAME = "cloudevents_structured"
ATTRIBUTES = {
    "specversion": "1.0",
    "id": "0b9d3c54-5f8e-4a4e-9d0c-2f7a1b6e8c31",
    "source": "//gateway.eu-west-1.example.com/llm-proxy",
    "type": "com.example.ai.usage.v1",
    "subject": "svc-invoice-bot",
    "time": datetime(2025, 6, 3, 14, 22, 9, 518000, tzinfo=UTC),
    "datacontenttype": "application/json",
    "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
}
DATA = {  # native field names, except `route`: an unknown field, kept in `attributes`
    "team": "finance",
    "environment": "prod",
    "model": "gpt-4.1-mini",
    "provider": "openai",
    "operation": "chat",
    "endpoint": "/v1/chat/completions",
    "credential_id": "key_7Hq2",
    "input_tokens": 812,
    "output_tokens": 143,
    "cached_tokens": 0,
    "cost_usd": 0.000553,
    "latency_ms": 1840,
    "route": "eu-primary",
}


def main(out: Path = HERE) -> None:
    message = ce_kafka.to_structured(
        CloudEvent(attributes=dict(ATTRIBUTES), data=DATA), JSONFormat()
    )
    (out / f"{NAME}.json").write_bytes(message.value)
    headers = {name: value.decode() for name, value in message.headers.items()}
    (out / f"{NAME}.headers.json").write_text(json.dumps(headers, indent=2) + "\n")
    twin = {
        "event_id": ATTRIBUTES["id"],
        "identity": ATTRIBUTES["subject"],
        "event_time": "2025-06-03T14:22:09.518Z",
        "source": ATTRIBUTES["source"],
        **{k: v for k, v in DATA.items() if k != "route"},
        "attributes": {"route": DATA["route"]},
    }
    (out / f"{NAME}.native.jsonl").write_bytes(orjson.dumps(twin) + b"\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
