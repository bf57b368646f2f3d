"""Raw bytes -> MeteringEvent or DeadLetter (streams/decoding/decode.py, meterguard/models.py,
meterguard/timeutil.py)."""

from __future__ import annotations

import base64
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import orjson
import pytest

from meterguard.models import MAX_ATTRIBUTES_BYTES, DeadLetter, MeteringEvent
from meterguard.streams.decoding.decode import MAX_MESSAGE_BYTES, Origin, decode
from meterguard.timeutil import format_time, parse_event_time

INGEST = datetime(2025, 1, 6, 8, 0, 30, tzinfo=UTC)
EVENT_TIME = datetime(2025, 1, 6, 8, 0, tzinfo=UTC)
EVENT_EPOCH_S = 1_736_150_400  # EVENT_TIME as epoch seconds
ORIGIN = Origin(topic="metering.raw", partition=3, offset=4711)


def body(**fields: object) -> dict[str, object]:
    """A minimal valid native event, with overrides (a value of ... removes the field)."""
    doc: dict[str, object] = {
        "event_id": "evt-1",
        "identity": "svc-billing",
        "event_time": "2025-01-06T08:00:00Z",
    }
    doc.update(fields)
    return {k: v for k, v in doc.items() if v is not ...}


def raw(**fields: object) -> bytes:
    return orjson.dumps(body(**fields))


def accepted(data: bytes, **kwargs: object) -> MeteringEvent:
    result = decode(data, INGEST, ORIGIN, **kwargs)  # type: ignore[arg-type]
    assert isinstance(result, MeteringEvent), getattr(result, "error", result)
    return result


def refused(data: bytes, **kwargs: object) -> DeadLetter:
    result = decode(data, INGEST, ORIGIN, **kwargs)  # type: ignore[arg-type]
    assert isinstance(result, DeadLetter), f"accepted: {result!r}"
    return result


def original_bytes(letter: DeadLetter) -> bytes:
    if letter.raw_encoding == "base64":
        return base64.b64decode(letter.raw, validate=True)
    return letter.raw.encode("utf-8")


# -- valid events ----------------------------------------------------------------------------


def test_minimal_event_gets_documented_defaults() -> None:
    event = accepted(raw())
    assert event.event_id == "evt-1"
    assert event.identity == "svc-billing"
    assert event.event_time == EVENT_TIME
    assert event.kind == "llm.call"
    assert event.status == "ok"
    assert (event.input_tokens, event.output_tokens, event.cached_tokens) == (0, 0, 0)
    assert event.cost_usd == Decimal(0)
    assert event.cost_nano_usd == 0
    assert event.attributes == {}
    assert event.latency_ms is None


def test_full_event_keeps_every_documented_field() -> None:
    fields = {
        "kind": "tool.call",
        "team": "payments",
        "tenant": "acme",
        "environment": "prod",
        "workload": "invoicer",
        "credential_id": "key-9",
        "source": "gateway-eu",
        "model": "gpt-4o",
        "provider": "openai",
        "operation": "chat",
        "endpoint": "/v1/chat/completions",
        "tool_name": "search",
        "input_tokens": 1200,
        "output_tokens": 300,
        "cached_tokens": 100,
        "cost_usd": 0.0123,
        "status": "error",
        "error_type": "rate_limited",
        "latency_ms": 812.5,
        "request_fingerprint": "fp-abc",
        "trace_id": "t1",
        "span_id": "s1",
        "parent_span_id": "s0",
        "caller_identity": "agent-planner",
        "attributes": {"region": "eu-west-1"},
    }
    event = accepted(raw(**fields))
    for name, value in fields.items():
        if name == "cost_usd":
            assert event.cost_usd == Decimal("0.0123")
        else:
            assert getattr(event, name) == value, name


@pytest.mark.parametrize(
    "event_time",
    [
        "2025-01-06T08:00:00Z",
        "2025-01-06T08:00:00z",
        "2025-01-06T08:00:00+00:00",
        "2025-01-06T09:00:00+01:00",
        "2025-01-06T02:30:00-05:30",
        "2025-01-06T08:00:00.000Z",
        EVENT_EPOCH_S,
        float(EVENT_EPOCH_S),
        EVENT_EPOCH_S * 1000,
    ],
)
def test_every_event_time_form_gives_the_same_instant(event_time: object) -> None:
    event = accepted(raw(event_time=event_time))
    assert event.event_time == EVENT_TIME
    assert event.event_time.utcoffset() == timedelta(0)
    assert event.event_time_ms == EVENT_EPOCH_S * 1000


def test_sub_second_event_times_agree_across_forms() -> None:
    as_text = accepted(raw(event_time="2025-01-06T08:00:00.250Z"))
    as_ms = accepted(raw(event_time=EVENT_EPOCH_S * 1000 + 250))
    as_seconds = accepted(raw(event_time=EVENT_EPOCH_S + 0.25))
    assert as_text.event_time == as_ms.event_time == as_seconds.event_time
    assert as_ms.event_time_ms == EVENT_EPOCH_S * 1000 + 250


def test_format_time_round_trips_through_parse() -> None:
    moment = datetime(2025, 1, 6, 8, 0, 0, 250_000, tzinfo=UTC)
    text = format_time(moment)
    assert text == "2025-01-06T08:00:00.250Z"
    assert parse_event_time(text) == moment


def test_unknown_top_level_fields_are_kept_in_attributes() -> None:
    event = accepted(raw(region="eu", retries=2, nested={"a": [1, 2]}))
    assert event.attributes == {"region": "eu", "retries": 2, "nested": {"a": [1, 2]}}
    assert not event.model_extra
    assert "region" not in event.model_dump(exclude={"attributes"})


def test_unknown_top_level_fields_merge_with_given_attributes() -> None:
    event = accepted(raw(region="eu", attributes={"tier": "gold"}))
    assert event.attributes == {"region": "eu", "tier": "gold"}


def test_unknown_fields_named_like_model_methods_are_plain_attributes() -> None:
    event = accepted(raw(model_dump=1, model_config=2, __class__=3))
    assert event.attributes == {"model_dump": 1, "model_config": 2, "__class__": 3}
    assert orjson.loads(event.to_json())["attributes"] == event.attributes


def test_float_cost_stays_the_exact_decimal_written() -> None:
    event = accepted(raw(cost_usd=0.1))
    assert isinstance(event.cost_usd, Decimal)
    assert event.cost_usd == Decimal("0.1")
    assert str(event.cost_usd) == "0.1"
    assert event.cost_nano_usd == 100_000_000


@pytest.mark.parametrize(
    ("cost", "nano"),
    [
        (0.1, 100_000_000),
        ("0.1", 100_000_000),
        (1.23456789, 1_234_567_890),
        (0.000000001, 1),
        (0, 0),
        (12, 12_000_000_000),
        (0.3, 300_000_000),
    ],
)
def test_cost_in_nano_dollars_is_exact(cost: object, nano: int) -> None:
    assert accepted(raw(cost_usd=cost)).cost_nano_usd == nano


def test_ten_costs_of_a_tenth_sum_to_exactly_one_dollar_in_nano() -> None:
    total = sum(accepted(raw(event_id=f"e{i}", cost_usd=0.1)).cost_nano_usd for i in range(10))
    assert total == 1_000_000_000


@pytest.mark.parametrize("cost", ["1e400", "1e999999999", "9" * 400])
def test_decoded_event_cost_is_always_representable_in_nano_dollars(cost: str) -> None:
    """The window store packs `cost_nano_usd` for every decoded event: an accepted cost that
    cannot be converted crashes the batch instead of reaching the DLQ."""
    result = decode(raw(cost_usd=cost), INGEST, ORIGIN)
    if isinstance(result, DeadLetter):
        assert result.reason == "invalid_event"
    else:
        assert isinstance(result.cost_nano_usd, int)


def test_whole_float_tokens_are_accepted_as_integers() -> None:
    event = accepted(raw(input_tokens=12.0, output_tokens=3.0, cached_tokens=0.0))
    assert event.input_tokens == 12
    assert type(event.input_tokens) is int
    assert (event.output_tokens, event.cached_tokens) == (3, 0)


def test_producer_supplied_ingest_time_is_ignored() -> None:
    event = accepted(raw(ingest_time="2030-01-01T00:00:00Z"))
    assert event.ingest_time == INGEST
    assert "ingest_time" not in event.attributes


def test_event_slightly_ahead_of_ingest_time_is_accepted() -> None:
    ahead = (INGEST + timedelta(minutes=4)).isoformat()
    assert accepted(raw(event_time=ahead)).event_time == INGEST + timedelta(minutes=4)


def test_old_events_are_accepted() -> None:
    """Lateness is the window store's business, not the decoder's."""
    event = accepted(raw(event_time="2024-01-01T00:00:00Z"))
    assert event.event_time == datetime(2024, 1, 1, tzinfo=UTC)


def test_identity_and_event_id_at_their_length_limits_are_accepted() -> None:
    event = accepted(raw(event_id="e" * 128, identity="i" * 256))
    assert (len(event.event_id), len(event.identity)) == (128, 256)


def test_unicode_identity_is_accepted() -> None:
    assert accepted(raw(identity="agent-ünïcødé 机器人")).identity == "agent-ünïcødé 机器人"


def test_message_exactly_at_the_size_limit_is_decoded() -> None:
    data = raw()
    padded = data[:-1] + b" " * (MAX_MESSAGE_BYTES - len(data)) + b"}"
    assert len(padded) == MAX_MESSAGE_BYTES
    accepted(padded)


def test_attributes_just_under_the_limit_are_accepted() -> None:
    filler = "x" * (MAX_ATTRIBUTES_BYTES - 20)
    event = accepted(raw(attributes={"blob": filler}))
    assert len(orjson.dumps(event.attributes)) <= MAX_ATTRIBUTES_BYTES


# -- dead letters ----------------------------------------------------------------------------


def test_dead_letter_carries_origin_ingest_time_and_the_original_text() -> None:
    data = b'{"event_id": "x", oops'
    letter = refused(data)
    assert letter.reason == "invalid_json"
    assert letter.raw_encoding == "text"
    assert original_bytes(letter) == data
    assert (letter.topic, letter.partition, letter.offset) == ("metering.raw", 3, 4711)
    assert letter.ingest_time == INGEST
    assert letter.error


def test_invalid_utf8_is_kept_as_base64() -> None:
    data = b'{"event_id": "\xff\xfe", "identity": "a"}'
    letter = refused(data)
    assert letter.reason == "invalid_json"
    assert letter.raw_encoding == "base64"
    assert original_bytes(letter) == data


def test_dead_letter_without_origin_has_null_location() -> None:
    letter = decode(b"nope", INGEST)
    assert isinstance(letter, DeadLetter)
    assert (letter.topic, letter.partition, letter.offset) == (None, None, None)


@pytest.mark.parametrize("data", [b"", b"nope", b"{", b"{'a': 1}", b'{"a": 1,}', b"\xef\xbb\xbf{}"])
def test_unparseable_bytes_are_invalid_json(data: bytes) -> None:
    letter = refused(data)
    assert letter.reason == "invalid_json"
    assert original_bytes(letter) == data


@pytest.mark.parametrize("data", [b"[]", b"[1, 2]", b'"text"', b"42", b"null", b"true"])
def test_json_that_is_not_an_object_is_not_an_object(data: bytes) -> None:
    """`decode` reads one event. A message on metering.raw may be a JSON array of events:
    `decode_message` reads those (tests/unit/test_native_batches.py)."""
    letter = refused(data)
    assert letter.reason == "not_an_object"
    assert original_bytes(letter) == data


INVALID_EVENTS = {
    "missing_event_id": {"event_id": ...},
    "missing_identity": {"identity": ...},
    "missing_event_time": {"event_time": ...},
    "empty_event_id": {"event_id": ""},
    "blank_identity": {"identity": "   "},
    "blank_event_id": {"event_id": "\u3000 "},
    "oversize_event_id": {"event_id": "e" * 129},
    "oversize_identity": {"identity": "i" * 257},
    "identity_with_newline": {"identity": "svc\nadmin"},
    "identity_with_tab": {"identity": "svc\tadmin"},
    "identity_with_nul": {"identity": "svc\x00"},
    "identity_with_del": {"identity": "svc\x7f"},
    "identity_with_c1_control": {"identity": "svc\x85"},
    "event_id_with_control": {"event_id": "e\x1b[31m"},
    "identity_not_a_string": {"identity": 42},
    "negative_input_tokens": {"input_tokens": -1},
    "negative_output_tokens": {"output_tokens": -5},
    "negative_cached_tokens": {"cached_tokens": -1},
    "negative_cost": {"cost_usd": -0.01},
    "negative_latency": {"latency_ms": -1},
    "fractional_tokens": {"input_tokens": 12.5},
    "boolean_tokens": {"output_tokens": True},
    "boolean_cost": {"cost_usd": False},
    "string_tokens_garbage": {"input_tokens": "lots"},
    "nan_cost_string": {"cost_usd": "NaN"},
    "unknown_kind": {"kind": "llm.stream"},
    "unknown_status": {"status": "maybe"},
    "naive_timestamp": {"event_time": "2025-01-06T08:00:00"},
    "naive_timestamp_with_space": {"event_time": "2025-01-06 08:00:00"},
    "date_only": {"event_time": "2025-01-06"},
    "boolean_event_time": {"event_time": True},
    "zero_epoch": {"event_time": 0},
    "negative_epoch": {"event_time": -EVENT_EPOCH_S},
    "garbage_timestamp": {"event_time": "yesterday at noon"},
    "object_event_time": {"event_time": {"seconds": EVENT_EPOCH_S}},
    "null_event_time": {"event_time": None},
    "epoch_year_out_of_range": {"event_time": 1e17},
    "epoch_beyond_platform_time_t": {"event_time": 1e20},
    "timestamp_out_of_range": {"event_time": "0001-01-01T00:00:00+01:00"},
    "attributes_not_an_object": {"attributes": ["a", "b"]},
}


@pytest.mark.parametrize("fields", INVALID_EVENTS.values(), ids=INVALID_EVENTS.keys())
def test_malformed_event_is_an_invalid_event_dead_letter(fields: dict[str, object]) -> None:
    data = raw(**fields)
    letter = refused(data)
    assert letter.reason == "invalid_event"
    assert letter.error
    assert original_bytes(letter) == data
    assert (letter.topic, letter.partition, letter.offset) == ("metering.raw", 3, 4711)


@pytest.mark.parametrize("event_time", ["1969-12-31T23:59:59Z", "1900-01-01T00:00:00Z", -1])
def test_event_time_before_the_epoch_is_refused_in_every_form(event_time: object) -> None:
    """Epoch numbers <= 0 are refused; the same instant written as RFC 3339 must be too
    (a negative event_time_ms cannot be packed for the window store)."""
    letter = refused(raw(event_time=event_time))
    assert letter.reason == "invalid_event"


def test_invalid_event_error_names_the_offending_field() -> None:
    letter = refused(raw(input_tokens=-3))
    assert "input_tokens" in letter.error


def test_naive_timestamp_error_says_an_offset_is_needed() -> None:
    letter = refused(raw(event_time="2025-01-06T08:00:00"))
    assert "offset" in letter.error


def test_message_over_the_size_limit_is_oversize() -> None:
    data = raw(attributes={"pad": "x" * MAX_MESSAGE_BYTES})
    assert len(data) > MAX_MESSAGE_BYTES
    letter = refused(data)
    assert letter.reason == "oversize"
    # Its first bytes, size and hash (the whole is more than a Kafka message can carry).
    assert data.startswith(original_bytes(letter)) and letter.raw_size == len(data)


def test_oversize_is_checked_before_parsing() -> None:
    data = b"\xff" * (MAX_MESSAGE_BYTES + 1)
    letter = refused(data)
    assert letter.reason == "oversize"
    assert letter.raw_encoding == "base64"
    assert data.startswith(original_bytes(letter)) and letter.raw_size == len(data)


def test_large_attributes_are_attributes_too_large() -> None:
    data = raw(attributes={"blob": "x" * (MAX_ATTRIBUTES_BYTES + 1)})
    letter = refused(data)
    assert letter.reason == "attributes_too_large"
    assert original_bytes(letter) == data


def test_large_unknown_top_level_fields_count_towards_the_attributes_limit() -> None:
    letter = refused(raw(debug_dump="y" * (MAX_ATTRIBUTES_BYTES + 1)))
    assert letter.reason == "attributes_too_large"


def test_event_far_ahead_of_ingest_time_is_event_time_in_future() -> None:
    data = raw(event_time=(INGEST + timedelta(minutes=6)).isoformat())
    letter = refused(data)
    assert letter.reason == "event_time_in_future"
    assert original_bytes(letter) == data


def test_future_skew_limit_is_configurable() -> None:
    data = raw(event_time=(INGEST + timedelta(minutes=2)).isoformat())
    assert isinstance(decode(data, INGEST, ORIGIN), MeteringEvent)
    letter = decode(data, INGEST, ORIGIN, max_future_skew=timedelta(minutes=1))
    assert isinstance(letter, DeadLetter)
    assert letter.reason == "event_time_in_future"


def test_epoch_milliseconds_misread_as_far_future_seconds_are_refused() -> None:
    """Just under the ms threshold is read as seconds: year 5138, far in the future."""
    letter = refused(raw(event_time=99_999_999_999))
    assert letter.reason == "event_time_in_future"


# -- decode never raises ---------------------------------------------------------------------

WEIRD_INPUTS = [
    b"",
    b" ",
    b"\x00",
    b"\x00" * 64,
    b"\xff\xfe\xfd",
    b"\xef\xbb\xbf" + raw(),
    b"[" * 5000 + b"]" * 5000,
    b'{"a":' * 3000 + b"1" + b"}" * 3000,
    b"1e400",
    b"-0",
    b"NaN",
    b"Infinity",
    b'{"event_id": "a", "identity": "b", "event_time": 1e400}',
    b'{"event_id": "a", "identity": "b", "event_time": NaN}',
    b'{"event_id": "a", "identity": "b", "event_time": 18446744073709551616}',
    b'{"event_id": "a", "identity": "b", "event_time": -18446744073709551616}',
    b'{"event_id": "a", "identity": "b", "event_time": "9999-12-31T23:59:59-01:00"}',
    b'{"event_id": "a", "identity": "b", "event_time": "T"}',
    b'{"event_id": "a", "identity": "b", "event_time": "Z"}',
    b'{"event_id": "a", "identity": "b", "event_time": "2025-13-45T99:99:99Z"}',
    b'{"event_id": "a", "identity": "b", "event_time": 1736150400, "x": 18446744073709551616}',
    b'{"event_id": "a", "identity": "b", "event_time": 1736150400, "cost_usd": "1e-999999"}',
    b'{"event_id": "a", "identity": "b", "event_time": 1736150400, "input_tokens": 1e300}',
    b'{"event_id": "a", "identity": "b", "event_time": 1736150400, "latency_ms": 1e308}',
    b'{"event_id": ["a"], "identity": {"b": 1}, "event_time": [1736150400]}',
    b'{"event_id": "a", "identity": "b", "event_time": 1736150400, "attributes": null}',
    b'{"event_id": "a", "identity": "b", "event_time": 1736150400, "__pydantic_extra__": {}}',
    b'{"\\ud800": "lone surrogate", "event_id": "\\udfff"}',
    b'{"event_id": "a", "event_id": "b", "identity": "c", "event_time": 1736150400}',
    '{"identity": "\u202e\u200b", "event_id": "a", "event_time": 1}'.encode(),
]


@pytest.mark.parametrize("data", WEIRD_INPUTS, ids=range(len(WEIRD_INPUTS)))
def test_decode_never_raises_on_weird_inputs(data: bytes) -> None:
    result = decode(data, INGEST, ORIGIN)
    assert isinstance(result, MeteringEvent | DeadLetter)
    if isinstance(result, DeadLetter):
        assert original_bytes(result) == data


def test_decode_never_raises_on_random_bytes() -> None:
    rng = random.Random(20250106)
    for _ in range(2000):
        data = rng.randbytes(rng.randrange(0, 200))
        result = decode(data, INGEST, ORIGIN)
        assert isinstance(result, DeadLetter)
        assert original_bytes(result) == data


def test_decode_never_raises_on_mutated_valid_events() -> None:
    rng = random.Random(7)
    template = bytearray(
        raw(input_tokens=120, output_tokens=30, cost_usd=0.0042, environment="prod", x=1)
    )
    kinds = {"event": 0, "dead": 0}
    for _ in range(3000):
        data = bytearray(template)
        for _ in range(rng.randrange(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        result = decode(bytes(data), INGEST, ORIGIN)
        if isinstance(result, DeadLetter):
            kinds["dead"] += 1
            assert original_bytes(result) == bytes(data)
        else:
            assert isinstance(result, MeteringEvent)
            kinds["event"] += 1
    assert kinds["event"] > 0 and kinds["dead"] > 0


@pytest.mark.parametrize("field", ["model", "team", "request_fingerprint", "trace_id"])
def test_an_overlong_optional_text_field_is_dead_lettered_naming_the_field(field: str):
    from datetime import UTC, datetime

    from meterguard.models import DeadLetter
    from meterguard.streams.decoding.decode import decode

    doc = {"event_id": "e1", "identity": "svc-a", "event_time": "2025-01-06T08:00:00Z"}
    doc[field] = "x" * 257
    result = decode(orjson.dumps(doc), datetime(2025, 1, 6, 8, 1, tzinfo=UTC))
    assert isinstance(result, DeadLetter) and result.reason == "invalid_event"
    assert field in result.error and "256" in result.error
