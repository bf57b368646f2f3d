#!/usr/bin/env python3
"""Generate real OTLP trace samples (protobuf + JSON) with the OpenTelemetry Python SDK.

Spans: one parent `invoke_agent <name>` (INTERNAL, in-process agent) with two child
`chat <model>` spans (CLIENT), one `execute_tool` span (INTERNAL), and one failing chat span.
Attributes follow the GenAI semantic conventions (gen_ai.*).

Outputs (in samples/):
  otlp_traces.pb                 ExportTraceServiceRequest.SerializeToString() (what kafkaexporter
                                 otlp_proto / OTLP/HTTP application/x-protobuf carry)
  otlp_traces.collector.json     OTLP/JSON as the collector's pdata JSONMarshaler writes it
                                 (lowerCamelCase keys, lowercase-hex ids, enums as ints,
                                 64-bit ints as decimal strings, compact, no defaults)
  otlp_traces.protobuf_json.json google.protobuf.json_format.MessageToJson output, unmodified:
                                 NOT valid OTLP/JSON (ids are base64, enums are names)
  otlp_traces.spans.txt          human-readable dump (names, ids, parent, kind, attributes)

Run: /tmp/issue11/venv/bin/python gen_otlp.py
"""
import base64
import json
import os
import time
from typing import Sequence

from google.protobuf import json_format
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, Status, StatusCode

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "samples")


class CapturingExporter(SpanExporter):
    """Custom in-memory exporter: keeps the ReadableSpans handed to export()."""

    def __init__(self):
        self.spans: list[ReadableSpan] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def build_spans() -> list[ReadableSpan]:
    exporter = CapturingExporter()
    provider = TracerProvider(
        resource=Resource.create(
            {
                "service.name": "support-agent",
                "service.version": "1.2.3",
                "deployment.environment.name": "prod",
                "tenant.id": "acme",
            }
        )
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("meterguard.samples", "0.1.0")

    with tracer.start_as_current_span(
        "invoke_agent SupportAgent",
        kind=SpanKind.INTERNAL,  # in-process agent -> INTERNAL (remote agent would be CLIENT)
        attributes={
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": "SupportAgent",
            "gen_ai.agent.id": "agent_7f3c2a",
            "gen_ai.agent.description": "Answers billing questions",
            "gen_ai.conversation.id": "conv_5j66UpCpwteGg4YSxUnt7lPY",
            "gen_ai.request.model": "gpt-4o-mini",
        },
    ) as agent:
        with tracer.start_as_current_span(
            "chat gpt-4o-mini",
            kind=SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o-mini",
                "gen_ai.request.max_tokens": 256,
                "gen_ai.request.temperature": 0.2,
                "server.address": "api.openai.com",
                "server.port": 443,
            },
        ) as chat1:
            time.sleep(0.002)
            chat1.set_attribute("gen_ai.response.model", "gpt-4o-mini-2024-07-18")
            chat1.set_attribute("gen_ai.response.id", "chatcmpl-AbC123")
            chat1.set_attribute("gen_ai.response.finish_reasons", ["tool_calls"])
            chat1.set_attribute("gen_ai.usage.input_tokens", 1200)
            chat1.set_attribute("gen_ai.usage.output_tokens", 35)
            chat1.set_attribute("gen_ai.usage.cache_read.input_tokens", 1024)
        with tracer.start_as_current_span(
            "execute_tool lookup_invoice",
            kind=SpanKind.INTERNAL,
            attributes={
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": "lookup_invoice",
                "gen_ai.tool.call.id": "call_mszuSIzqtI65i1wAUOE8w5H4",
                "gen_ai.tool.type": "function",
            },
        ):
            time.sleep(0.001)
        with tracer.start_as_current_span(
            "chat gpt-4o-mini",
            kind=SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o-mini",
                "server.address": "api.openai.com",
                "server.port": 443,
            },
        ) as chat2:
            time.sleep(0.002)
            chat2.set_attribute("gen_ai.response.model", "gpt-4o-mini-2024-07-18")
            chat2.set_attribute("gen_ai.response.finish_reasons", ["stop"])
            chat2.set_attribute("gen_ai.usage.input_tokens", 1290)
            chat2.set_attribute("gen_ai.usage.output_tokens", 180)
            chat2.set_attribute("gen_ai.usage.reasoning.output_tokens", 0)
        # A failed model call: error.type + span status ERROR, no usage.
        with tracer.start_as_current_span(
            "chat gpt-4o",
            kind=SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o",
            },
            record_exception=False,
            set_status_on_exception=False,
        ) as chat3:
            chat3.set_attribute("error.type", "RateLimitError")
            chat3.set_status(Status(StatusCode.ERROR, "429 Too Many Requests"))
        agent.set_attribute("gen_ai.usage.input_tokens", 2490)
        agent.set_attribute("gen_ai.usage.output_tokens", 215)

    provider.shutdown()
    return exporter.spans


def _b64_to_hex(v: str) -> str:
    return base64.b64decode(v).hex()  # lowercase, like Go hex.EncodeToString in pdata


def to_collector_json(req: ExportTraceServiceRequest) -> str:
    """OTLP/JSON as in opentelemetry-proto docs/specification.md "JSON Protobuf Encoding"
    and collector pdata (ptrace.JSONMarshaler): hex ids, integer enums, lowerCamelCase."""
    d = json_format.MessageToDict(req, use_integers_for_enums=True)  # int64 -> str already

    def fix(o):
        if isinstance(o, dict):
            for k in list(o):
                if k in ("traceId", "spanId", "parentSpanId") and isinstance(o[k], str):
                    o[k] = _b64_to_hex(o[k])
                else:
                    fix(o[k])
        elif isinstance(o, list):
            for x in o:
                fix(x)

    fix(d)
    return json.dumps(d, separators=(",", ":"))


def from_otlp_json(text: str) -> ExportTraceServiceRequest:
    """Decode OTLP/JSON (hex ids) with python protobuf: hex -> base64 for id fields first.
    json_format.Parse on raw OTLP/JSON does NOT fail: a 32-char hex traceId is valid base64 and
    silently decodes to 24 wrong bytes (16-char spanId -> 12 bytes)."""
    d = json.loads(text)

    def fix(o):
        if isinstance(o, dict):
            for k in list(o):
                if k in ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id") \
                        and isinstance(o[k], str):
                    o[k] = base64.b64encode(bytes.fromhex(o[k])).decode() if o[k] else ""
                else:
                    fix(o[k])
        elif isinstance(o, list):
            for x in o:
                fix(x)

    fix(d)
    return json_format.ParseDict(d, ExportTraceServiceRequest(), ignore_unknown_fields=True)


def main():
    os.makedirs(OUT, exist_ok=True)
    spans = build_spans()
    req = encode_spans(spans)
    pb = req.SerializeToString()
    with open(os.path.join(OUT, "otlp_traces.pb"), "wb") as f:
        f.write(pb)
    with open(os.path.join(OUT, "otlp_traces.collector.json"), "w") as f:
        f.write(to_collector_json(req))
    with open(os.path.join(OUT, "otlp_traces.protobuf_json.json"), "w") as f:
        f.write(json_format.MessageToJson(req))

    # Round-trip checks.
    back = ExportTraceServiceRequest.FromString(pb)
    assert back == req
    back_json = ExportTraceServiceRequest()
    json_format.Parse(open(os.path.join(OUT, "otlp_traces.protobuf_json.json")).read(), back_json)
    assert back_json == req
    assert from_otlp_json(open(os.path.join(OUT, "otlp_traces.collector.json")).read()) == req
    naive = ExportTraceServiceRequest()
    json_format.Parse(open(os.path.join(OUT, "otlp_traces.collector.json")).read(), naive)
    assert len(naive.resource_spans[0].scope_spans[0].spans[0].trace_id) == 24  # the pitfall

    lines = [f"protobuf bytes: {len(pb)}; first bytes: {pb[:4].hex()}"]
    for rs in back.resource_spans:
        lines.append("resource: " + json.dumps({kv.key: json_format.MessageToDict(kv.value) for kv in rs.resource.attributes}))
        for ss in rs.scope_spans:
            lines.append(f" scope: {ss.scope.name} {ss.scope.version}")
            for s in ss.spans:
                lines.append(
                    f"  span {s.name!r} trace={s.trace_id.hex()} span={s.span_id.hex()} "
                    f"parent={s.parent_span_id.hex() or '-'} kind={s.kind} status={s.status.code} "
                    f"flags=0x{s.flags:x}"
                )
                for kv in s.attributes:
                    lines.append(f"     {kv.key} = {json_format.MessageToDict(kv.value)}")
    with open(os.path.join(OUT, "otlp_traces.spans.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
