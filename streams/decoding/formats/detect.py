"""Which format one message is in: Kafka headers first, then the parsed content (pure).

Headers are the producer's own statement and cost nothing to read, so they decide when they
say anything; the content is only sniffed when they do not. Rules, first match wins:

1. header `mg-format`: `native`, `cloudevents`, `otlp`, `openai` or `litellm` (anything else
   is refused: the producer asked for something we do not read);
2. header `ce_specversion` without a `content-type` starting `application/cloudevents`: a
   CloudEvents Kafka binary-mode record (the value is the data). The content-type decides the
   mode (Kafka protocol binding §3): a structured event may carry `ce_*` headers too;
3. header `content-type`: `application/cloudevents+json` (structured),
   `application/cloudevents-batch+json` (batch), protobuf (`application/x-protobuf` …: an
   OTLP trace export); other CloudEvents encodings are refused with a reason;
4. content that starts with 0x0a, is not JSON and reads as an OTLP protobuf trace export ->
   OTLP (the Collector's Kafka exporter sends `otlp_proto` with no header at all);
5. content, when it is JSON: an array whose first element has `specversion` is a
   CloudEvents batch, one whose first element is a LiteLLM payload a `generic_api` batch;
   an object with `event_id` is native (so native input never changes meaning);
   `resourceSpans` -> OTLP traces; `specversion` -> CloudEvents structured;
   `startTime` with `request_id` or `response_cost` -> a LiteLLM spend-log row or standard
   logging payload; `id` (or `object: list` with `data`: embeddings), `model` and a `usage`
   object -> an OpenAI-style response;
6. anything else is read as native (which dead-letters what is not a native event).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from meterguard.streams.decoding.formats.common import Headers

NATIVE = "native"
CLOUDEVENTS = "cloudevents"
CLOUDEVENTS_BATCH = "cloudevents-batch"
CLOUDEVENTS_BINARY = "cloudevents-binary"
OTLP = "otlp"
OTLP_PROTOBUF = "otlp-protobuf"  # the same traces, protobuf-encoded (formats/otlp_proto.py)
OPENAI = "openai"
LITELLM = "litellm"
UNKNOWN = "unknown"  # the content could not be parsed, and no header said what it was

_NAMED = {NATIVE, CLOUDEVENTS, OTLP, OPENAI, LITELLM}
_CE_STRUCTURED = "application/cloudevents"  # + "+json", "-batch+json", ... (binding §3)
_PROTOBUF = {"application/x-protobuf", "application/protobuf", "application/vnd.google.protobuf"}


@dataclass(frozen=True)
class Detected:
    format: str | None  # None: the headers leave it to the content
    refused: str = ""  # set when the headers name something this decoder does not read


def by_headers(headers: Headers) -> Detected:
    named = headers.get("mg-format")
    if named is not None:
        name = named.strip().lower()
        if name not in _NAMED:
            return Detected(UNKNOWN, f"mg-format header {named[:64]!r} names no known format")
        structured = _media_type(headers.get("content-type", "")).startswith(_CE_STRUCTURED)
        if name == CLOUDEVENTS and "ce_specversion" in headers and not structured:
            return Detected(CLOUDEVENTS_BINARY)
        return Detected(name)  # cloudevents: the content says structured (object) or batch
    content_type = _media_type(headers.get("content-type", ""))
    # Kafka binding §3: content-type decides the mode. A structured (or batch) message may also
    # carry the ce_* headers (§3.3.3); only without a cloudevents content-type are they binary.
    if "ce_specversion" in headers and not content_type.startswith(_CE_STRUCTURED):
        return Detected(CLOUDEVENTS_BINARY)
    if content_type == "application/cloudevents+json":
        return Detected(CLOUDEVENTS)
    if content_type == "application/cloudevents-batch+json":
        return Detected(CLOUDEVENTS_BATCH)
    if content_type.startswith(("application/cloudevents+", "application/cloudevents-batch+")):
        return Detected(CLOUDEVENTS, f"CloudEvents encoding {content_type!r} is not read")
    if content_type in _PROTOBUF:
        return Detected(OTLP_PROTOBUF)
    return Detected(None)


def by_content(doc: Any, hint: str | None = None) -> str:
    """The format of parsed JSON; `hint` narrows `cloudevents` to structured or batch."""
    if hint == CLOUDEVENTS:
        return CLOUDEVENTS_BATCH if isinstance(doc, list) else CLOUDEVENTS
    if hint is not None:
        return hint
    if isinstance(doc, list):
        head = doc[0] if doc else None
        if isinstance(head, dict) and "specversion" in head:
            return CLOUDEVENTS_BATCH
        return LITELLM if _litellm(head) else NATIVE
    if not isinstance(doc, dict) or "event_id" in doc:
        return NATIVE
    if "resourceSpans" in doc:
        return OTLP
    if "specversion" in doc:
        return CLOUDEVENTS
    if _litellm(doc):
        return LITELLM
    # A response; an embeddings response (CreateEmbeddingResponse) has no id.
    embeddings = doc.get("object") == "list" and isinstance(doc.get("data"), list)
    if isinstance(doc.get("usage"), dict) and "model" in doc and ("id" in doc or embeddings):
        return OPENAI
    return NATIVE


def _litellm(doc: Any) -> bool:
    return (
        isinstance(doc, dict)
        and "startTime" in doc
        and ("request_id" in doc or "response_cost" in doc)
    )


def _media_type(value: str) -> str:
    return value.split(";", 1)[0].strip().lower()
