"""HTTP ingest on a real worker (issue 11): POST /api/events (JSON Lines here) and POST
/v1/traces fed by the real OpenTelemetry OTLP/HTTP exporter (opentelemetry-exporter-otlp-
proto-http, protobuf), through the broker's metering.raw, to the worker's metering.events."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import orjson
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.trace import SpanKind

from meterguard.streams.tools.embedded import EmbeddedBroker, EmbeddedRedis
from meterguard.streams.web.ingest import MAX_BODY_BYTES
from tests.support.otel_sdk import capturing_tracer
from tests.support.worker_process import Worker, read_topics, start_worker

TOKEN = "ingest-test-token"
PRODUCER = Path(__file__).resolve().parents[2] / "deploy" / "examples" / "http_producer.sh"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
async def worker(broker: EmbeddedBroker, redis_server: EmbeddedRedis, tmp_path_factory):
    w = await start_worker(broker, redis_server.url, tmp_path_factory, {"MG_API_TOKEN": TOKEN})
    await w.wait_ready()
    yield w
    await w.stop()


def native(i: int) -> dict:
    at = datetime.now(UTC) - timedelta(minutes=2)
    return {
        "event_id": f"http-{i}",
        "identity": "svc-http",
        "event_time": at.isoformat().replace("+00:00", "Z"),
        "input_tokens": 10 + i,
        "output_tokens": 5,
    }


async def events_of(worker: Worker) -> list[dict]:
    topic = worker.settings.topic_events
    return (await read_topics(worker.settings, [topic]))[topic]


async def test_json_lines_are_accepted_counted_and_dead_lettered_like_kafka_input(worker):
    body = b"\n".join([*(orjson.dumps(native(i)) for i in range(3)), b'{"identity": "x"}'])
    headers = {**AUTH, "Content-Type": "application/x-ndjson"}
    url = f"{worker.web}/api/events"
    async with aiohttp.ClientSession() as http, http.post(url, data=body, headers=headers) as r:
        assert r.status == 202
        assert await r.json() == {"messages": 4, "accepted": 3, "dead_lettered": 1}
    await worker.wait_counted(3)
    got = [e for e in await events_of(worker) if e["identity"] == "svc-http"]
    assert sorted(e["event_id"] for e in got) == ["http-0", "http-1", "http-2"]
    assert sorted(e["input_tokens"] for e in got) == [10, 11, 12]


@pytest.mark.parametrize(
    ("headers", "body", "status"),
    [
        ({}, b"{}", 401),
        ({"Authorization": "Bearer wrong"}, b"{}", 403),
        (AUTH, b"x" * (MAX_BODY_BYTES + 1), 413),
        (AUTH, b"", 400),
    ],
)
async def test_refusals(worker, headers, body, status):
    url = f"{worker.web}/api/events"
    async with aiohttp.ClientSession() as http, http.post(url, data=body, headers=headers) as r:
        assert r.status == status


async def test_the_real_otlp_http_exporter_sends_straight_to_the_worker(worker):
    provider, captured, tracer = capturing_tracer("otlp-http-svc")
    agent = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "http-agent"}
    with tracer.start_as_current_span("invoke_agent http-agent", attributes=agent):
        for i in range(2):
            attrs = {
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": "gpt-4o-mini",
                "gen_ai.usage.input_tokens": 300 + i,
                "gen_ai.usage.output_tokens": 30,
            }
            with tracer.start_as_current_span("chat", kind=SpanKind.CLIENT, attributes=attrs):
                pass
    provider.shutdown()
    spans = captured.get_finished_spans()
    exporter = OTLPSpanExporter(endpoint=f"{worker.web}/v1/traces", headers=AUTH, timeout=10)
    assert exporter.export(spans) == SpanExportResult.SUCCESS
    exporter.shutdown()
    await worker.wait_counted(5)  # the 3 JSON Lines events of the test above, and these 2
    got = [e for e in await events_of(worker) if e["identity"] == "http-agent"]
    want = {
        f"otel-{s.context.trace_id:032x}-{s.context.span_id:016x}": s.attributes[
            "gen_ai.usage.input_tokens"
        ]
        for s in spans
        if s.attributes["gen_ai.operation.name"] == "chat"
    }
    assert {e["event_id"]: e["input_tokens"] for e in got} == want


async def test_the_documented_http_producer_script_delivers_a_json_lines_file(worker, tmp_path):
    """deploy/examples/http_producer.sh, run as the README shows it (curl)."""
    events = tmp_path / "events.jsonl"
    events.write_bytes(
        b"".join(orjson.dumps({**native(i), "event_id": f"sh-{i}"}) + b"\n" for i in range(2))
    )
    script = PRODUCER
    env = {**os.environ, "MG_URL": worker.web, "MG_API_TOKEN": TOKEN}
    proc = await asyncio.create_subprocess_exec(
        str(script), str(events), env=env, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    assert orjson.loads(out) == {"messages": 2, "accepted": 2, "dead_lettered": 0}
    await worker.wait_counted(7)  # 3 + 2 from the tests above, and these 2
    ids = {e["event_id"] for e in await events_of(worker)}
    assert {"sh-0", "sh-1"} <= ids
