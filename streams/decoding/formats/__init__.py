"""The input formats gateways and collectors already emit, normalised to native documents.

Pure: no Kafka, no Redis, no clock. `detect` decides the format of one message (headers,
then content); one module per format turns it into `Record`s: native-shaped documents that
`decoding.decode` validates exactly like native input, or dead records with a reason. Which
field of each format is the identity (and team, environment, source, cost) comes from the
mapping file (`mapping.py`); each module's docstring is its mapping table.
"""

from __future__ import annotations

from typing import Any

from meterguard.streams.decoding.formats import cloudevents, litellm_spend, openai_usage, otlp
from meterguard.streams.decoding.formats.common import (
    Headers,
    Normalised,
    RawHeaders,
    Record,
    read_headers,
)
from meterguard.streams.decoding.formats.detect import (
    CLOUDEVENTS,
    CLOUDEVENTS_BATCH,
    CLOUDEVENTS_BINARY,
    LITELLM,
    NATIVE,
    OPENAI,
    OTLP,
    OTLP_PROTOBUF,
    UNKNOWN,
    by_content,
    by_headers,
)
from meterguard.streams.decoding.formats.mapping import DEFAULT_MAPPING, MappingConfig

__all__ = [
    "CLOUDEVENTS",
    "CLOUDEVENTS_BATCH",
    "CLOUDEVENTS_BINARY",
    "DEFAULT_MAPPING",
    "LITELLM",
    "NATIVE",
    "OPENAI",
    "OTLP",
    "OTLP_PROTOBUF",
    "UNKNOWN",
    "Headers",
    "MappingConfig",
    "Normalised",
    "RawHeaders",
    "Record",
    "by_content",
    "by_headers",
    "normalise",
    "read_headers",
]


def normalise(
    fmt: str, doc: Any, raw: bytes, mapping: MappingConfig, headers: Headers
) -> Normalised:
    """Records of one parsed message of a non-native format (`doc` is its parsed JSON)."""
    if fmt == CLOUDEVENTS:
        return cloudevents.structured(doc, raw, mapping, headers)
    if fmt == CLOUDEVENTS_BATCH:
        return cloudevents.batch(doc, raw, mapping, headers)
    if fmt == LITELLM and isinstance(doc, list):  # the generic_api logger's json_array
        return litellm_spend.normalise(doc, raw, mapping.litellm, headers)
    if not isinstance(doc, dict):
        return Normalised([Record(raw, reason="not_an_object", error=f"{fmt}: not an object")])
    if fmt == OTLP:
        return otlp.normalise(doc, raw, mapping.otlp, headers)
    if fmt == OPENAI:
        return openai_usage.normalise(doc, raw, mapping.openai, headers)
    if fmt == LITELLM:
        return litellm_spend.normalise(doc, raw, mapping.litellm, headers)
    raise ValueError(f"no normaliser for format {fmt!r}")
