"""The real OpenTelemetry SDK, set up to keep what it exports (issue 11's producer tests)."""

from __future__ import annotations

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Tracer, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


def capturing_tracer(service: str) -> tuple[TracerProvider, InMemorySpanExporter, Tracer]:
    """A provider for `service` whose finished spans land in the returned exporter; call
    `provider.shutdown()` when done, then `exporter.get_finished_spans()`."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter, provider.get_tracer("meterguard-tests")
