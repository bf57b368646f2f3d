"""What every normaliser shares: records, header access, paths and the mapping step (pure)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from meterguard.streams.decoding.formats.mapping import FormatMapping
from meterguard.streams.decoding.trace_attribution import SpanLink

# Kafka headers as Faust and aiokafka hand them over: a sequence of (name, bytes) pairs, or a
# mapping when a producer built them as a dict.
RawHeaders = Sequence[tuple[str, bytes | None]] | Mapping[str, bytes | None] | None
Headers = Mapping[str, str]
Lookup = Callable[[str], Any]

_HEADER = "header:"
# Header names whose values are credentials (Authorization, Proxy-Authorization, Cookie,
# X-Api-Key, *-Token, *-Secret, *-Signature, ...): redacted in dead letters.
_SECRET_HEADER = re.compile(
    r"auth|cookie|api[-_]?key|token|secret|passw|signature|credential", re.IGNORECASE
)
REDACTED = "[redacted]"
_TZ_SUFFIX = re.compile(r"([zZ]|[+-]\d\d(:?\d\d)?)$")


class Unusable(Exception):
    """A record that cannot become an event: becomes its own dead letter."""

    def __init__(self, reason: str, error: str) -> None:
        super().__init__(error)
        self.reason = reason
        self.error = error


@dataclass(frozen=True)
class Record:
    """One metering record of a message: a native-shaped document, or why there is none.

    `raw` is what its dead letter carries: the record's own JSON for a record inside a batch
    or export, the message bytes when the message is the record.
    """

    raw: bytes
    doc: dict[str, Any] | None = None
    reason: str = ""
    error: str = ""
    # OTLP: (trace_id, the first ancestor outside the export) when an ancestor exported later
    # may name the identity (streams/decoding/trace_attribution.py); `unnamed` is the error of
    # the dead letter it becomes if none does (its doc then holds a placeholder identity).
    held: tuple[str, str] | None = None
    unnamed: str = ""


@dataclass
class Normalised:
    records: list[Record] = field(default_factory=list)
    ignored: int = 0  # well-formed parts that are not metering records (non-GenAI spans)
    links: list[SpanLink] = field(default_factory=list)  # OTLP: the export's spans' places


def read_headers(headers: RawHeaders) -> dict[str, str]:
    """Lower-cased names -> UTF-8 text. The first of repeated names wins; null or undecodable
    values are left out (a header we cannot read must not become an identity)."""
    out: dict[str, str] = {}
    for name, value in _pairs(headers):
        if not isinstance(value, bytes | bytearray):
            continue
        key = name.lower()
        if key in out:
            continue
        try:
            out[key] = bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            continue
    return out


def headers_for_dead_letter(headers: RawHeaders) -> dict[str, str] | None:
    """Every header, readable (undecodable bytes escaped): evidence for whoever reads the DLQ.
    A credential a producer sent along (Authorization, an API key, a cookie...) keeps its
    name but not its value: the DLQ is read by more people than the producer's secrets."""
    out: dict[str, str] = {}
    for name, value in _pairs(headers):
        if name not in out:
            if _SECRET_HEADER.search(name):
                out[name] = REDACTED
            elif isinstance(value, bytes | bytearray):
                out[name] = bytes(value).decode("utf-8", "backslashreplace")
            else:
                out[name] = "" if value is None else str(value)
    return out or None


def _pairs(headers: RawHeaders) -> Iterator[tuple[str, Any]]:
    """(name, value) pairs of either header shape, skipping anything malformed."""
    if not headers:
        return
    items: Iterable[Any] = headers.items() if isinstance(headers, Mapping) else headers
    for item in items:
        if isinstance(item, tuple | list) and len(item) == 2 and isinstance(item[0], str):
            yield item[0], item[1]


def dig(obj: Any, path: str) -> Any:
    """`a.b.c` into nested objects; None when any step is missing."""
    for part in path.split("."):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj


def pick(obj: Any, *paths: str) -> Any:
    """The first of several dotted paths into one object that has a value."""
    for path in paths:
        value = dig(obj, path)
        if value is not None and value != "":
            return value
    return None


def first(paths: Iterable[str], lookup: Lookup, headers: Headers) -> Any:
    """The first path with a value (None and "" count as none); `header:NAME` reads a header."""
    for path in paths:
        if path.startswith(_HEADER):
            value = headers.get(path[len(_HEADER) :].lower())
        else:
            value = lookup(path)
        if value is not None and value != "":
            return value
    return None


def put(doc: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """Set the fields that have a value: an absent one keeps the model's default."""
    for name, value in fields.items():
        if value is not None and value != "":
            doc[name] = value
    return doc


def apply_mapping(
    doc: dict[str, Any], mapping: FormatMapping, lookup: Lookup, headers: Headers
) -> dict[str, Any]:
    """Mapped paths win over the record's own fields; `defaults` fill what is still empty."""
    for name in ("identity", "team", "environment", "source", "cost_usd"):
        value = first(getattr(mapping, name), lookup, headers)
        if value is not None:
            doc[name] = value
    for name, value in mapping.defaults.model_dump(exclude_none=True).items():
        if doc.get(name) in (None, ""):
            doc[name] = value
    return doc


def require_identity(doc: dict[str, Any], *chains: Sequence[str], hint: str = "") -> dict[str, Any]:
    if doc.get("identity") in (None, ""):
        tried = ", ".join(path for chain in chains for path in chain)
        fix = f": {hint}" if hint else ""
        raise Unusable("missing_identity", f"no identity at any of: {tried}{fix}")
    return doc


def build(raw: bytes, make: Callable[[], dict[str, Any]]) -> Record:
    try:
        return Record(raw, doc=make())
    except Unusable as exc:
        return Record(raw, reason=exc.reason, error=exc.error)


def dead(raw: bytes, reason: str, error: str) -> Record:
    return Record(raw, reason=reason, error=error)


def as_raw(obj: Any) -> bytes:
    """A sub-record's JSON for its dead letter (it came from JSON, so it serialises)."""
    try:
        return orjson.dumps(obj)
    except (TypeError, orjson.JSONEncodeError):
        return repr(obj).encode("utf-8", "backslashreplace")


def utc_if_naive(value: Any) -> Any:
    """LiteLLM keeps UTC in `timestamp without time zone` columns: naive text means UTC."""
    if isinstance(value, str) and ("T" in value or " " in value.strip()):
        text = value.strip()
        if not _TZ_SUFFIX.search(text):
            return text + "+00:00"
    return value
