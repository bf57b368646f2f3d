"""Regenerate otlp_collector_two_services.json and its native twin with the real OpenTelemetry
SDK: one Collector export (OTLP/JSON) that carries the spans of two services.

    .venv/bin/python tests/data/formats/make_otlp_collector_two_services.py [OUT_DIR]

Producers. Two apps export OTLP to one Collector, whose batch processor appends both
requests' `ResourceSpans` into one export, which its Kafka exporter writes as one message
(`encoding: otlp_json`):

1. "support-agent" (OTel SDK `Resource.create`, `TracerProvider`): a FastAPI app whose request
   handler runs its own agent loop, "triage-agent", with four instrumentation scopes:
   - `opentelemetry.instrumentation.fastapi` (the ASGI middleware's SERVER span, stable HTTP
     semconv: `OTEL_SEMCONV_STABILITY_OPT_IN=http`, `exclude_spans=["receive", "send"]`):
     asgi `collect_request_attributes`, fastapi `_get_default_span_details` (`http.route`);
   - `support_agent`, the app's own code, written to the GenAI agent-span conventions with the
     OTel API: an `invoke_agent triage-agent` INTERNAL span that names the agent
     (`gen_ai.agent.name`) and sums its model calls' usage, and an `execute_tool lookup_order`
     span (`gen_ai.tool.*`, no agent name of its own);
   - `opentelemetry.instrumentation.openai_v2` (CLIENT spans "chat <model>", its default,
     legacy-semconv path `chat_completions_create_v_old`: `get_llm_request_attributes`,
     `_set_response_attributes`, `handle_span_exception`; so `gen_ai.system`, no
     `gen_ai.provider.name`, no cache reads, no agent name);
   - `opentelemetry.instrumentation.httpx` (the tool's CLIENT call to the order service,
     `_apply_request_client_attributes_to_span` / `..._response_...`, stable HTTP semconv).
   Neither instrumentation package is installed here, so the spans they make are made below
   through the real SDK with the API calls, names and attributes of their source at
   open-telemetry/opentelemetry-python-contrib 466ae4c0 (versions as written there). The model
   calls are real `openai` client calls (`chat.completions.create`) answered by an
   `httpx.MockTransport`: the responses, and the `RateLimitError` of the third call, are what
   the client returns and raises.

2. "report-writer" instrumented with OpenLIT 1.16.0 (`openlit.init(application_name=
   "report-writer", environment="staging", trace_content=False)`; openlit/openlit tag
   py-1.16.0, sdk/python/src/openlit/): its own `Resource(...)` (`otel/tracing.py`:
   `service.name`, `deployment.environment`, `telemetry.sdk.name=openlit`, nothing else), tracer
   `openlit.otel.tracing` (no version), and one CLIENT span "openai.chat.completions"
   per call (`instrumentation/openai/openai.py` `chat_completions`, without tools): OpenLIT's
   attributes of that release, `gen_ai.usage.prompt_tokens` / `completion_tokens` and
   `gen_ai.usage.cost` (its `get_chat_model_cost`: per-1k prices of `assets/pricing.json` at
   that tag, gpt-4o 0.005 / 0.015).

Encoding. Each app's finished spans go through the SDK's OTLP encoder (`encode_spans`: one
`ExportTraceServiceRequest` per app); the Collector's batch appends them (`MergeFrom`: the
repeated `resource_spans` concatenated), and the result is written as OTLP/JSON as the OTLP
specification defines it, like make_otlp_openai_agents_v2.py (proto3 JSON mapping, enums as
integers, ids as lowercase hex, compact).

Ids and times are fixed (an `IdGenerator` per provider, explicit start and end times, and
support-agent's `service.instance.id`). The native twin is written from this script's own
inputs and the client's responses, never from our decoder: the agent's calls were made by
"triage-agent", the OpenLIT call by the service "report-writer" (no agent span names it).
"""

from __future__ import annotations

import base64
import json
import os
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
from google.protobuf import json_format
from openai.types.chat import ChatCompletion
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.semconv.schemas import Schemas
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer, set_span_in_context

HERE = Path(__file__).resolve().parent
NAME = "otlp_collector_two_services"
AGENT_TRACE = 0x5B8EFFF798038103D269B633813FC60C
REPORT_TRACE = 0x9D3C5E71A4B2F6084C1E7A9B2D5F3E60
SERVER, AGENT, CALL = 0xEEE19B7EC3C1B174, 0xB7AD6B7169203331, 0x3A1F2C9D8E7B6A50
TOOL, HTTP, ANSWER, SUMMARY = (
    0xC4D2E8F1A9B30716,
    0x0F9E8D7C6B5A4938,
    0x7D3E1A2B9C8F0E61,
    0x91A0B2C3D4E5F607,
)
REPORT = 0x2E7F4A9C1B8D6053
T0 = 1_748_960_527_000_000_000  # 2025-06-03T14:22:07Z, in ns
MS = 1_000_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SUPPORT = {
    "service.name": "support-agent",
    "service.version": "2.14.1",
    "deployment.environment.name": "prod",
    "meterguard.team": "support",
    "service.instance.id": "3f0c9a7e-5b21-4d8e-9c64-1a2b7e90d4c3",  # fixed: else random
}
OPENLIT = {  # openlit/otel/tracing.py setup_tracing: Resource(attributes=...), as it is
    "service.name": "report-writer",
    "deployment.environment": "staging",
    "telemetry.sdk.name": "openlit",
}
AGENT_NAME, TOOL_NAME, MODEL = "triage-agent", "lookup_order", "gpt-4o-mini"
ROUTE, PATH = "/v1/tickets/{ticket_id}/triage", "/v1/tickets/T-88412/triage"
ORDER_URL = "https://orders.internal/api/orders/88412"
HTTP_VERSION = "1.1"
CONTRIB = "0.66b0.dev"  # fastapi's and httpx's __version__ at 466ae4c0
GPT_4O = {"promptPrice": 0.005, "completionPrice": 0.015}  # assets/pricing.json, py-1.16.0
LOOKUP_ORDER = {
    "type": "function",
    "function": {
        "name": TOOL_NAME,
        "description": "Look up an order by its id.",
        "parameters": {
            "type": "object",
            "properties": {"order_id": {"type": "string"}},
            "required": ["order_id"],
        },
    },
}


class FixedIds(IdGenerator):
    def __init__(self, trace: int, spans: list[int]) -> None:
        self.trace, self.spans = trace, iter(spans)

    def generate_span_id(self) -> int:
        return next(self.spans)

    def generate_trace_id(self) -> int:
        return self.trace


def completion_body(
    rid: str, model: str, message: dict[str, Any], finish: str, tokens: tuple[int, int, int]
) -> dict[str, Any]:
    """A chat completion as the OpenAI API answers it."""
    prompt, completion, cached = tokens
    return {
        "id": rid,
        "object": "chat.completion",
        "created": T0 // 1_000_000_000,
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
        "service_tier": "default",
        "system_fingerprint": "fp_34a54ae93c",
    }


RATE_LIMITED = {
    "error": {
        "message": "Rate limit reached for gpt-4o-mini in organization org-mg on tokens per min "
        "(TPM): Limit 200000, Used 199756, Requested 1240. Please try again in 299ms.",
        "type": "tokens",
        "param": None,
        "code": "rate_limit_exceeded",
    }
}
ANSWERS = [  # what the API answers triage-agent's three calls, in order: (status, body)
    (
        200,
        completion_body(
            "chatcmpl-BeTq4v1x9ZK2sN7wYc8mH3pLr6aD",
            "gpt-4o-mini-2024-07-18",
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_Qm3Fz8kLw1TnYd0aXe5R",
                        "type": "function",
                        "function": {"name": TOOL_NAME, "arguments": '{"order_id":"88412"}'},
                    }
                ],
                "refusal": None,
                "annotations": [],
            },
            "tool_calls",
            (1289, 96, 0),
        ),
    ),
    (
        200,
        completion_body(
            "chatcmpl-BeTq7Hc2Lm9Pq0sVb4nXw1Ze5kRt",
            "gpt-4o-mini-2024-07-18",
            {"role": "assistant", "content": "Queue: billing", "refusal": None, "annotations": []},
            "stop",
            (2526, 311, 1280),  # 1280 cache reads: openai_v2's legacy path does not report them
        ),
    ),
    (429, RATE_LIMITED),  # the optional ticket summary: rate limited
]
REPORT_ANSWER = (
    200,
    completion_body(
        "chatcmpl-BeTqAz6Ks1Lw4Nc8Rv2Yp0Hm7Dq",
        "gpt-4o-2024-08-06",
        {"role": "assistant", "content": "Weekly report ...", "refusal": None, "annotations": []},
        "stop",
        (1200, 280, 0),
    ),
)


def client(answers: list[tuple[int, dict[str, Any]]]) -> openai.OpenAI:
    """A real `openai` client (no retries) whose transport answers `answers` in order."""
    queue: Iterator[tuple[int, dict[str, Any]]] = iter(answers)

    def answer(request: httpx.Request) -> httpx.Response:
        status, body = next(queue)
        return httpx.Response(status, json=body)

    transport = httpx.MockTransport(answer)
    return openai.OpenAI(
        api_key="sk-sample", max_retries=0, http_client=httpx.Client(transport=transport)
    )


def at(ms: int) -> int:
    return T0 + ms * MS


class OpenAIv2:
    """opentelemetry-instrumentation-openai-v2's legacy chat path (patch.py, utils.py)."""

    def __init__(self, tracer: Tracer, api: openai.OpenAI) -> None:
        self.tracer, self.api = tracer, api

    def chat(self, parent: Span, start: int, end: int, **kwargs: Any) -> ChatCompletion | None:
        attributes = {  # get_llm_request_attributes, unset values filtered out
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": kwargs["model"],
            "gen_ai.system": "openai",
            "server.address": self.api.base_url.host,  # port 443: not set
        }
        span = self.tracer.start_span(
            f"chat {kwargs['model']}",
            context=set_span_in_context(parent),
            kind=SpanKind.CLIENT,
            attributes=attributes,
            start_time=at(start),
        )
        try:
            result: ChatCompletion = self.api.chat.completions.create(**kwargs)
        except openai.APIError as error:  # handle_span_exception
            span.set_status(Status(StatusCode.ERROR, str(error)))
            span.set_attribute("error.type", type(error).__qualname__)
            span.end(end_time=at(end))
            return None
        span.set_attribute("gen_ai.response.model", result.model)  # _set_response_attributes
        reasons = [choice.finish_reason or "error" for choice in result.choices]
        span.set_attribute("gen_ai.response.finish_reasons", reasons)
        span.set_attribute("gen_ai.response.id", result.id)
        if result.service_tier:
            span.set_attribute("gen_ai.openai.response.service_tier", result.service_tier)
        assert result.usage is not None
        span.set_attribute("gen_ai.usage.input_tokens", result.usage.prompt_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", result.usage.completion_tokens)
        span.end(end_time=at(end))
        return result


def openlit_chat(
    tracer: Tracer, api: openai.OpenAI, start: int, end: int, **kwargs: Any
) -> tuple[ChatCompletion, float]:
    """OpenLIT 1.16.0's `chat_completions` wrapper, non-streaming, no tools, no content."""
    span = tracer.start_span("openai.chat.completions", kind=SpanKind.CLIENT, start_time=at(start))
    response: ChatCompletion = api.chat.completions.create(**kwargs)
    model = kwargs.get("model", "gpt-3.5-turbo")
    assert response.usage is not None
    usage = response.usage
    cost = (usage.prompt_tokens / 1000) * GPT_4O["promptPrice"] + (
        usage.completion_tokens / 1000
    ) * GPT_4O["completionPrice"]  # get_chat_model_cost
    for key, value in [
        ("telemetry.sdk.name", "openlit"),
        ("gen_ai.system", "openai"),
        ("gen_ai.operation.name", "chat"),
        ("gen_ai.endpoint", "openai.chat.completions"),
        ("gen_ai.response.id", response.id),
        ("gen_ai.environment", OPENLIT["deployment.environment"]),
        ("gen_ai.application_name", OPENLIT["service.name"]),
        ("gen_ai.request.model", model),
        ("gen_ai.request.top_p", kwargs.get("top_p", 1)),
        ("gen_ai.request.max_tokens", kwargs.get("max_tokens", "")),
        ("gen_ai.request.user", kwargs.get("user", "")),
        ("gen_ai.request.temperature", kwargs.get("temperature", 1)),
        ("gen_ai.request.presence_penalty", kwargs.get("presence_penalty", 0)),
        ("gen_ai.request.frequency_penalty", kwargs.get("frequency_penalty", 0)),
        ("gen_ai.request.seed", kwargs.get("seed", "")),
        ("gen_ai.request.is_stream", False),
        ("gen_ai.usage.prompt_tokens", usage.prompt_tokens),
        ("gen_ai.usage.completion_tokens", usage.completion_tokens),
        ("gen_ai.usage.total_tokens", usage.total_tokens),
        ("gen_ai.response.finish_reason", response.choices[0].finish_reason),
        ("gen_ai.usage.cost", cost),
    ]:
        span.set_attribute(key, value)
    span.set_status(Status(StatusCode.OK))
    span.end(end_time=at(end))
    return response, cost


def support_agent(
    exporter: InMemorySpanExporter,
) -> tuple[TracerProvider, ChatCompletion, ChatCompletion]:
    ids = FixedIds(AGENT_TRACE, [SERVER, AGENT, CALL, TOOL, HTTP, ANSWER, SUMMARY])
    provider = TracerProvider(resource=Resource.create(SUPPORT), id_generator=ids)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    http_schema = Schemas.V1_21_0.value  # _get_schema_url(HTTP): the stable HTTP semconv
    fastapi = provider.get_tracer(
        "opentelemetry.instrumentation.fastapi", CONTRIB, schema_url=http_schema
    )
    app = provider.get_tracer("support_agent")
    httpx_tracer = provider.get_tracer(
        "opentelemetry.instrumentation.httpx", CONTRIB, schema_url=http_schema
    )
    v2 = OpenAIv2(
        provider.get_tracer(
            "opentelemetry.instrumentation.openai_v2", "", schema_url=Schemas.V1_30_0.value
        ),
        client(ANSWERS),
    )

    # The request (ms after T0): collect_request_attributes + http.route, then the status.
    server = fastapi.start_span(
        f"POST {ROUTE}",
        kind=SpanKind.SERVER,
        start_time=at(0),
        attributes={
            "url.scheme": "http",
            "server.address": "10.0.3.5:8080",  # the scope's server, not the Host header
            "server.port": 8080,
            "network.protocol.version": HTTP_VERSION,
            "url.path": PATH,
            "http.request.method": "POST",
            "user_agent.original": "support-console/3.2",
            "client.address": "10.0.7.21",
            "client.port": 51522,
            "http.route": ROUTE,
        },
    )
    agent = app.start_span(
        f"invoke_agent {AGENT_NAME}",
        context=set_span_in_context(server),
        kind=SpanKind.INTERNAL,
        start_time=at(12),
        attributes={
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": AGENT_NAME,
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": MODEL,
        },
    )
    messages: list[Any] = [{"role": "user", "content": "Route ticket T-88412 to a queue."}]
    call = v2.chat(agent, 30, 2_395, model=MODEL, messages=messages, tools=[LOOKUP_ORDER])
    assert call is not None and call.choices[0].message.tool_calls
    tool_call = call.choices[0].message.tool_calls[0]
    tool = app.start_span(
        f"execute_tool {TOOL_NAME}",
        context=set_span_in_context(agent),
        kind=SpanKind.INTERNAL,
        start_time=at(2_410),
        attributes={
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": TOOL_NAME,
            "gen_ai.tool.call.id": tool_call.id,
            "gen_ai.tool.type": "function",
        },
    )
    get = httpx_tracer.start_span(
        "GET",
        context=set_span_in_context(tool),
        kind=SpanKind.CLIENT,
        start_time=at(2_421),
        attributes={
            "http.request.method": "GET",
            "url.full": ORDER_URL,
            "server.address": "orders.internal",
            "network.peer.address": "orders.internal",
        },
    )
    get.set_attribute("http.response.status_code", 200)
    get.set_attribute("network.protocol.version", HTTP_VERSION)
    get.end(end_time=at(2_676))
    tool.end(end_time=at(2_688))
    result = {"role": "tool", "content": '{"queue":"billing"}', "tool_call_id": tool_call.id}
    messages += [call.choices[0].message.to_dict(), result]
    answer = v2.chat(agent, 2_702, 5_811, model=MODEL, messages=messages, tools=[LOOKUP_ORDER])
    assert answer is not None
    summary = v2.chat(
        agent, 5_830, 6_102, model=MODEL, messages=[{"role": "user", "content": "Summarise."}]
    )
    assert summary is None  # rate limited: the agent answers without it
    used = [c.usage for c in (call, answer) if c.usage is not None]
    agent.set_attribute("gen_ai.usage.input_tokens", sum(u.prompt_tokens for u in used))
    agent.set_attribute("gen_ai.usage.output_tokens", sum(u.completion_tokens for u in used))
    agent.end(end_time=at(9_140))
    server.set_attribute("http.response.status_code", 200)
    server.end(end_time=at(9_150))
    return provider, call, answer


def otlp_json(request: ExportTraceServiceRequest) -> dict[str, Any]:
    """OTLP/JSON (specification.md, "JSON Protobuf Encoding"), as the Collector writes it."""
    doc = json_format.MessageToDict(request, use_integers_for_enums=True)
    for resource_spans in doc["resourceSpans"]:
        for scope_spans in resource_spans["scopeSpans"]:
            for span in scope_spans["spans"]:
                assert "links" not in span and "events" not in span
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:  # proto3 JSON writes bytes as base64; OTLP/JSON wants hex
                        span[key] = base64.b64decode(span[key]).hex()
    return doc


def instant(ms: int) -> str:
    moment = EPOCH + timedelta(microseconds=at(ms) // 1000)
    return moment.isoformat().replace("+00:00", "Z")


def main(out: Path = HERE) -> None:
    for variable in ("OTEL_RESOURCE_ATTRIBUTES", "OTEL_SERVICE_NAME"):
        os.environ.pop(variable, None)  # the resources are this script's alone
    agent_spans = InMemorySpanExporter()
    provider, call, answer = support_agent(agent_spans)
    provider.shutdown()

    report_spans = InMemorySpanExporter()
    openlit = TracerProvider(
        resource=Resource(OPENLIT), id_generator=FixedIds(REPORT_TRACE, [REPORT])
    )
    openlit.add_span_processor(SimpleSpanProcessor(report_spans))
    report, cost = openlit_chat(
        openlit.get_tracer("openlit.otel.tracing"),
        client([REPORT_ANSWER]),
        1_500,
        8_250,
        model="gpt-4o",
        messages=[{"role": "user", "content": "Write the weekly support report."}],
    )
    openlit.shutdown()
    assert report.usage is not None

    export = ExportTraceServiceRequest()  # the Collector's batch: both requests, appended
    export.MergeFrom(encode_spans(agent_spans.get_finished_spans()))
    export.MergeFrom(encode_spans(report_spans.get_finished_spans()))
    doc = otlp_json(export)
    (out / f"{NAME}.json").write_bytes(json.dumps(doc, separators=(",", ":")).encode())

    # The twin: one native event per model or tool call, in the export's order; the HTTP
    # spans and the agent span (it wraps its calls, and repeats their usage) are not calls.
    def agent_call(span: int, parent: int, start: int, end: int, **fields: Any) -> dict[str, Any]:
        return {
            "event_id": f"otel-{AGENT_TRACE:032x}-{span:016x}",
            "identity": AGENT_NAME,
            "event_time": instant(end),
            "team": SUPPORT["meterguard.team"],
            "environment": SUPPORT["deployment.environment.name"],
            **fields,
            "latency_ms": float(end - start),
            "trace_id": f"{AGENT_TRACE:032x}",
            "span_id": f"{span:016x}",
            # No parent_span_id: `parent`, the agent span, and the spans above it are no
            # metered calls (the decoder links a call to the nearest metered call above it).
        }

    def usage(response: ChatCompletion) -> dict[str, Any]:
        assert response.usage is not None
        return {
            "model": response.model,
            "provider": "openai",
            "operation": "chat",
            "input_tokens": response.usage.prompt_tokens,
            "output_tokens": response.usage.completion_tokens,
        }

    twins = {
        CALL: agent_call(CALL, AGENT, 30, 2_395, **usage(call)),
        TOOL: agent_call(
            TOOL,
            AGENT,
            2_410,
            2_688,
            kind="tool.call",
            operation="execute_tool",
            tool_name=TOOL_NAME,
        ),
        ANSWER: agent_call(ANSWER, AGENT, 2_702, 5_811, **usage(answer)),
        SUMMARY: agent_call(
            SUMMARY,
            AGENT,
            5_830,
            6_102,
            model=MODEL,
            provider="openai",
            operation="chat",
            status="error",
            error_type="RateLimitError",
        ),
        REPORT: {
            "event_id": f"otel-{REPORT_TRACE:032x}-{REPORT:016x}",
            "identity": OPENLIT["service.name"],
            "event_time": instant(8_250),
            "environment": OPENLIT["deployment.environment"],
            "model": "gpt-4o",
            "provider": "openai",
            "operation": "chat",
            "input_tokens": report.usage.prompt_tokens,
            "output_tokens": report.usage.completion_tokens,
            "cost_usd": cost,
            "latency_ms": float(8_250 - 1_500),
            "trace_id": f"{REPORT_TRACE:032x}",
            "span_id": f"{REPORT:016x}",
        },
    }
    order = [
        int(span["spanId"], 16)
        for resource_spans in doc["resourceSpans"]
        for scope_spans in resource_spans["scopeSpans"]
        for span in scope_spans["spans"]
    ]
    lines = b"".join(orjson.dumps(twins[s]) + b"\n" for s in order if s in twins)
    (out / f"{NAME}.native.jsonl").write_bytes(lines)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
