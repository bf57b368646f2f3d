"""store/retry.py: a Redis call retried with backoff while Redis is unavailable."""

from __future__ import annotations

import pytest
import redis.exceptions

from meterguard.streams.store import retry


@pytest.fixture
def slept(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    delays: list[float] = []

    async def sleep(delay: float) -> None:
        delays.append(delay)

    monkeypatch.setattr(retry.asyncio, "sleep", sleep)
    return delays


def failing(errors: list[Exception], value: int = 7):
    calls = []

    async def call() -> int:
        calls.append(1)
        if errors:
            raise errors.pop(0)
        return value

    return call, calls


async def test_redis_and_os_level_outages_are_retried_with_backoff(slept: list[float]) -> None:
    call, calls = failing(
        [
            redis.exceptions.ConnectionError("down"),
            redis.exceptions.TimeoutError("slow"),
            ConnectionRefusedError("refused"),
            TimeoutError(),
        ]
    )
    assert await retry.retrying(call) == 7
    assert len(calls) == 5
    assert slept == pytest.approx([0.2, 0.4, 0.8, 1.6])


async def test_the_last_attempts_error_propagates(slept: list[float]) -> None:
    call, calls = failing([redis.exceptions.ConnectionError(str(i)) for i in range(10)])
    with pytest.raises(redis.exceptions.ConnectionError, match="5"):
        await retry.retrying(call, attempts=6)
    assert len(calls) == 6
    assert slept == pytest.approx([0.2, 0.4, 0.8, 1.6, 3.2])


async def test_backoff_is_capped_at_five_seconds(slept: list[float]) -> None:
    call, _ = failing([redis.exceptions.ConnectionError()] * 8)
    await retry.retrying(call)
    assert slept[-3:] == [5.0, 5.0, 5.0]


async def test_other_errors_are_not_retried(slept: list[float]) -> None:
    call, calls = failing([redis.exceptions.ResponseError("WRONGTYPE")])
    with pytest.raises(redis.exceptions.ResponseError):
        await retry.retrying(call)
    assert len(calls) == 1 and slept == []


async def test_by_default_it_waits_for_redis_however_long_it_is_away(slept: list[float]) -> None:
    # 100 failures: over 8 minutes of backoff. Giving up would lose the agent's batch.
    call, calls = failing([redis.exceptions.ConnectionError("down")] * 100)
    assert await retry.retrying(call) == 7
    assert len(calls) == 101 and sum(slept) > 480
