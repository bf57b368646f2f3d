"""CloudEvents 1.0 (structured, batch, Kafka binary mode) -> native documents.

| native | from |
|---|---|
| event_id | `id` (binary mode: header `ce_id`) |
| event_time | `time` (`ce_time`); an event without `time` uses `data.event_time` |
| identity | mapping: `data.identity`, `subject` (`ce_subject`), header `mg-identity` |
| source | mapping: `data.source`, `source` (`ce_source`) |
| everything else | `data`, with native field names (unknown ones land in `attributes`) |

When `data` is an OpenAI-style response or a LiteLLM spend-log row, it is translated by that
format's rules (and its mapping section) first; the envelope's `id`, `time`, and any identity
the `cloudevents:` mapping finds, then win over what the data says.

`data` must be JSON: `datacontenttype` (binary mode: the `content-type` header) absent,
`application/json` or `…+json`; structured mode may carry it as `data_base64`.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson

from meterguard.streams.decoding.formats import litellm_spend, openai_usage
from meterguard.streams.decoding.formats.common import (
    Headers,
    Normalised,
    Record,
    Unusable,
    apply_mapping,
    as_raw,
    build,
    dead,
    dig,
    require_identity,
)
from meterguard.streams.decoding.formats.mapping import MappingConfig

_BINARY_PREFIX = "ce_"


def structured(doc: Any, raw: bytes, mapping: MappingConfig, headers: Headers) -> Normalised:
    if not isinstance(doc, dict):
        return Normalised([dead(raw, "not_an_object", "a structured CloudEvent is a JSON object")])
    return Normalised([_envelope(doc, raw, mapping, headers)])


def batch(doc: Any, raw: bytes, mapping: MappingConfig, headers: Headers) -> Normalised:
    if not isinstance(doc, list):
        return Normalised([dead(raw, "invalid_record", "a CloudEvents batch is a JSON array")])
    records = []
    for item in doc:
        item_raw = as_raw(item)
        if isinstance(item, dict):
            records.append(_envelope(item, item_raw, mapping, headers))
        else:
            records.append(dead(item_raw, "not_an_object", "a batch element is not an object"))
    return Normalised(records)


def binary(value: bytes, mapping: MappingConfig, headers: Headers) -> Normalised:
    """Kafka binary mode: context attributes in `ce_*` headers, the value is the data."""
    envelope: dict[str, Any] = {
        name[len(_BINARY_PREFIX) :]: text
        for name, text in headers.items()
        if name.startswith(_BINARY_PREFIX)
    }
    if "content-type" in headers:
        envelope["datacontenttype"] = headers["content-type"]
    if value.strip():
        if not _is_json(envelope.get("datacontenttype")):
            kind = envelope.get("datacontenttype")
            return Normalised([dead(value, "unsupported_format", f"data content type {kind!r}")])
        try:
            envelope["data"] = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            return Normalised([dead(value, "invalid_json", str(exc))])
    return Normalised([_envelope(envelope, value, mapping, headers, data_parsed=True)])


def _envelope(
    env: dict[str, Any],
    raw: bytes,
    mapping: MappingConfig,
    headers: Headers,
    data_parsed: bool = False,
) -> Record:
    def make() -> dict[str, Any]:
        if env.get("specversion") != "1.0":
            version = env.get("specversion")
            raise Unusable("unsupported_format", f"CloudEvents specversion {version!r} (want 1.0)")
        data = env.get("data") if data_parsed else _data(env)
        doc, inner_chain = _from_data(data, mapping, headers)
        doc["event_id"] = env.get("id")
        if env.get("time") is not None:
            doc["event_time"] = env["time"]

        def lookup(path: str) -> Any:
            if path.startswith("data."):
                return dig(data, path[len("data.") :])
            return env.get(path)

        apply_mapping(doc, mapping.cloudevents, lookup, headers)
        return require_identity(doc, mapping.cloudevents.identity, inner_chain)

    return build(raw, make)


def _data(env: dict[str, Any]) -> Any:
    content_type = env.get("datacontenttype")
    if "data_base64" in env:
        try:
            payload = base64.b64decode(str(env["data_base64"]), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise Unusable("invalid_event", f"data_base64: {exc}") from exc
        if not _is_json(content_type):
            raise Unusable("unsupported_format", f"data content type {content_type!r}")
        try:
            return orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise Unusable("invalid_json", f"data_base64: {exc}") from exc
    if "data" in env and not _is_json(content_type):
        raise Unusable("unsupported_format", f"data content type {content_type!r}")
    return env.get("data")


def _from_data(
    data: Any, mapping: MappingConfig, headers: Headers
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The native document the data describes, and the identity chain that was tried on it."""
    if data is None:
        return {}, ()
    if not isinstance(data, dict):
        raise Unusable("invalid_event", "CloudEvents data must be a JSON object")
    if litellm_spend.looks_like(data):
        return litellm_spend.translate(data, mapping.litellm, headers), mapping.litellm.identity
    if openai_usage.looks_like(data):
        return openai_usage.translate(data, mapping.openai, headers), mapping.openai.identity
    return dict(data), ()


def _is_json(content_type: Any) -> bool:
    if content_type is None:
        return True  # the spec's default for JSON-encoded events
    media = str(content_type).split(";", 1)[0].strip().lower()
    return media in ("application/json", "text/json") or media.endswith("+json")
