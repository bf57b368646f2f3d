"""Regenerate otlp_sdk_protobuf.pb and its native twin with the real OpenTelemetry SDK.

    .venv/bin/python tests/data/formats/make_otlp_sdk_protobuf.py [OUT_DIR]

The spans are made by the SDK's TracerProvider with GenAI semantic-convention attributes and
encoded by the SDK's OTLP encoder (opentelemetry-exporter-otlp-proto-common `encode_spans`):
the bytes the OTLP exporters send, and that the Collector's Kafka exporter writes with its
default `otlp_proto` encoding (no Kafka header). Ids and times are fixed so the sample is
stable, and so is the resource's `service.instance.id`, which the SDK otherwise draws at random
per process (`ServiceInstanceIdResourceDetector`; a value passed to `Resource.create` wins).
The native twin is written from this script's own inputs, never from our decoder.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import orjson
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import SpanKind, set_span_in_context

HERE = Path(__file__).resolve().parent
TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
SPAN_IDS = [0x00F067AA0BA902B7, 0x53995C3F42CD8AD8, 0x6E0C63257DE34C92, 0x7A2B0C1D3E4F5061]
T0 = 1_748_960_000_000_000_000  # 2025-06-03T14:13:20Z, in ns
MS = 1_000_000


class FixedIds(IdGenerator):
    def __init__(self) -> None:
        self.spans = iter(SPAN_IDS)

    def generate_span_id(self) -> int:
        return next(self.spans)

    def generate_trace_id(self) -> int:
        return TRACE_ID


# (operation, model, input, output, cached, start ms, end ms, error type)
CALLS = [
    ("chat", "gpt-4o-mini", 812, 64, 512, 100, 1_900, None),
    ("chat", "gpt-4o-mini", 1_240, 0, 0, 2_000, 2_350, "RateLimitError"),
    ("chat", "gpt-4o-mini", 1_240, 201, 1_024, 3_400, 6_100, None),
]


def main(out: Path = HERE) -> None:
    for variable in ("OTEL_RESOURCE_ATTRIBUTES", "OTEL_SERVICE_NAME"):
        os.environ.pop(variable, None)  # the resource is this script's alone
    exporter = InMemorySpanExporter()
    resource = Resource.create(
        {
            "service.name": "billing-svc",
            "deployment.environment.name": "prod",
            "service.instance.id": "ddabbe97-25e5-4b44-975f-759ec9ccbaad",  # fixed: else random
        }
    )
    provider = TracerProvider(resource=resource, id_generator=FixedIds())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("meterguard-sample")
    agent = tracer.start_span(
        "invoke_agent invoice-agent",
        start_time=T0,
        attributes={
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": "invoice-agent",
            "meterguard.team": "billing",
        },
    )
    twins = []
    for i, (op, model, tin, tout, cached, start, end, error) in enumerate(CALLS):
        attrs = {
            "gen_ai.operation.name": op,
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": model,
            "gen_ai.usage.input_tokens": tin,
            "gen_ai.usage.output_tokens": tout,
            "gen_ai.usage.cache_read.input_tokens": cached,
        }
        if error:
            attrs["error.type"] = error
        span = tracer.start_span(
            f"{op} {model}",
            context=set_span_in_context(agent),
            kind=SpanKind.CLIENT,
            start_time=T0 + start * MS,
            attributes=attrs,
        )
        span.end(end_time=T0 + end * MS)
        span_id = f"{SPAN_IDS[i + 1]:016x}"
        twin = {
            "event_id": f"otel-{TRACE_ID:032x}-{span_id}",
            "identity": "invoice-agent",
            "event_time": f"2025-06-03T14:13:{20 + end // 1000:02d}.{end % 1000:03d}000Z",
            "team": "billing",
            "environment": "prod",
            "trace_id": f"{TRACE_ID:032x}",
            "model": model,
            "provider": "openai",
            "operation": op,
            "input_tokens": tin,
            "output_tokens": tout,
            "latency_ms": float(end - start),
            "span_id": span_id,
            # No parent_span_id: the span above is the agent span, no metered call (the
            # decoder links a call to the nearest metered call above it).
        }
        if cached:
            twin["cached_tokens"] = cached
        if error:
            twin.update(status="error", error_type=error)
        twins.append(twin)
    agent.end(end_time=T0 + 6_200 * MS)
    provider.shutdown()
    spans = exporter.get_finished_spans()  # children first, as the SDK exports them
    (out / "otlp_sdk_protobuf.pb").write_bytes(encode_spans(spans).SerializeToString())
    lines = b"".join(orjson.dumps(t) + b"\n" for t in twins)
    (out / "otlp_sdk_protobuf.native.jsonl").write_bytes(lines)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
