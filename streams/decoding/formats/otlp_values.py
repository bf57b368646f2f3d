"""OTLP/JSON values (pure): attribute lists, AnyValue, ids, nanosecond times.

The OTLP/JSON mapping (opentelemetry-proto, "JSON Protobuf Encoding"): ids in hex (some
exporters send protobuf-JSON base64: both read), 64-bit integers as decimal strings.
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from meterguard.streams.decoding.formats.common import Unusable

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_HEX = re.compile(r"[0-9a-fA-F]+")
_DIGITS = re.compile(r"-?[0-9]{1,19}")
_MAX_VALUE_DEPTH = 8
Attrs = dict[str, Any]


def dig_dict(obj: dict[str, Any], key: str) -> dict[str, Any]:
    value = obj.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Unusable("invalid_record", f"{key}: expected an object")
    return value


def attributes(items: Any) -> Attrs:
    """OTLP/JSON key-value list -> plain dict (the first of a repeated key wins)."""
    if items is None:
        return {}
    if not isinstance(items, list):
        raise Unusable("invalid_record", "attributes: expected an array")
    out: Attrs = {}
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("key"), str) and item["key"] not in out:
            out[item["key"]] = any_value(item.get("value"), 0)
    return out


def any_value(value: Any, depth: int) -> Any:
    """An AnyValue as Python; malformed numbers stay text so validation names the field."""
    if not isinstance(value, dict) or depth > _MAX_VALUE_DEPTH:
        return None
    if "stringValue" in value:
        return value["stringValue"]
    if "intValue" in value:
        number = value["intValue"]
        if isinstance(number, str) and _DIGITS.fullmatch(number):
            return int(number)
        return number
    if "doubleValue" in value:
        number = value["doubleValue"]
        return float(number) if isinstance(number, int | float) else number
    if "boolValue" in value:
        return value["boolValue"]
    if "arrayValue" in value and isinstance(value["arrayValue"], dict):
        items = value["arrayValue"].get("values")
        return [any_value(v, depth + 1) for v in items] if isinstance(items, list) else None
    if "kvlistValue" in value and isinstance(value["kvlistValue"], dict):
        items = value["kvlistValue"].get("values")
        if isinstance(items, list):
            return {
                i["key"]: any_value(i.get("value"), depth + 1)
                for i in items
                if isinstance(i, dict) and isinstance(i.get("key"), str)
            }
    return value.get("bytesValue")


def hex_id(value: Any, size: int, name: str) -> str:
    """OTLP/JSON ids are hex; some exporters send protobuf-JSON base64 instead: accept both."""
    if isinstance(value, str):
        if len(value) == 2 * size and _HEX.fullmatch(value):
            if int(value, 16) != 0:
                return value.lower()
        else:
            try:
                decoded = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                decoded = b""
            if len(decoded) == size and any(decoded):
                return decoded.hex()
    raise Unusable("invalid_event", f"{name}: expected {2 * size} hex digits, not all zero")


def instant(nanos: int) -> datetime:
    try:
        return _EPOCH + timedelta(microseconds=nanos // 1000)
    except OverflowError as exc:
        raise Unusable("invalid_event", f"endTimeUnixNano {nanos} is out of range") from exc


def nanos(value: Any, name: str) -> int:
    nanos = nanos_or_none(value)
    if nanos is None or nanos <= 0:
        raise Unusable("invalid_event", f"{name}: expected a positive integer of nanoseconds")
    return nanos


def nanos_or_none(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        return int(value)
    return None


def first_set(attrs: Attrs, *names: str) -> Any:
    for name in names:
        if attrs.get(name) not in (None, ""):
            return attrs[name]
    return None
