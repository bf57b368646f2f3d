"""Small hand-made traffic for tests: quiet identities and one runaway, fully deterministic."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson

from meterguard.models import MeteringEvent

# Far enough in the past that no test trips the future-skew check, on a minute boundary.
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def series(
    identity: str,
    minutes: int,
    per_minute: int,
    start: datetime = T0,
    burst: tuple[int, int, int] | None = None,
    environment: str = "prod",
    prefix: str = "",
) -> list[dict]:
    """`per_minute` evenly spaced calls each minute; burst = (first, last, calls/min)."""
    out = []
    for minute in range(minutes):
        calls = burst[2] if burst and burst[0] <= minute <= burst[1] else per_minute
        for k in range(calls):
            at = start + timedelta(minutes=minute, milliseconds=k * 60_000 // calls + 1)
            out.append(
                {
                    "event_id": f"{prefix}{identity}-{minute}-{k}",
                    "identity": identity,
                    "event_time": at.isoformat().replace("+00:00", "Z"),
                    "team": "platform",
                    "environment": environment,
                    "model": "gpt-4o-mini",
                    "input_tokens": 400,
                    "output_tokens": 100,
                    "cost_usd": 0.0004,
                }
            )
    return out


def mixed(
    quiet: int = 4,
    minutes: int = 75,
    runaway_from: int = 65,  # after the detectors' 60-minute warm-up
    prefix: str = "",
    start: datetime = T0,
) -> list[dict]:
    """Quiet identities at 6 calls/min plus `agent-runaway` at 30x from `runaway_from`."""
    events = []
    for i in range(quiet):
        events += series(f"svc-quiet-{i}", minutes, 6, start=start, prefix=prefix)
    burst = (runaway_from, minutes, 180)
    events += series("agent-runaway", minutes, 6, start=start, burst=burst, prefix=prefix)
    return sorted(events, key=lambda e: (e["event_time"], e["event_id"]))


def as_events(docs: list[dict]) -> list[MeteringEvent]:
    return [MeteringEvent.model_validate(d) for d in docs]


def as_jsonl(docs: list[dict]) -> bytes:
    return b"".join(orjson.dumps(d) + b"\n" for d in docs)
