"""Hostile input through every input format's decoder (issue 14, security), with hypothesis.

tests/unit/test_decode_properties.py throws random bytes and format-shaped documents at the
top of `decode_message`. Here every captured sample of every format (tests/data/formats/:
CloudEvents structured, batch and binary, LiteLLM, OpenAI, OTLP JSON and protobuf) is damaged
deep inside: a field anywhere replaced by a hostile value or removed, a header changed, a
protobuf's bytes flipped, cut or grown. Each format's normaliser is called directly too, since
`decode_message` turns any exception into an `internal_error` letter (its safety net), which
would hide a crash. 0 exceptions, 0 `internal_error`; every letter has a reason and the bytes.

Examples are derandomized: the same inputs on every run, so the suite is never flaky.
"""

from __future__ import annotations

import base64
import contextlib
import json
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meterguard.models import DeadLetter, MeteringEvent
from meterguard.streams.decoding import formats
from meterguard.streams.decoding.decode import Origin, decode_message
from meterguard.streams.decoding.formats import otlp_proto
from meterguard.streams.decoding.formats.common import REDACTED, headers_for_dead_letter
from meterguard.streams.web import operator
from meterguard.streams.web.ingest import kafka_headers
from tests.support.format_samples import SAMPLES, sample

INGEST = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
ORIGIN = Origin("metering.raw", 0, 7)
HOSTILE = settings(
    max_examples=60,  # per sample: 11 samples, ~700 decodes, about a second
    derandomize=True,
    database=None,  # the same examples on every run: no replay of saved ones
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
hostile_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from([0, -1, 2**63, -(2**63), 2**64 + 1, 10**30]),
    st.floats(allow_nan=False),  # JSON has no NaN; orjson writes null for it anyway
    st.sampled_from(["", "-1", "NaN", "1e999", "2099-01-01T00:00:00Z", "\x00", "ü" * 3, "{}"]),
    st.text(max_size=40),
    st.just("x" * 70_000),  # past every field's length limit
)
hostile_value = st.recursive(
    hostile_leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=6,
)
JSON_SAMPLES = [n for n in SAMPLES if not sample(n)[0].startswith(b"\n")]  # not protobuf
PROTO_SAMPLES = [n for n in SAMPLES if n not in JSON_SAMPLES]


def paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON document: keys of objects and indexes of arrays, at any depth."""
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += paths(v, (*prefix, i))
    return out


def replaced(doc: Any, path: tuple[Any, ...], value: Any, remove: bool) -> Any:
    if not path:
        return value
    head, rest = path[0], path[1:]
    copy: Any = dict(doc) if isinstance(doc, dict) else list(doc)
    if remove and not rest:
        del copy[head]
    else:
        copy[head] = replaced(copy[head], rest, value, remove)
    return copy


def assert_contained(value: bytes | None, headers: Any) -> None:
    result = decode_message(value, headers, INGEST, ORIGIN)
    assert result.items or result.ignored > 0
    for item in result.items:
        if isinstance(item, DeadLetter):
            assert item.reason and item.reason != "internal_error", item
            assert item.error
            assert item.raw_encoding in ("text", "base64")
        else:
            assert isinstance(item, MeteringEvent)
            MeteringEvent.model_validate_json(item.model_dump_json())  # publishable


@pytest.mark.parametrize("name", JSON_SAMPLES)
def test_a_damaged_json_sample_of_every_format_is_contained(name: str) -> None:
    value, headers = sample(name)
    doc = orjson.loads(value) if value.strip() else None
    places = paths(doc)
    readable = formats.read_headers(headers)
    detected = formats.by_headers(readable).format

    @HOSTILE
    @given(data=st.data())
    def damaged(data: st.DataObject) -> None:
        mutated = doc
        for _ in range(data.draw(st.integers(1, 3))):
            where = data.draw(st.sampled_from(places))
            remove = bool(where) and data.draw(st.booleans())
            try:
                mutated = replaced(mutated, where, data.draw(hostile_value), remove)
            except (KeyError, IndexError, TypeError):
                continue  # an earlier mutation removed or replaced that place
        raw = json.dumps(mutated).encode()  # stdlib: big ints and Infinity, as sent
        fmt = formats.by_content(mutated, detected)
        if fmt not in (formats.NATIVE, formats.UNKNOWN, formats.CLOUDEVENTS_BINARY):
            formats.normalise(fmt, mutated, raw, formats.DEFAULT_MAPPING, readable)  # no raise
        assert_contained(raw, headers)

    damaged()


@pytest.mark.parametrize("name", SAMPLES)
def test_damaged_headers_of_every_sample_are_contained(name: str) -> None:
    value, headers = sample(name)
    names = [k for k, _ in headers or []] + ["mg-format", "content-type", "ce_type", "ce_time"]

    @HOSTILE
    @given(
        changes=st.dictionaries(
            st.sampled_from(names), st.binary(max_size=40) | st.none(), max_size=3
        )
    )
    def damaged(changes: dict[str, bytes | None]) -> None:
        kept = [(k, v) for k, v in headers or [] if k not in changes]
        assert_contained(value, kept + list(changes.items()))

    damaged()


@pytest.mark.parametrize("name", PROTO_SAMPLES)
def test_a_damaged_protobuf_export_is_contained(name: str) -> None:
    value, headers = sample(name)

    @HOSTILE
    @given(
        cut=st.integers(0, len(value)),
        flips=st.lists(st.tuples(st.integers(0, len(value) - 1), st.integers(1, 255)), max_size=4),
        tail=st.binary(max_size=16),
    )
    def damaged(cut: int, flips: list[tuple[int, int]], tail: bytes) -> None:
        data = bytearray(value)
        for at, mask in flips:
            data[at] ^= mask
        raw = bytes(data[:cut]) + tail
        # NotOtlp: the one refusal `read` may raise (it becomes an invalid_protobuf letter).
        with contextlib.suppress(otlp_proto.NotOtlp):
            proto = otlp_proto.read(raw)
            formats.normalise(formats.OTLP, proto, raw, formats.DEFAULT_MAPPING, {})
        assert_contained(raw, headers)

    damaged()


def test_credential_headers_are_named_but_never_copied_into_a_dead_letter() -> None:
    token = "Bearer " + base64.b64encode(b"not-for-the-dlq").decode()
    headers = [
        ("Authorization", token.encode()),
        ("x-api-key", b"k-123"),
        ("Cookie", b"session=abc"),
        ("mg-webhook-signature", b"v1,xyz"),
        ("content-type", b"application/json"),
        ("mg-format", b"native"),
    ]
    assert headers_for_dead_letter(headers) == {
        "Authorization": REDACTED,
        "x-api-key": REDACTED,
        "Cookie": REDACTED,
        "mg-webhook-signature": REDACTED,
        "content-type": "application/json",
        "mg-format": "native",
    }
    [letter] = decode_message(b"{not json", headers, INGEST, ORIGIN).items
    assert isinstance(letter, DeadLetter) and letter.reason == "invalid_json"
    assert "not-for-the-dlq" not in letter.model_dump_json()
    assert "k-123" not in letter.model_dump_json()


def test_header_text_that_is_not_utf8_is_handled_as_the_clients_bytes() -> None:
    """aiohttp hands the routes header values decoded as UTF-8 with surrogateescape: a
    non-UTF-8 byte is a lone surrogate, which a strict encode (or JSON) refuses."""
    hostile = b"Bearer \xff\xfe".decode("utf-8", "surrogateescape")
    refusal = operator.check_bearer(hostile, "the-token")
    assert refusal is not None and refusal.status == 403
    assert kafka_headers({"Content-Type": "\udc80\udcff", "X-Other": "x"}) == [
        ("content-type", b"\x80\xff")
    ]
    actor = operator.clean_text("alice\udcff@sec", operator.MAX_ACTOR)
    assert actor == "alice @sec"
    assert orjson.dumps({"actor": actor})  # JSON-safe: the audit record serialises
