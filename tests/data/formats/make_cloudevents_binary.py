"""Regenerate cloudevents_binary.json + .headers.json and its native twin with the real
`cloudevents` SDK 2.x.

    .venv/bin/python tests/data/formats/make_cloudevents_binary.py [OUT_DIR]

A `cloudevents.core.v1.event.CloudEvent` is written by the SDK's Kafka protocol binding in
binary mode (`cloudevents.core.bindings.kafka.to_binary` with `JSONFormat`): every context
attribute becomes a `ce_<name>` header (UTF-8, not percent-encoded, unlike the HTTP binding;
`time` as `datetime.isoformat()`, here with a +02:00 offset), `datacontenttype` becomes the
`content-type` header, and the value is the data alone (`JSONFormat.write_data`). The
`traceparent` extension becomes `ce_traceparent`. Id and time are fixed. The native twin is
written from this script's own inputs, never from our decoder.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

HERE = Path(__file__).resolve().parent
NAME = "cloudevents_binary"
CEST = timezone(timedelta(hours=2))
ATTRIBUTES = {
    "specversion": "1.0",
    "id": "a3f1c9e2-77b0-4d5e-8c1f-6b2d9e0a4f18",
    "source": "urn:gateway:kong:eu-central-1",
    "type": "com.konghq.ai.usage",
    "subject": "agent-code-reviewer",
    "time": datetime(2025, 6, 3, 16, 22, 19, 880000, tzinfo=CEST),  # 14:22:19.880Z
    "datacontenttype": "application/json",
    "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
}
DATA = {  # native field names
    "team": "platform",
    "environment": "prod",
    "model": "claude-sonnet-4-20250514",
    "provider": "anthropic",
    "operation": "chat",
    "input_tokens": 15230,
    "output_tokens": 1204,
    "cached_tokens": 12800,
    "cost_usd": 0.02458,
    "latency_ms": 11873.5,
    "request_fingerprint": "sha256:9f2c41d0e7",
}


def main(out: Path = HERE) -> None:
    message = ce_kafka.to_binary(CloudEvent(attributes=dict(ATTRIBUTES), data=DATA), JSONFormat())
    (out / f"{NAME}.json").write_bytes(message.value)
    headers = {name: value.decode() for name, value in message.headers.items()}
    (out / f"{NAME}.headers.json").write_text(json.dumps(headers, indent=2) + "\n")
    twin = {
        "event_id": ATTRIBUTES["id"],
        "identity": ATTRIBUTES["subject"],
        "event_time": "2025-06-03T14:22:19.880Z",
        "source": ATTRIBUTES["source"],
        **DATA,
    }
    (out / f"{NAME}.native.jsonl").write_bytes(orjson.dumps(twin) + b"\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
