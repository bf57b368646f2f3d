"""The ingest routes (streams/web/ingest.py says what they take): bearer token, body limit,
produce to `metering.raw`, and nothing acknowledged unless the broker took every message."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import faust
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from meterguard.models import utc_now
from meterguard.streams.settings import Settings
from meterguard.streams.web import operator
from meterguard.streams.web.ingest import MAX_BODY_BYTES, OTLP_TYPES, media_type, plan

log = logging.getLogger("meterguard.ingest")
# How long the broker may take to acknowledge a request's messages before the answer is 503
# (the client retries: nothing was acknowledged, and a redelivered event id counts once).
SEND_TIMEOUT_S = 10.0


def register_ingest_routes(app: faust.App, settings: Settings) -> None:
    async def ingest(view: Any, request: Any, otlp: bool) -> Any:
        refusal = operator.check_bearer(
            request.headers.get("Authorization"), settings.api_token_value
        )
        if refusal is not None:
            headers = {"WWW-Authenticate": "Bearer"} if refusal.status == 401 else None
            return view.json({"error": refusal.error}, status=refusal.status, headers=headers)
        content_type = media_type(request.headers.get("Content-Type"))
        if otlp and content_type not in OTLP_TYPES:
            error = "OTLP/HTTP bodies are application/json or application/x-protobuf"
            return view.json({"error": error}, status=415)
        body = await _read_body(request)
        if body is None:
            return view.json({"error": f"body over {MAX_BODY_BYTES} bytes"}, status=413)
        if not body.strip() and not otlp:
            return view.json({"error": "empty body"}, status=400)
        headers = {name.lower(): value for name, value in request.headers.items()}
        if otlp and content_type != "application/json":
            headers["content-type"] = "application/x-protobuf"
        work = plan(body, headers, utc_now())
        try:
            await asyncio.wait_for(_produce(app, settings.topic_raw, work.messages), SEND_TIMEOUT_S)
        except Exception as exc:  # any failure of the broker (aiokafka raises its own types)
            log.warning("ingest refused, the broker did not take the messages: %r", exc)
            return view.json(
                {"error": "the broker is unavailable; nothing was accepted"}, status=503
            )
        if otlp:  # OTLP/HTTP: 200 with an ExportTraceServiceResponse in the request's encoding
            if content_type == "application/json":
                return view.json({})
            return view.bytes(
                ExportTraceServiceResponse().SerializeToString(),
                content_type="application/x-protobuf",
            )
        return view.json(work.body(), status=202)

    @app.page("/api/events")
    class Events(faust.web.View):
        async def post(self, request: Any) -> Any:
            return await ingest(self, request, otlp=False)

    @app.page("/v1/traces")
    class Traces(faust.web.View):
        async def post(self, request: Any) -> Any:
            return await ingest(self, request, otlp=True)


async def _produce(
    app: faust.App, topic: str, messages: list[tuple[bytes, list[tuple[str, bytes]]]]
) -> None:
    producer = app.producer
    for value, headers in messages:
        await producer.send(topic, None, value, None, None, headers or None)
    await producer.flush()


async def _read_body(request: Any) -> bytes | None:
    """The whole body, or None once it is over MAX_BODY_BYTES (read no further)."""
    declared = request.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        return None
    body = bytearray()
    while True:
        chunk = await request.content.read(65_536)
        if not chunk:
            return bytes(body)
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            return None
