"""Regenerate otlp_openai_agents_v2.json and its native twin with the real OpenTelemetry SDK,
as the official OpenAI Agents instrumentation writes an agent run's spans.

    .venv/bin/python tests/data/formats/make_otlp_openai_agents_v2.py [OUT_DIR]

Producer. An app runs an `openai-agents` agent ("triage-agent", one function tool) and exports
its traces with `opentelemetry-instrumentation-openai-agents-v2`
(`OpenAIAgentsInstrumentor().instrument(tracer_provider=provider,
capture_message_content=False)`: usage, no prompts). Neither package is installed here, so the
`Processor` below makes, through the real OTel SDK (`TracerProvider`), exactly the API calls that
instrumentation's `GenAISemanticProcessor` makes, in its order, with its defaults. Upstream
source: open-telemetry/opentelemetry-python-contrib at 466ae4c0 (2026-08-21),
instrumentation-genai/opentelemetry-instrumentation-openai-agents-v2/src/opentelemetry/
instrumentation/openai_agents/ (`__init__.py`, `span_processor.py`, lines cited below), for
openai/openai-agents-python 0.22.0 at 7f7a44f8 (src/agents/models/openai_responses.py,
src/agents/tracing/span_data.py). What it does, and so what this sample has:

- tracer `opentelemetry.instrumentation.openai_agents`, no version, schema 1.28.0
  (`__init__.py` 147-152);
- per run, a root span named after the workflow ("Agent workflow", the SDK's default), kind
  SERVER, `gen_ai.operation.name=invoke_agent`, status OK at trace end (`on_trace_start` 1105,
  `on_trace_end` 1131-1137);
- an agent span "invoke_agent <agent>", kind CLIENT (`_get_span_kind` 1100); its
  `gen_ai.request.model` is the first child response's model (`_update_agent_aggregate` 966);
- a response span per model call, kind CLIENT, "chat" renamed "chat <model>" at its end
  (1255), with `gen_ai.response.id`, `gen_ai.response.model`, `gen_ai.request.model` (the
  response's: `ResponseSpanData` has no model), `gen_ai.usage.input_tokens` /
  `output_tokens` only (no cache reads), `gen_ai.tool.definitions` (`_get_attributes_from_
  response_span_data` 1695-1792);
- a function span "execute_tool <tool>", kind INTERNAL, `gen_ai.tool.name`, `gen_ai.tool.type`;
- on EVERY span `gen_ai.provider.name` and `gen_ai.system` ("openai"), `server.address` /
  `server.port`, and the instrumentor's defaults `gen_ai.agent.name="OpenAI Agent"`,
  `gen_ai.agent.id="agent"`, `gen_ai.agent.description="OpenAI Agents instrumentation"`
  (`__init__.py` 186-191; set in `on_span_start` 1183-1190 and again in
  `_extract_genai_attributes` 1349-1356; only the agent span's name is its own, 1572);
- a failed call: `SpanError(message="Error getting response", data={"error": str(e)})`
  (openai_responses.py 615) becomes status ERROR "<message>: <data>" (`_get_span_status` 351)
  and no `error.type` (the SpanError has no type); the run's agent span gets "Error in agent
  run" (run_internal/error_handlers.py). Run 2 below is such a run, rate limited: the error
  text is what the real `openai` client raises for a 429.

Encoding. The finished spans go through the SDK's OTLP encoder (opentelemetry-exporter-otlp-
proto-common `encode_spans`, one batch: one resource, one scope) to an `ExportTraceServiceRequest`
and then to OTLP/JSON as the OTLP specification defines it (opentelemetry-proto
docs/specification.md, "JSON Protobuf Encoding"): the proto3 JSON mapping (`json_format.
MessageToDict`: lowerCamelCase keys, 64-bit integers as decimal strings) with its deviations:
enums as integers (`use_integers_for_enums=True`) and `traceId` / `spanId` (and `parentSpanId`)
as hex, "not base64-encoded as is defined in the standard Protobuf JSON Mapping", so the
base64 that `json_format` writes for bytes fields is turned into lowercase hex, as the
Collector's `otlp_json` writes it. Compact, like the Collector.

Ids and times are fixed (an `IdGenerator`, explicit start and end times, and the resource's
`service.instance.id`, which the SDK otherwise draws at random per process). The native twin is
written from this script's own inputs, never from our decoder: the calls were made by the agent
"triage-agent", so that is the identity of each.
"""

from __future__ import annotations

import base64
import json
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
from google.protobuf import json_format
from openai.types.responses import (
    FunctionTool,
    Response,
    ResponseFunctionToolCall,
    ResponseOutputItem,
    ResponseOutputMessage,
    ResponseOutputText,
    ResponseUsage,
)
from openai.types.responses.response_usage import InputTokensDetails, OutputTokensDetails
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.semconv.schemas import Schemas
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer, set_span_in_context

HERE = Path(__file__).resolve().parent
NAME = "otlp_openai_agents_v2"
# Trace ids of their own: otlp_collector_two_services uses 5b8efff7... (and the same span ids),
# and both samples are produced to one topic in tests/integration/test_formats_samples_broker.py.
RUN1, RUN2 = 0x6C9F00A8A9149214E37AC744924FD71D, 0x0AF7651916CD43DD8448EB211C80319C
SPAN_IDS = [  # in the order the spans start
    0xEEE19B7EC3C1B174,  # run 1: Agent workflow
    0xB7AD6B7169203331,  #   invoke_agent triage-agent
    0x3A1F2C9D8E7B6A50,  #     chat (tool call)
    0xC4D2E8F1A9B30716,  #     execute_tool lookup_order
    0x7D3E1A2B9C8F0E61,  #     chat (answer)
    0x53995C3F42CD8AD8,  # run 2: Agent workflow
    0x1F2E3D4C5B6A7988,  #   invoke_agent triage-agent
    0x91A0B2C3D4E5F607,  #     chat (429)
]
T0 = 1_748_960_527_000_000_000  # 2025-06-03T14:22:07Z, in ns
MS = 1_000_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
RESOURCE = {
    "service.name": "support-agent",
    "service.version": "2.14.1",
    "deployment.environment.name": "prod",
    "meterguard.team": "support",
    "service.instance.id": "8c1f6b2d-9e0a-4f18-a3f1-c9e277b04d5e",  # fixed: else random
}
AGENT, TOOL, WORKFLOW = "triage-agent", "lookup_order", "Agent workflow"

# The instrumentation's constants (__init__.py 186-191).
SYSTEM = "openai"
AGENT_DEFAULTS = {
    "gen_ai.agent.name": "OpenAI Agent",
    "gen_ai.agent.id": "agent",
    "gen_ai.agent.description": "OpenAI Agents instrumentation",
}
SERVER = {"server.address": "api.openai.com", "server.port": 443}

LOOKUP_ORDER = FunctionTool(
    type="function",
    name=TOOL,
    description="Look up an order by its id.",
    parameters={
        "type": "object",
        "properties": {"order_id": {"type": "string"}},
        "required": ["order_id"],
        "additionalProperties": False,
    },
    strict=True,
)


class FixedIds(IdGenerator):
    def __init__(self) -> None:
        self.traces = iter([RUN1, RUN2])
        self.spans = iter(SPAN_IDS)

    def generate_span_id(self) -> int:
        return next(self.spans)

    def generate_trace_id(self) -> int:
        return next(self.traces)


def model_response(
    rid: str, output: list[ResponseOutputItem], tokens: tuple[int, int, int]
) -> Response:
    """A Responses API answer, as the `openai` client hands it to the agents SDK."""
    tin, tout, cached = tokens
    return Response(
        id=rid,
        object="response",
        created_at=T0 // 1_000_000_000,
        status="completed",
        model="gpt-4o-mini-2024-07-18",
        output=output,
        parallel_tool_calls=True,
        tool_choice="auto",
        tools=[LOOKUP_ORDER],
        usage=ResponseUsage(
            input_tokens=tin,
            input_tokens_details=InputTokensDetails(cached_tokens=cached, cache_write_tokens=0),
            output_tokens=tout,
            output_tokens_details=OutputTokensDetails(reasoning_tokens=0),
            total_tokens=tin + tout,
        ),
    )


CALL = model_response(
    "resp_68a3f1c2b7d08190a4e2c1f9d3b5a7e6",
    [
        ResponseFunctionToolCall(
            type="function_call",
            id="fc_68a3f1c4e2a48190b5d3c2e1f0a9b8c7",
            call_id="call_Qm3Fz8kLw1TnYd0aXe5R",
            name=TOOL,
            arguments='{"order_id":"88412"}',
            status="completed",
        )
    ],
    (1289, 96, 0),
)
ANSWER = model_response(
    "resp_68a3f1c7d1e48190c6f4d3e2a1b0c9d8",
    [
        ResponseOutputMessage(
            type="message",
            id="msg_68a3f1c9a3b58190d7e5f4a3b2c1d0e9",
            role="assistant",
            status="completed",
            content=[ResponseOutputText(type="output_text", text="Queue: billing", annotations=[])],
        )
    ],
    (1526, 311, 1280),  # 1280 cache reads: the instrumentation does not report them
)


def rate_limit_error() -> openai.RateLimitError:
    """The error the real `openai` client raises for a 429 (no retries, a mock transport)."""
    body = {
        "error": {
            "message": "Rate limit reached for gpt-4o-mini in organization org-mg on tokens per "
            "min (TPM): Limit 200000, Used 199756, Requested 1240. Please try again in 299ms.",
            "type": "tokens",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }
    transport = httpx.MockTransport(lambda request: httpx.Response(429, json=body))
    client = openai.OpenAI(
        api_key="sk-sample", max_retries=0, http_client=httpx.Client(transport=transport)
    )
    try:
        client.responses.create(model="gpt-4o-mini", input="Route ticket T-88413.")
    except openai.RateLimitError as exc:
        return exc
    raise AssertionError("the mock answers 429")


class Processor:
    """GenAISemanticProcessor's calls on the OTel API (span_processor.py at 466ae4c0)."""

    def __init__(self, tracer: Tracer) -> None:
        self.tracer = tracer

    def trace_start(self, at: int) -> Span:  # on_trace_start, 1105-1130
        attributes = {
            "gen_ai.provider.name": SYSTEM,
            "gen_ai.system": SYSTEM,
            "gen_ai.operation.name": "invoke_agent",
            **SERVER,
        }
        return self.tracer.start_span(
            WORKFLOW, attributes=attributes, kind=SpanKind.SERVER, start_time=T0 + at * MS
        )

    def trace_end(self, root: Span, at: int) -> None:  # on_trace_end, 1131-1137
        root.set_status(Status(StatusCode.OK))
        root.end(end_time=T0 + at * MS)

    def span_start(
        self, name: str, operation: str, kind: SpanKind, parent: Span, at: int
    ) -> Span:  # on_span_start, 1139-1201
        attributes = {
            "gen_ai.provider.name": SYSTEM,
            "gen_ai.system": SYSTEM,
            "gen_ai.operation.name": operation,
            **AGENT_DEFAULTS,
            **SERVER,
        }
        return self.tracer.start_span(
            name,
            context=set_span_in_context(parent),
            attributes=attributes,
            kind=kind,
            start_time=T0 + at * MS,
        )

    def span_end(
        self,
        span: Span,
        own: list[tuple[str, Any]],
        at: int,
        error: dict[str, Any] | None = None,
        rename: str | None = None,
    ) -> None:  # on_span_end, 1203-1270: attributes, name, status, end
        common = [
            ("gen_ai.provider.name", SYSTEM),  # _extract_genai_attributes, 1334-1362
            ("gen_ai.system", SYSTEM),
            *AGENT_DEFAULTS.items(),
            *SERVER.items(),
        ]
        for key, value in common + own:
            span.set_attribute(key, value)
        if rename:
            span.update_name(rename)
        if error:  # _get_span_status, 346-353
            description = f"{error.get('message', '')}: {error.get('data', '')}"
            span.set_status(Status(StatusCode.ERROR, description))
        else:
            span.set_status(Status(StatusCode.OK))
        span.end(end_time=T0 + at * MS)


def response_attributes(response: Response | None) -> list[tuple[str, Any]]:
    """_get_attributes_from_response_span_data, 1695-1792, without content capture."""
    own: list[tuple[str, Any]] = [("gen_ai.operation.name", "chat")]
    if response is not None:
        assert response.usage is not None
        tools = [tool.to_dict() for tool in response.tools]
        own += [
            ("gen_ai.response.id", response.id),
            ("gen_ai.response.model", response.model),
            ("gen_ai.request.model", response.model),
            ("gen_ai.usage.input_tokens", response.usage.input_tokens),
            ("gen_ai.usage.output_tokens", response.usage.output_tokens),
            # safe_json_dumps -> opentelemetry.util.genai gen_ai_json_dumps: compact json.dumps
            ("gen_ai.tool.definitions", json.dumps(tools, separators=(",", ":"))),
        ]
    return [*own, ("gen_ai.output.type", "text")]  # _infer_output_type: no dict output


def agent_attributes(model: str | None) -> list[tuple[str, Any]]:
    """_get_attributes_from_agent_span_data, 1564-1654, without content capture: the agent's
    own name, but the instrumentor's default id and description (1572-1584)."""
    own: list[tuple[str, Any]] = [
        ("gen_ai.operation.name", "invoke_agent"),
        ("gen_ai.agent.name", AGENT),
        ("gen_ai.agent.id", AGENT_DEFAULTS["gen_ai.agent.id"]),
        ("gen_ai.agent.description", AGENT_DEFAULTS["gen_ai.agent.description"]),
    ]
    if model:
        own.append(("gen_ai.request.model", model))
    return [*own, ("gen_ai.output.type", "text")]


TOOL_ATTRIBUTES = [  # _get_attributes_from_function_span_data, 1656-1693, without content
    ("gen_ai.operation.name", "execute_tool"),
    ("gen_ai.tool.name", TOOL),
    ("gen_ai.tool.type", "function"),
    ("gen_ai.output.type", "json"),
]


def instant(ms: int) -> str:
    moment = EPOCH + timedelta(microseconds=(T0 + ms * MS) // 1000)
    return moment.isoformat().replace("+00:00", "Z")


def otlp_json(spans: Any) -> bytes:
    """The SDK's OTLP encoding, as OTLP/JSON (specification.md, "JSON Protobuf Encoding")."""
    doc = json_format.MessageToDict(encode_spans(spans), use_integers_for_enums=True)
    for resource_spans in doc["resourceSpans"]:
        for scope_spans in resource_spans["scopeSpans"]:
            for span in scope_spans["spans"]:
                assert "links" not in span and "events" not in span
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:  # proto3 JSON writes bytes as base64; OTLP/JSON wants hex
                        span[key] = base64.b64decode(span[key]).hex()
    return json.dumps(doc, separators=(",", ":")).encode()


def main(out: Path = HERE) -> None:
    for variable in ("OTEL_RESOURCE_ATTRIBUTES", "OTEL_SERVICE_NAME"):
        os.environ.pop(variable, None)  # the resource is this script's alone
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create(RESOURCE), id_generator=FixedIds())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer(
        "opentelemetry.instrumentation.openai_agents", "", schema_url=Schemas.V1_28_0.value
    )
    p = Processor(tracer)
    error = rate_limit_error()

    # Run 1 (ms after T0): the model asks for the tool, the tool runs, the model answers.
    root = p.trace_start(0)
    agent = p.span_start(f"invoke_agent {AGENT}", "invoke_agent", SpanKind.CLIENT, root, 12)
    call = p.span_start("chat", "chat", SpanKind.CLIENT, agent, 30)
    p.span_end(call, response_attributes(CALL), 2_395, rename=f"chat {CALL.model}")
    tool = p.span_start(f"execute_tool {TOOL}", "execute_tool", SpanKind.INTERNAL, agent, 2_410)
    p.span_end(tool, TOOL_ATTRIBUTES, 2_688)
    answer = p.span_start("chat", "chat", SpanKind.CLIENT, agent, 2_702)
    p.span_end(answer, response_attributes(ANSWER), 5_811, rename=f"chat {ANSWER.model}")
    p.span_end(agent, agent_attributes(CALL.model), 5_820)  # the first response's model
    p.trace_end(root, 5_830)

    # Run 2: the first model call is rate limited, and the run fails with it.
    root = p.trace_start(6_000)
    agent = p.span_start(f"invoke_agent {AGENT}", "invoke_agent", SpanKind.CLIENT, root, 6_010)
    failed = p.span_start("chat", "chat", SpanKind.CLIENT, agent, 6_030)
    p.span_end(
        failed,
        response_attributes(None),  # no response: no model, no usage
        6_302,
        error={"message": "Error getting response", "data": {"error": str(error)}},
    )
    p.span_end(
        agent,
        agent_attributes(None),
        6_310,
        error={"message": "Error in agent run", "data": {"error": str(error)}},
    )
    p.trace_end(root, 6_320)
    provider.shutdown()
    (out / f"{NAME}.json").write_bytes(otlp_json(exporter.get_finished_spans()))

    # The twin: one native event per model or tool call (the workflow and agent spans wrap
    # them), in the order the spans ended, each billed to the agent that made it.
    def event(run: int, span: int, parent: int, start: int, end: int, **fields: Any) -> dict:
        return {
            "event_id": f"otel-{run:032x}-{span:016x}",
            "identity": AGENT,
            "event_time": instant(end),
            "team": RESOURCE["meterguard.team"],
            "environment": RESOURCE["deployment.environment.name"],
            "provider": SYSTEM,
            **fields,
            "latency_ms": float(end - start),
            "trace_id": f"{run:032x}",
            "span_id": f"{span:016x}",
            # No parent_span_id: `parent`, the agent span, and the spans above it are no
            # metered calls (the decoder links a call to the nearest metered call above it).
        }

    def usage(response: Response) -> dict[str, Any]:
        assert response.usage is not None
        return {
            "model": response.model,
            "operation": "chat",
            "input_tokens": response.usage.input_tokens,
            "output_tokens": response.usage.output_tokens,
        }

    agent1, agent2 = SPAN_IDS[1], SPAN_IDS[6]
    twins = [
        event(RUN1, SPAN_IDS[2], agent1, 30, 2_395, **usage(CALL)),
        event(
            RUN1,
            SPAN_IDS[3],
            agent1,
            2_410,
            2_688,
            kind="tool.call",
            operation="execute_tool",
            tool_name=TOOL,
        ),
        event(RUN1, SPAN_IDS[4], agent1, 2_702, 5_811, **usage(ANSWER)),
        event(RUN2, SPAN_IDS[7], agent2, 6_030, 6_302, operation="chat", status="error"),
    ]
    lines = b"".join(orjson.dumps(t) + b"\n" for t in twins)
    (out / f"{NAME}.native.jsonl").write_bytes(lines)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
