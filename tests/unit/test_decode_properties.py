"""Hostile and broken input through `decode()` (issue 5, item 2): hypothesis properties over
random bytes and near-valid events, then one explicit example per hostile class.

Every input is exactly one MeteringEvent or one DeadLetter; nothing raises; a dead letter
carries the original bytes and a known reason; an accepted event survives the trip through
`metering.events` (`to_json` -> `decode_event_json`, and in a batch record) unchanged.
"""

from __future__ import annotations

import base64
import hashlib
import json
import string
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from meterguard.models import (
    MAX_ATTRIBUTES_BYTES,
    MAX_ATTRIBUTES_DEPTH,
    MAX_COST_USD,
    MAX_TOKENS,
    DeadLetter,
    MeteringEvent,
)
from meterguard.streams.decoding.decode import (
    DEFAULT_MAX_FUTURE_SKEW,
    MAX_MESSAGE_BYTES,
    MAX_RECORDS_PER_MESSAGE,
    Origin,
    decode,
    decode_event_json,
    decode_message,
)
from meterguard.streams.decoding.formats.common import as_raw
from meterguard.streams.decoding.keyed_events import encode_events, read_keyed
from meterguard.timeutil import EARLIEST, format_time

INGEST = datetime(2025, 1, 6, 8, 0, 30, tzinfo=UTC)
ORIGIN = Origin(topic="metering.raw", partition=3, offset=4711)
REASONS = frozenset(
    {
        "oversize",
        "invalid_json",
        "not_an_object",
        "invalid_event",
        "attributes_too_large",
        "event_time_in_future",
    }
)
# CI has 2 cores: a few hundred examples per property, no per-example deadline (a 1 MB input
# takes longer than hypothesis' default 200 ms on a busy runner).
PROPERTY = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)


def original_bytes(letter: DeadLetter) -> bytes:
    if letter.raw_encoding == "base64":
        return base64.b64decode(letter.raw, validate=True)
    return letter.raw.encode("utf-8")


def decoded(data: bytes) -> MeteringEvent | DeadLetter:
    """decode(), plus the invariants every result must keep, whatever the input."""
    result = decode(data, INGEST, ORIGIN)
    assert isinstance(result, MeteringEvent) != isinstance(result, DeadLetter), repr(result)
    if isinstance(result, DeadLetter):
        assert result.reason in REASONS, result
        assert result.error.strip(), result
        if result.raw_truncated:  # its first bytes, size and hash: the whole is on the topic
            assert data.startswith(original_bytes(result)) and result.raw_size == len(data)
            assert result.raw_sha256 == hashlib.sha256(data).hexdigest()
        else:
            assert original_bytes(result) == data
        assert len(result.model_dump_json()) < 1_000_000  # fits a Kafka message
        assert (result.topic, result.partition, result.offset) == ("metering.raw", 3, 4711)
        assert DeadLetter.model_validate_json(result.model_dump_json()) == result
    else:
        assert_publishable(result)
    return result


def assert_publishable(event: MeteringEvent) -> None:
    """What the worker and the window store do with an accepted event must not fail."""
    assert decode_event_json(event.to_json()) == event
    assert MeteringEvent.model_validate_json(event.to_json()) == event
    # The hop's batch record: the same JSON object in an array, read back the same.
    assert encode_events([event, event]) == b"[" + event.to_json() + b"," + event.to_json() + b"]"
    assert read_keyed(encode_events([event, event]), INGEST) == [event, event]
    assert event.ingest_time == INGEST
    assert event.event_time >= EARLIEST
    assert event.event_time - INGEST <= DEFAULT_MAX_FUTURE_SKEW
    assert isinstance(event.event_time_ms, int) and event.event_time_ms > 0
    assert isinstance(event.cost_nano_usd, int) and event.cost_nano_usd >= 0
    assert len(orjson.dumps(event.attributes)) <= MAX_ATTRIBUTES_BYTES


def refused(data: bytes) -> DeadLetter:
    result = decoded(data)
    assert isinstance(result, DeadLetter), f"accepted: {result!r}"
    return result


def accepted(data: bytes) -> MeteringEvent:
    result = decoded(data)
    assert isinstance(result, MeteringEvent), result.error
    return result


def event_bytes(**fields: Any) -> bytes:
    doc: dict[str, Any] = {
        "event_id": "evt-1",
        "identity": "svc-billing",
        "event_time": "2025-01-06T08:00:00Z",
    }
    doc.update(fields)
    return orjson.dumps({k: v for k, v in doc.items() if v is not ...}, default=str)


def deep(depth: int) -> orjson.Fragment:
    """`depth` nested arrays, as raw JSON (orjson.dumps itself stops at 254 levels)."""
    return orjson.Fragment(b"[" * depth + b"1" + b"]" * depth)


# -- strategies: bytes -----------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()  # NaN and ±Infinity come out of json.dumps as the non-standard literals
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def json_texts(draw: st.DrawFn) -> bytes:
    """Python's json: NaN/Infinity literals, big ints; ensure_ascii=False with a lone
    surrogate gives CESU-8 bytes, ensure_ascii=True gives a `\\ud800` escape."""
    value = draw(json_values | st.dictionaries(st.text(max_size=8), json_values, max_size=6))
    text = json.dumps(value, ensure_ascii=draw(st.booleans()))
    return text.encode("utf-8", "surrogatepass")


LITERALS = [
    b"1e400",
    b"-1e400",
    b"1e-400",
    b"-0",
    b"-0.0",
    b"1" + b"0" * 400,
    b"18446744073709551616",
    b"-9223372036854775809",
    b"NaN",
    b"Infinity",
    b"-Infinity",
    b'"\\ud800"',
    b'"\\udfff"',
    b'"\\u0000"',
    b"true",
    b"null",
    b"[]",
    b"{}",
]
FIELDS = ["event_id", "identity", "event_time", "input_tokens", "cost_usd", "attributes", "x"]


@st.composite
def event_with_literal(draw: st.DrawFn) -> bytes:
    field = draw(st.sampled_from(FIELDS))
    literal = draw(st.sampled_from(LITERALS))
    return event_bytes(**{field: orjson.Fragment(literal)})


@st.composite
def deep_documents(draw: st.DrawFn) -> bytes:
    depth = draw(st.integers(min_value=1, max_value=100_000))
    opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
    body = opener * depth + b"1" + closer * draw(st.sampled_from([depth, depth // 2]))
    if draw(st.booleans()):  # deep inside an otherwise valid event
        return event_bytes(**{draw(st.sampled_from(["attributes", "x"])): orjson.Fragment(body)})
    return body


@st.composite
def sized_documents(draw: st.DrawFn) -> bytes:
    """Around the message size limit, and huge-but-allowed arrays of numbers."""
    target = draw(st.integers(min_value=MAX_MESSAGE_BYTES - 64, max_value=MAX_MESSAGE_BYTES + 64))
    head = event_bytes()[:-1] + b',"pad":"'
    return head + b"x" * max(0, target - len(head) - 2) + b'"}'


@st.composite
def duplicate_keys(draw: st.DrawFn) -> bytes:
    field = draw(st.sampled_from(["event_id", "identity", "event_time", "input_tokens"]))
    values = [json.dumps(draw(json_scalars)).encode() for _ in range(2)]
    extra = b"".join(b',"' + field.encode() + b'":' + v for v in values)
    return event_bytes()[:-1] + extra + b"}"


@st.composite
def byte_edits(draw: st.DrawFn) -> bytes:
    data = bytearray(event_bytes(input_tokens=120, cost_usd=0.0042, environment="prod", x=[1]))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        at = draw(st.integers(min_value=0, max_value=len(data) - 1))
        op = draw(st.sampled_from(["replace", "insert", "delete", "truncate"]))
        byte = draw(st.integers(min_value=0, max_value=255))
        if op == "replace":
            data[at] = byte
        elif op == "insert":
            data.insert(at, byte)
        elif op == "delete" and len(data) > 1:
            del data[at]
        elif op == "truncate":
            del data[at:]
            if not data:
                break
    return bytes(data)


hostile_bytes = st.one_of(
    st.binary(max_size=512),
    json_texts(),
    event_with_literal(),
    deep_documents(),
    sized_documents(),
    duplicate_keys(),
    byte_edits(),
    st.sampled_from([b"\xef\xbb\xbf", b"\xfe\xff", b"\x00"]).map(lambda p: p + event_bytes()),
    st.sampled_from(LITERALS),
)


# -- properties: bytes -----------------------------------------------------------------------


@PROPERTY
@given(hostile_bytes)
@example(b"[" * 100_000 + b"]" * 100_000)
@example(event_bytes(attributes={"a": deep(300)}))
@example(event_bytes(x=deep(1000)))
@example(event_bytes(latency_ms="Infinity"))
@example(b'{"event_id": "a", "identity": "\\ud800", "event_time": 1736150400}')
def test_any_bytes_give_exactly_one_event_or_dead_letter(data: bytes) -> None:
    result = decoded(data)
    event(result.reason if isinstance(result, DeadLetter) else "accepted")


@PROPERTY
@given(hostile_bytes)
def test_decoding_the_same_bytes_twice_gives_equal_results(data: bytes) -> None:
    assert decode(data, INGEST, ORIGIN) == decode(data, INGEST, ORIGIN)


# -- strategies: near-valid events -----------------------------------------------------------

UNPRINTABLE = ("Cc", "Cf", "Cs", "Zl", "Zp")
printable = st.characters(codec="utf-8", exclude_categories=UNPRINTABLE)
unprintable = st.characters(codec="utf-8", categories=("Cc", "Cf", "Zl", "Zp"))
plain_text = st.text(st.characters(codec="utf-8"), max_size=24)
MODEL_FIELDS = frozenset(MeteringEvent.model_fields)
OPTIONAL_TEXT = [
    "team",
    "tenant",
    "environment",
    "workload",
    "credential_id",
    "source",
    "model",
    "provider",
    "operation",
    "endpoint",
    "tool_name",
    "error_type",
    "request_fingerprint",
    "trace_id",
    "span_id",
    "parent_span_id",
    "caller_identity",
]
TOKENS = ["input_tokens", "output_tokens", "cached_tokens"]
# Bounded so one event cannot carry megabytes into every alert, log line and dashboard row.
TEXT_LIMITS = {field: 2048 if field == "endpoint" else 256 for field in OPTIONAL_TEXT}


def names(max_size: int) -> st.SearchStrategy[str]:
    return st.text(printable, min_size=1, max_size=max_size).filter(str.strip)


instants = st.datetimes(
    min_value=EARLIEST.replace(tzinfo=None),
    max_value=(INGEST + timedelta(minutes=4)).replace(tzinfo=None),
    timezones=st.just(UTC),
)
offsets = st.integers(min_value=-1439, max_value=1439).map(lambda m: timezone(timedelta(minutes=m)))


@st.composite
def event_times(draw: st.DrawFn, moments: st.SearchStrategy[datetime] = instants) -> Any:
    """One instant in one of the accepted forms: RFC 3339 (any offset), epoch s or ms."""
    moment = draw(moments)
    form = draw(st.sampled_from(["rfc3339", "z", "seconds", "ms"]))
    if form == "rfc3339":
        return moment.astimezone(draw(offsets)).isoformat()
    if form == "z":
        return format_time(moment)
    if form == "seconds":
        return int(moment.timestamp())
    return int(moment.timestamp() * 1000)


small_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(-1e9, 1e9)
    | plain_text,
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(plain_text, kids, max_size=3),
    max_leaves=8,
)
costs = st.one_of(
    st.integers(min_value=0, max_value=int(MAX_COST_USD)),
    st.floats(min_value=0, max_value=float(MAX_COST_USD)),
    st.decimals(min_value=0, max_value=MAX_COST_USD, allow_nan=False, places=9).map(str),
)
valid_events = st.fixed_dictionaries(
    {"event_id": names(128), "identity": names(256), "event_time": event_times()},
    optional={
        "kind": st.sampled_from(["llm.call", "tool.call", "api.call"]),
        "status": st.sampled_from(["ok", "error"]),
        **{name: st.integers(min_value=0, max_value=MAX_TOKENS) for name in TOKENS},
        "cost_usd": costs,
        "latency_ms": st.floats(min_value=0, max_value=1e9) | st.integers(0, 10**9),
        "attributes": st.dictionaries(plain_text, small_json, max_size=4),
        **{name: plain_text for name in OPTIONAL_TEXT},
    },
)


@dataclass(frozen=True)
class Mutation:
    """Set `field` to a value drawn from `values`; `outcome` is "accepted" or the reason."""

    field: str
    values: st.SearchStrategy[Any]
    outcome: str


def literal(*texts: str) -> st.SearchStrategy[orjson.Fragment]:
    return st.sampled_from([orjson.Fragment(t.encode()) for t in texts])


def spoiled(text: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """A valid name with one control, format or line-separator character inserted."""
    return st.tuples(text, unprintable, st.integers(min_value=0)).map(
        lambda t: t[0][: t[2] % (len(t[0]) + 1)] + t[1] + t[0][t[2] % (len(t[0]) + 1) :]
    )


not_an_object = (
    st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)  # orjson writes NaN and inf as null
    | st.booleans()
    | st.lists(st.none())
)
not_text = not_an_object | st.just({})
not_json_numbers = literal("NaN", "Infinity", "-Infinity", "1e400", "-1e400")
whitespace = st.text(st.sampled_from(" \u00a0\u2002\u3000"), min_size=1, max_size=8)
far_future = st.datetimes(
    min_value=(INGEST + DEFAULT_MAX_FUTURE_SKEW + timedelta(seconds=1)).replace(tzinfo=None),
    max_value=datetime(5000, 1, 1),  # epoch seconds above 1e11 (year 5138) are read as ms
    timezones=st.just(UTC),
)
pre_2000 = st.datetimes(max_value=datetime(1999, 12, 31, 23, 59, 59), timezones=st.just(UTC))


def name_mutations(field: str, limit: int) -> list[Mutation]:
    return [
        Mutation(field, spoiled(names(limit - 1)), "invalid_event"),
        Mutation(field, whitespace, "invalid_event"),
        Mutation(field, st.just(""), "invalid_event"),
        Mutation(field, st.integers(limit + 1, 12_000).map(lambda n: "é" * n), "invalid_event"),
        Mutation(field, st.just("a" * 10_240), "invalid_event"),
        Mutation(field, not_text | st.none(), "invalid_event"),
        Mutation(field, names(limit), "accepted"),
    ]


def token_mutations(field: str) -> list[Mutation]:
    non_integral = st.integers(-(10**9), 10**9).map(lambda n: n + 0.5) | st.floats(0.001, 0.999)
    huge_ints = st.integers(MAX_TOKENS + 1, 2**64 - 1) | st.integers(2**64, 2**200).map(
        lambda n: orjson.Fragment(str(n).encode())
    )
    return [
        Mutation(field, st.integers(min_value=-(2**63), max_value=-1), "invalid_event"),
        Mutation(field, huge_ints, "invalid_event"),
        Mutation(field, st.floats(min_value=MAX_TOKENS + 1, allow_infinity=False), "invalid_event"),
        Mutation(field, st.booleans(), "invalid_event"),
        Mutation(field, non_integral, "invalid_event"),
        Mutation(
            field, st.sampled_from(["lots", "", "1e3", "0x10", "12.5", "NaN"]), "invalid_event"
        ),
        Mutation(
            field,
            st.none() | st.lists(st.integers(-(2**63), 2**63), max_size=2) | st.just({}),
            "invalid_event",
        ),
        Mutation(field, st.integers(0, MAX_TOKENS).map(float), "accepted"),
        Mutation(field, literal("-0", "0.0", "-0.0"), "accepted"),
        Mutation(field, not_json_numbers, "invalid_json"),
    ]


MUTATIONS: list[Mutation] = [
    *name_mutations("identity", 256),
    *name_mutations("event_id", 128),
    *(m for field in TOKENS for m in token_mutations(field)),
    Mutation(
        "cost_usd",
        st.floats(max_value=-1e-9, allow_infinity=False)
        | st.decimals(max_value=-1, places=4).map(str),
        "invalid_event",
    ),
    Mutation(
        "cost_usd",
        st.floats(min_value=float(MAX_COST_USD) + 1, allow_infinity=False),
        "invalid_event",
    ),
    Mutation("cost_usd", st.sampled_from(["1e400", "9" * 400, "10000.000000001"]), "invalid_event"),
    Mutation(
        "cost_usd",
        st.sampled_from(["NaN", "nan", "Infinity", "-Infinity", "inf", "sNaN"]),
        "invalid_event",
    ),
    Mutation(
        "cost_usd", st.booleans() | st.none() | st.just([]) | st.just("a dollar"), "invalid_event"
    ),
    Mutation(
        "cost_usd",
        costs | st.sampled_from(["-0", "0E+999999999", "1e-999999", "1e-999999999"]),
        "accepted",
    ),
    Mutation("cost_usd", not_json_numbers, "invalid_json"),
    Mutation(
        "latency_ms",
        st.floats(max_value=-1e-9, allow_infinity=False)
        | st.integers(min_value=-(2**63), max_value=-1),
        "invalid_event",
    ),
    Mutation("latency_ms", st.booleans(), "invalid_event"),
    Mutation(
        "latency_ms", st.sampled_from(["Infinity", "-Infinity", "NaN", "inf"]), "invalid_event"
    ),
    Mutation("latency_ms", st.floats(min_value=0, max_value=1e308), "accepted"),
    Mutation("event_time", event_times(far_future), "event_time_in_future"),
    Mutation(
        "event_time", st.integers(int(INGEST.timestamp()) + 301, 10**11 - 1), "event_time_in_future"
    ),
    Mutation("event_time", st.builds(lambda m: m.isoformat(), pre_2000), "invalid_event"),
    Mutation("event_time", st.integers(min_value=-(2**63), max_value=946_684_799), "invalid_event"),
    Mutation("event_time", st.integers(10**11, 946_684_799_999), "invalid_event"),  # ms, 1973-1999
    Mutation(
        "event_time",
        st.builds(lambda m: m.replace(tzinfo=None).isoformat(), instants),
        "invalid_event",
    ),
    Mutation(
        "event_time", st.text(st.characters(exclude_categories=("Nd", "Cs"))), "invalid_event"
    ),
    Mutation("event_time", st.booleans() | st.none() | st.just([]) | st.just({}), "invalid_event"),
    Mutation(
        "event_time",
        st.sampled_from(["NaN", "Infinity", "2025-13-45T99:99:99Z", "T", "Z"]),
        "invalid_event",
    ),
    Mutation("event_time", st.floats(min_value=1e17, allow_infinity=False), "invalid_event"),
    Mutation("event_time", event_times(), "accepted"),
    Mutation("event_time", not_json_numbers, "invalid_json"),
    Mutation(
        "kind",
        plain_text.filter(lambda k: k not in ("llm.call", "tool.call", "api.call")),
        "invalid_event",
    ),
    Mutation("status", plain_text.filter(lambda s: s not in ("ok", "error")), "invalid_event"),
    *(Mutation(field, not_text, "invalid_event") for field in OPTIONAL_TEXT),
    *(
        Mutation(field, st.integers(0, limit).map(lambda n: "w" * n), "accepted")
        for field, limit in TEXT_LIMITS.items()
    ),
    *(
        Mutation(field, st.integers(limit + 1, 200_000).map(lambda n: "w" * n), "invalid_event")
        for field, limit in TEXT_LIMITS.items()
    ),
    *(Mutation(field, spoiled(plain_text), "accepted") for field in OPTIONAL_TEXT),
    Mutation("attributes", st.dictionaries(plain_text, small_json, max_size=6), "accepted"),
    Mutation(
        "attributes",
        st.integers(MAX_ATTRIBUTES_BYTES, 500_000).map(lambda n: {"blob": "b" * n}),
        "attributes_too_large",
    ),
    Mutation(
        "attributes",
        st.integers(MAX_ATTRIBUTES_DEPTH + 1, 1000).map(lambda d: {"deep": deep(d)}),
        "invalid_event",
    ),
    Mutation("attributes", not_an_object | st.text(max_size=4) | st.none(), "invalid_event"),
]
UNKNOWN_KEYS = st.text(string.ascii_letters + "_", min_size=1, max_size=12).filter(
    lambda k: k not in MODEL_FIELDS
)


@st.composite
def mutated_events(draw: st.DrawFn) -> tuple[dict[str, Any], str, str]:
    """A valid event with one field spoiled (or added): (document, field, expected outcome)."""
    doc = dict(draw(valid_events))
    if draw(st.integers(min_value=0, max_value=len(MUTATIONS) + 2)) >= len(MUTATIONS):
        key = draw(UNKNOWN_KEYS)
        value, outcome = draw(
            st.sampled_from(
                [
                    (small_json, "accepted"),
                    (st.just("u" * MAX_ATTRIBUTES_BYTES), "attributes_too_large"),
                    (st.integers(MAX_ATTRIBUTES_DEPTH + 1, 1000).map(deep), "invalid_event"),
                ]
            ).flatmap(lambda pair: st.tuples(pair[0], st.just(pair[1])))
        )
        attributes = doc.get("attributes", {})
        if key in attributes:  # a given attribute wins over an unknown field of the same name
            doc["attributes"] = {k: v for k, v in attributes.items() if k != key}
        doc[key] = value
        return doc, key, outcome
    mutation = draw(st.sampled_from(MUTATIONS))
    doc[mutation.field] = draw(mutation.values)
    return doc, mutation.field, mutation.outcome


# -- properties: near-valid events -----------------------------------------------------------


@PROPERTY
@given(valid_events)
def test_valid_events_are_accepted_and_keep_their_fields(doc: dict[str, Any]) -> None:
    event = accepted(orjson.dumps(doc))
    assert (event.event_id, event.identity) == (doc["event_id"], doc["identity"])
    for name in (*TOKENS, *OPTIONAL_TEXT, "attributes", "kind", "status"):
        if name in doc:
            assert getattr(event, name) == doc[name], name
    if "cost_usd" in doc:
        assert event.cost_usd == Decimal(str(doc["cost_usd"]))


@PROPERTY
@given(mutated_events())
def test_one_spoiled_field_is_refused_with_its_name_or_accepted_intact(
    case: tuple[dict[str, Any], str, str],
) -> None:
    doc, field, outcome = case
    event(outcome)
    data = orjson.dumps(doc, default=str)
    result = decoded(data)
    if outcome == "accepted":
        assert isinstance(result, MeteringEvent), f"{field}: {result.error}"
        if field not in MODEL_FIELDS:
            assert result.attributes[field] == doc[field]
        return
    assert isinstance(result, DeadLetter), f"{field} accepted: {result!r}"
    assert result.reason == outcome, result.error
    named = {"attributes_too_large": "attributes", "invalid_json": ""}.get(outcome, field)
    assert named in result.error, result.error


@PROPERTY
@given(
    st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2025, 1, 6), timezones=st.just(UTC)
    )
)
def test_one_instant_in_every_form_gives_the_same_event_time(moment: datetime) -> None:
    moment = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
    ms = (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
    forms = [
        format_time(moment),
        moment.astimezone(timezone(timedelta(hours=-7))).isoformat(),
        ms,
        ms / 1000,
    ]
    if moment.microsecond == 0:
        forms.append(ms // 1000)
    events = [accepted(event_bytes(event_time=form)) for form in forms]
    assert {e.event_time for e in events} == {moment}
    assert {e.event_time_ms for e in events} == {ms}


# -- the same bytes through decode_message (every input format) -------------------------------

# Reasons the format normalisers add (streams/decoding/formats); `internal_error` is not one:
# it is the safety net catching a bug.
MESSAGE_REASONS = REASONS | {
    "unsupported_format",
    "invalid_protobuf",
    "missing_event_id",
    "missing_event_time",
    "empty_message",
    "too_many_records",
    "empty_batch",
    "invalid_record",
    "missing_identity",
}
header_sets = st.one_of(
    st.none(),
    st.just([]),
    st.lists(
        st.tuples(
            st.sampled_from(["mg-format", "ce_specversion", "content-type", "ce_id", "ce_time"]),
            st.sampled_from(
                [
                    b"native",
                    b"otlp",
                    b"cloudevents",
                    b"openai",
                    b"litellm",
                    b"1.0",
                    b"application/cloudevents+json",
                    b"application/cloudevents-batch+json",
                    b"application/x-protobuf",
                    b"\xff\xfe",
                    b"",
                ]
            )
            | st.none(),
        ),
        max_size=3,
    ),
)
format_shaped = st.one_of(
    st.fixed_dictionaries({"resourceSpans": json_values}),
    st.fixed_dictionaries({"specversion": json_values, "id": json_values, "data": json_values}),
    st.lists(st.fixed_dictionaries({"specversion": json_values}, optional={"id": json_values})),
    st.fixed_dictionaries({"startTime": json_values, "request_id": json_values}),
    st.fixed_dictionaries({"id": json_values, "model": json_values, "usage": st.just({})}),
).map(lambda doc: json.dumps(doc).encode())


@PROPERTY
@given(hostile_bytes | format_shaped | st.none(), header_sets)
def test_decode_message_gives_an_item_for_every_input_and_never_fails_inside(
    data: bytes | None, headers: list[tuple[str, bytes | None]] | None
) -> None:
    result = decode_message(data, headers, INGEST, ORIGIN)
    assert result.items or result.ignored > 0
    for item in result.items:
        if isinstance(item, DeadLetter):
            assert item.reason in MESSAGE_REASONS, item
            assert original_bytes(item) is not None
            assert DeadLetter.model_validate_json(item.model_dump_json()) == item
        else:
            assert isinstance(item, MeteringEvent)
            assert_publishable(item)
    assert decode_message(data, headers, INGEST, ORIGIN) == result


@PROPERTY
@given(hostile_bytes)
def test_decode_message_reads_native_bytes_like_decode(data: bytes) -> None:
    """One native message reads as `decode` reads it; a native JSON array, as `decode` reads
    each element's JSON (an empty or overlong array is one letter for the whole message)."""
    result = decode_message(data, None, INGEST, ORIGIN)
    if result.format not in ("native", "unknown"):
        return  # the content looked like another format (e.g. a CloudEvents batch)
    elements = native_array(data)
    if elements is None:
        expected = [decode(data, INGEST, ORIGIN)]
    elif not elements or len(elements) > MAX_RECORDS_PER_MESSAGE:
        [letter] = result.items
        assert isinstance(letter, DeadLetter) and original_bytes(letter) == data
        assert letter.reason in ("empty_batch", "too_many_records")
        return
    else:
        expected = [decode(as_raw(element), INGEST, ORIGIN) for element in elements]
    for item, alone in zip(result.items, expected, strict=True):
        if isinstance(alone, MeteringEvent):
            assert item == alone
        else:
            assert isinstance(item, DeadLetter)
            assert (item.reason, item.error, item.raw) == (alone.reason, alone.error, alone.raw)


def native_array(data: bytes) -> list[Any] | None:
    """The elements, when `data` is a JSON array decode_message reads (not oversize)."""
    if len(data) > MAX_MESSAGE_BYTES:
        return None
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return doc if isinstance(doc, list) else None


# -- one explicit example per hostile class of issue 5 ---------------------------------------


def test_oversize_message_is_refused_before_parsing_with_its_size() -> None:
    data = event_bytes(pad="x" * (2 * MAX_MESSAGE_BYTES))
    letter = refused(data)
    assert letter.reason == "oversize"
    assert letter.error == f"message is {len(data)} bytes, limit {MAX_MESSAGE_BYTES}"


def test_hundred_thousand_nested_arrays_are_invalid_json() -> None:
    letter = refused(b"[" * 100_000 + b"]" * 100_000)
    assert letter.reason == "invalid_json"
    assert "depth limit exceeded" in letter.error


def test_deeply_nested_attributes_are_an_invalid_event_not_a_crash() -> None:
    """300 levels parse (orjson reads 1024) but cannot be written back (orjson writes 254,
    pydantic's JSON parser reads about 200): decode() raised TypeError here."""
    letter = refused(event_bytes(attributes={"payload": deep(300)}))
    assert letter.reason == "invalid_event"
    assert f"attributes: 'payload' is nested deeper than {MAX_ATTRIBUTES_DEPTH} levels" in (
        letter.error
    )


def test_deeply_nested_unknown_field_is_an_invalid_event_naming_it() -> None:
    letter = refused(event_bytes(debug=deep(199)))
    assert letter.reason == "invalid_event"
    assert "'debug' is nested deeper than" in letter.error


def test_attributes_nested_to_the_limit_survive_the_events_topic() -> None:
    event = accepted(event_bytes(attributes={"payload": deep(MAX_ATTRIBUTES_DEPTH)}))
    assert decode_event_json(event.to_json()) == event


def test_huge_json_under_the_size_limit_is_attributes_too_large() -> None:
    numbers = orjson.Fragment(b"[" + b"1," * 400_000 + b"1]")
    letter = refused(event_bytes(samples=numbers))
    assert letter.reason == "attributes_too_large"
    assert letter.error == f"attributes exceed {MAX_ATTRIBUTES_BYTES} bytes"


@pytest.mark.parametrize(
    ("literal", "says"),
    [
        (b"1e400", "number is infinity"),
        (b"NaN", "unexpected character"),
        (b"Infinity", "unexpected character"),
        (b'"\\ud800"', "no low surrogate"),
    ],
)
def test_non_json_numbers_and_lone_surrogates_are_invalid_json(literal: bytes, says: str) -> None:
    letter = refused(event_bytes(input_tokens=orjson.Fragment(literal)))
    assert letter.reason == "invalid_json"
    assert says in letter.error


def test_invalid_utf8_is_invalid_json_kept_as_base64() -> None:
    data = event_bytes(identity="svc-?").replace(b"svc-?", b"svc-\xff")
    letter = refused(data)
    assert letter.reason == "invalid_json"
    assert letter.raw_encoding == "base64"
    assert "not valid UTF-8" in letter.error


def test_byte_order_mark_is_invalid_json() -> None:
    letter = refused(b"\xef\xbb\xbf" + event_bytes())
    assert letter.reason == "invalid_json"
    assert "byte order mark" in letter.error


def test_duplicate_keys_keep_the_last_value() -> None:
    """orjson's rule, pinned: a producer cannot smuggle a second identity past validation."""
    data = event_bytes()[:-1] + b',"identity":"svc\\nadmin"}'
    assert refused(data).error.startswith("identity: ")
    assert accepted(b'{"identity":"svc\\n",' + event_bytes()[1:]).identity == "svc-billing"


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("identity", 42, "identity: Input should be a valid string"),
        ("event_id", ["evt-1"], "event_id: Input should be a valid string"),
        (
            "input_tokens",
            "lots",
            "input_tokens: Input should be a valid integer, unable to parse string as an integer",
        ),
        ("output_tokens", True, "output_tokens: Value error, must be an integer, not a boolean"),
        ("cached_tokens", 12.5, "cached_tokens: Value error, must be a whole number"),
        ("cost_usd", False, "cost_usd: Value error, must be a number, not a boolean"),
        ("cost_usd", "Infinity", "cost_usd: Input should be a finite number"),
        ("latency_ms", True, "latency_ms: Value error, must be a number, not a boolean"),
        ("latency_ms", "Infinity", "latency_ms: Input should be a finite number"),
        ("attributes", ["a"], "attributes: Input should be a valid dictionary"),
        ("team", 7, "team: Input should be a valid string"),
    ],
)
def test_wrong_types_name_the_field(field: str, value: object, error: str) -> None:
    letter = refused(event_bytes(**{field: value}))
    assert letter.reason == "invalid_event"
    assert letter.error == error


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("input_tokens", -1, "input_tokens: Input should be greater than or equal to 0"),
        ("cost_usd", "-0.01", "cost_usd: Input should be greater than or equal to 0"),
        ("latency_ms", -5, "latency_ms: Input should be greater than or equal to 0"),
        (
            "output_tokens",
            10**12,
            f"output_tokens: Input should be less than or equal to {MAX_TOKENS}",
        ),
        (
            "input_tokens",
            orjson.Fragment(b"1" + b"0" * 30),
            "input_tokens: Input should be less than or equal to",
        ),
        ("cost_usd", "1e400", f"cost_usd: Input should be less than or equal to {MAX_COST_USD}"),
    ],
)
def test_negative_or_absurd_counts_name_the_field(field: str, value: object, error: str) -> None:
    letter = refused(event_bytes(**{field: value}))
    assert letter.reason == "invalid_event"
    assert letter.error.startswith(error)


@pytest.mark.parametrize(
    ("identity", "code_point"),
    [
        ("svc\nadmin", "U+000A"),
        ("svc\x00", "U+0000"),
        ("svc\x1b[31m", "U+001B"),
        ("svc\x85", "U+0085"),
        ("svc-billing\u200b", "U+200B"),  # zero-width space: renders as "svc-billing"
        ("\u202egnillib-cvs", "U+202E"),  # right-to-left override
        ("svc\u2028admin", "U+2028"),  # line separator
        ("svc\ufeff", "U+FEFF"),
    ],
)
def test_identity_with_control_characters_names_the_character(
    identity: str, code_point: str
) -> None:
    letter = refused(event_bytes(identity=identity))
    assert letter.reason == "invalid_event"
    assert letter.error == (
        f"identity: Value error, must not contain control characters ({code_point} found)"
    )


def test_event_id_with_control_characters_is_refused() -> None:
    letter = refused(event_bytes(event_id="evt\r\n1"))
    assert (
        letter.error == "event_id: Value error, must not contain control characters (U+000D found)"
    )


def test_ten_kilobyte_identity_is_refused_by_length() -> None:
    letter = refused(event_bytes(identity="a" * 10_240))
    assert letter.reason == "invalid_event"
    assert letter.error == "identity: String should have at most 256 characters"


def test_whitespace_only_identity_is_blank() -> None:
    letter = refused(event_bytes(identity=" \u00a0\u3000"))
    assert letter.error == "identity: Value error, must not be blank"


def test_clock_skew_far_in_the_future_is_event_time_in_future() -> None:
    letter = refused(event_bytes(event_time="2125-01-06T08:00:30Z"))
    assert letter.reason == "event_time_in_future"
    assert letter.error == "event_time is 36524 days, 0:00:00 ahead of ingest_time"


def test_epoch_seconds_far_in_the_future_are_event_time_in_future() -> None:
    letter = refused(event_bytes(event_time=int(INGEST.timestamp()) + 3600))
    assert letter.reason == "event_time_in_future"
    assert letter.error == "event_time is 1:00:00 ahead of ingest_time"


def test_epoch_milliseconds_keep_every_millisecond() -> None:
    """int(timestamp() * 1000) turned 2004-02-01T00:00:00.011Z into ...010."""
    assert accepted(event_bytes(event_time=1_075_593_600_011)).event_time_ms == 1_075_593_600_011
    text = accepted(event_bytes(event_time="2004-02-01T00:00:00.011Z"))
    assert text.event_time_ms == 1_075_593_600_011
