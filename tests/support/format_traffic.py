"""The same traffic as native events and as the formats gateways emit (for worker tests).

`as_formats(docs)` assigns each identity one input format, rewrites its native documents
into what that format can carry (an OTLP event id is a function of trace and span id, an
OpenAI `created` has whole seconds, …) and returns both: the native documents, and the
Kafka messages (value, headers, key) carrying exactly those events in that format, in the
same per-identity order.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import orjson

from meterguard.timeutil import parse_event_time

Message = tuple[bytes, list[tuple[str, bytes]], bytes]  # value, headers, key
FORMAT_OF = {
    "agent-runaway": "otlp",
    "svc-quiet-0": "cloudevents-binary",
    "svc-quiet-1": "cloudevents",
    "svc-quiet-2": "cloudevents-batch",
    "svc-quiet-3": "litellm",
    "svc-quiet-4": "openai",
}
CE_SOURCE = "urn:gateway:eu-1"
# The worker test's mapping file: an OpenAI response names no team, environment or cost.
MAPPING_YAML = """\
openai:
  cost_usd: ["header:mg-cost-usd"]
  defaults: {team: platform, environment: prod}
"""


@dataclass
class FormatTraffic:
    native: list[dict] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    poison_spans: int = 0


def as_formats(docs: list[dict], poison_every: int = 0) -> FormatTraffic:
    """Messages per (identity, minute) for the batching formats, one per event otherwise."""
    out = FormatTraffic()
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    order: list[tuple[str, str]] = []
    for doc in docs:
        native = _native_for(doc, FORMAT_OF[doc["identity"]])
        out.native.append(native)
        key = (native["identity"], native["event_time"][:16])
        if FORMAT_OF[native["identity"]] in ("otlp", "cloudevents-batch"):
            if key not in groups:
                order.append(key)
            groups[key].append(native)
        else:
            order.append((native["event_id"], ""))
            groups[(native["event_id"], "")].append(native)
    for n, key in enumerate(order):
        members = groups[key]
        fmt = FORMAT_OF[members[0]["identity"]]
        poison = fmt == "otlp" and poison_every > 0 and n % poison_every == 0
        out.poison_spans += poison
        out.messages.append(_encode(fmt, members, poison))
    return out


def _native_for(doc: dict, fmt: str) -> dict:
    native = dict(doc)
    if fmt == "otlp":
        trace = hashlib.md5(doc["event_id"].encode()).hexdigest()
        span = hashlib.sha1(doc["event_id"].encode()).hexdigest()[:16]
        native.update(
            event_id=f"otel-{trace}-{span}",
            trace_id=trace,
            span_id=span,
            operation="chat",
            provider="openai",
            latency_ms=850.0,
        )
    elif fmt.startswith("cloudevents"):
        native["source"] = CE_SOURCE
    elif fmt == "litellm":
        key_hash = hashlib.sha256(doc["identity"].encode()).hexdigest()
        native.update(credential_id=key_hash, operation="acompletion", provider="openai")
        native["latency_ms"] = 1200.0
    elif fmt == "openai":
        whole = parse_event_time(doc["event_time"]).replace(microsecond=0)
        native["event_time"] = whole.isoformat().replace("+00:00", "Z")
        native["operation"] = "chat"
    return native


def _encode(fmt: str, docs: list[dict], poison: bool) -> Message:
    key = docs[0]["identity"].encode()
    if fmt == "otlp":
        return orjson.dumps(_otlp(docs, poison)), [], key
    if fmt == "cloudevents-batch":
        ct = [("content-type", b"application/cloudevents-batch+json")]
        return orjson.dumps([_cloudevent(d) for d in docs]), ct, key
    (doc,) = docs
    if fmt == "cloudevents":
        return orjson.dumps(_cloudevent(doc)), [], key
    if fmt == "cloudevents-binary":
        envelope = _cloudevent(doc)
        data = envelope.pop("data")
        headers = [(f"ce_{k}", str(v).encode()) for k, v in envelope.items()]
        return orjson.dumps(data), [*headers, ("content-type", b"application/json")], key
    if fmt == "litellm":
        return orjson.dumps(_litellm_row(doc)), [], key
    if fmt == "openai":
        headers = [
            ("mg-identity", doc["identity"].encode()),
            ("mg-cost-usd", str(doc["cost_usd"]).encode()),
        ]
        return orjson.dumps(_chat_completion(doc)), headers, key
    raise ValueError(fmt)


_ENVELOPE = {"event_id", "identity", "event_time", "source"}


def _cloudevent(doc: dict) -> dict:
    return {
        "specversion": "1.0",
        "id": doc["event_id"],
        "source": doc["source"],
        "type": "com.example.ai.usage.v1",
        "subject": doc["identity"],
        "time": doc["event_time"],
        "data": {k: v for k, v in doc.items() if k not in _ENVELOPE},
    }


def _nanos(text: str, minus_ms: float = 0) -> str:
    moment = parse_event_time(text) - timedelta(milliseconds=minus_ms)
    return str(int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000)


def _kv(key: str, value: object) -> dict:
    if isinstance(value, bool):
        return {"key": key, "value": {"boolValue": value}}
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    if isinstance(value, float):
        return {"key": key, "value": {"doubleValue": value}}
    return {"key": key, "value": {"stringValue": str(value)}}


def _otlp(docs: list[dict], poison: bool) -> dict:
    first = docs[0]
    spans = [
        {  # the agent's own HTTP server span: not a metering record
            "traceId": "ab" * 16,
            "spanId": hashlib.sha1(first["event_id"].encode()).hexdigest()[16:32],
            "name": "POST /run",
            "kind": 2,
            "startTimeUnixNano": _nanos(first["event_time"], 900),
            "endTimeUnixNano": _nanos(first["event_time"]),
            "attributes": [_kv("http.request.method", "POST"), _kv("http.route", "/run")],
        }
    ]
    for doc in docs:
        spans.append(
            {
                "traceId": doc["trace_id"],
                "spanId": doc["span_id"],
                "parentSpanId": "",
                "name": f"chat {doc['model']}",
                "kind": 3,
                "startTimeUnixNano": _nanos(doc["event_time"], doc["latency_ms"]),
                "endTimeUnixNano": _nanos(doc["event_time"]),
                "attributes": [
                    _kv("gen_ai.operation.name", "chat"),
                    _kv("gen_ai.provider.name", "openai"),
                    _kv("gen_ai.agent.name", doc["identity"]),
                    _kv("gen_ai.request.model", doc["model"]),
                    _kv("gen_ai.usage.input_tokens", doc["input_tokens"]),
                    _kv("gen_ai.usage.output_tokens", doc["output_tokens"]),
                    _kv("gen_ai.usage.cost", float(doc["cost_usd"])),
                ],
                "status": {},
            }
        )
    if poison:  # a GenAI span no one can bill: its own dead letter, siblings unaffected
        spans.append({**spans[-1], "spanId": "not-hex", "traceId": "ff" * 16})
    resource = [
        _kv("service.name", "runaway-service"),
        _kv("meterguard.team", first["team"]),
        _kv("deployment.environment.name", first["environment"]),
    ]
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": resource},
                "scopeSpans": [{"scope": {"name": "openai_agents"}, "spans": spans}],
            }
        ]
    }


def _litellm_row(doc: dict) -> dict:
    end = parse_event_time(doc["event_time"])
    start = end - timedelta(milliseconds=doc["latency_ms"])
    return {
        "request_id": doc["event_id"],
        "call_type": doc["operation"],
        "api_key": doc["credential_id"],
        "spend": doc["cost_usd"],
        "total_tokens": doc["input_tokens"] + doc["output_tokens"],
        "prompt_tokens": doc["input_tokens"],
        "completion_tokens": doc["output_tokens"],
        "startTime": start.isoformat(),
        "endTime": end.isoformat(),
        "model": doc["model"],
        "custom_llm_provider": doc["provider"],
        "metadata": {
            "user_api_key_alias": doc["identity"],
            "user_api_key_team_alias": doc["team"],
            "spend_logs_metadata": {"environment": doc["environment"]},
            "status": "success",
        },
        "cache_hit": "False",
        "cache_key": "Cache OFF",
        "status": "success",
    }


def _chat_completion(doc: dict) -> dict:
    created = int(parse_event_time(doc["event_time"]).timestamp())
    return {
        "id": doc["event_id"],
        "object": "chat.completion",
        "created": created,
        "model": doc["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}}],
        "usage": {
            "prompt_tokens": doc["input_tokens"],
            "completion_tokens": doc["output_tokens"],
            "total_tokens": doc["input_tokens"] + doc["output_tokens"],
        },
    }


def recent_start(minutes_ago: int = 80) -> datetime:
    return datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=minutes_ago)
