"""Event-time parsing and formatting (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

# Epoch numbers above this are milliseconds: 1e11 s is the year 5138, 1e11 ms is 1973.
_MS_THRESHOLD = 100_000_000_000
MINUTE_MS = 60_000
# Metering from before 2000 is a broken clock, not evidence (and keeps epoch ms positive).
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)


def parse_event_time(value: Any) -> datetime:
    """RFC 3339 string, epoch seconds or epoch milliseconds -> aware UTC datetime.

    Raises ValueError (only) for anything else, including instants before 2000.
    """
    try:
        moment = _parse(value)
    except (OverflowError, OSError) as exc:  # e.g. fromtimestamp(1e20): errno 75
        raise ValueError(f"event time out of range: {value!r}") from exc
    if moment < EARLIEST:
        raise ValueError(f"event time {moment.isoformat()} is before {EARLIEST.year}")
    return moment


def _parse(value: Any) -> datetime:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("datetime must carry a timezone")
        return value.astimezone(UTC)
    if isinstance(value, bool):
        raise ValueError("event time must be RFC 3339 or epoch seconds/ms, not a boolean")
    if isinstance(value, int | float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("event time must be finite")
        seconds = value / 1000 if abs(value) >= _MS_THRESHOLD else value
        if seconds <= 0:
            raise ValueError("epoch event time must be positive")
        return datetime.fromtimestamp(seconds, UTC)
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("z", "Z")):
            text = text[:-1] + "+00:00"
        if "T" not in text and "t" not in text and " " not in text:
            raise ValueError(f"not an RFC 3339 timestamp: {value!r}")
        parsed = datetime.fromisoformat(text)
        if parsed.tzinfo is None:
            raise ValueError(f"RFC 3339 timestamp needs an offset or Z: {value!r}")
        return parsed.astimezone(UTC)
    raise ValueError(f"unsupported event time type {type(value).__name__}")


def format_time(moment: datetime) -> str:
    """RFC 3339 with milliseconds and Z."""
    return (
        moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    )


def to_ms(moment: datetime) -> int:
    """Epoch milliseconds, exactly: int(timestamp() * 1000) loses one for some instants
    (2004-02-01T00:00:00.011Z gives ...010)."""
    return (moment - _EPOCH) // _ONE_MS


def from_ms(epoch_ms: int) -> datetime:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC)


def minute_of(epoch_ms: int) -> int:
    return epoch_ms // MINUTE_MS
