"""A dead letter always fits a Kafka message (1,000,000 bytes by default): a longer original
keeps its first MAX_DEAD_LETTER_RAW_BYTES, its size and its SHA-256 (issue 14: a 1 MiB
message's letter once held all of it and stopped the worker)."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime

import pytest

from meterguard.streams.decoding.decode import (
    MAX_DEAD_LETTER_RAW_BYTES,
    MAX_MESSAGE_BYTES,
    Origin,
    dead_letter,
    decode_message,
)

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
KAFKA_DEFAULT_MAX = 1_000_000

WORST = {
    "control characters (six JSON bytes each)": b"\x01" * (MAX_MESSAGE_BYTES + 10),
    "not UTF-8 (base64)": b"\xff" * (MAX_MESSAGE_BYTES + 10),
    "quotes (two JSON bytes each)": b'"' * (MAX_MESSAGE_BYTES + 10),
}


@pytest.mark.parametrize("raw", WORST.values(), ids=WORST.keys())
def test_the_largest_dead_letter_fits_a_kafka_message(raw: bytes) -> None:
    letter = dead_letter(raw, "oversize", "x" * 5000, NOW, Origin("metering.raw", 3, 42))
    assert len(letter.model_dump_json().encode()) < KAFKA_DEFAULT_MAX
    kept = base64.b64decode(letter.raw) if letter.raw_encoding == "base64" else letter.raw.encode()
    assert raw.startswith(kept) and len(kept) == MAX_DEAD_LETTER_RAW_BYTES
    assert letter.raw_truncated and letter.raw_size == len(raw)
    assert letter.raw_sha256 == hashlib.sha256(raw).hexdigest()
    assert (letter.topic, letter.partition, letter.offset) == ("metering.raw", 3, 42)


def test_an_original_that_fits_is_kept_whole() -> None:
    raw = b"{not json" * 1000
    letter = decode_message(raw, None, NOW).items[0]
    assert letter.raw.encode() == raw  # type: ignore[union-attr]
    assert not letter.raw_truncated and letter.raw_size is None  # type: ignore[union-attr]
