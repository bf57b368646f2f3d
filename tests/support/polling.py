"""`eventually`: poll a condition until it holds, else fail saying what never happened.

The one polling loop of the tests. It waits for an observable outcome (a counter, a
delivery, a cache entry) instead of sleeping a fixed time and hoping; the sleep between two
checks is only the polling interval.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

# Generous: a worker process joins its consumer group and catches up on CI's two cores.
DEADLINE_S = 120.0
LOG_TAIL_CHARS = 4000

Condition = Callable[[], bool | Awaitable[bool]]


# `timeout` is a polling budget that ends in pytest.fail naming `what` (and the log tail), not
# a cancellation a caller's asyncio.timeout could replace; every test passes it by that name.
async def eventually(
    condition: Condition,
    what: str = "the condition",
    *,
    timeout: float = DEADLINE_S,  # noqa: ASYNC109
    interval: float = 0.1,
    log: Path | None = None,
) -> float:
    """Poll `condition` (sync, or async: awaited) until it is true; return the monotonic time
    it first was. Fails the test after `timeout` seconds, naming `what` was awaited, with the
    tail of `log` (e.g. a worker's output) when given."""
    deadline = time.monotonic() + timeout
    while True:
        held = condition()
        if inspect.isawaitable(held):
            held = await held
        if held:
            return time.monotonic()
        if time.monotonic() >= deadline:
            break
        await asyncio.sleep(interval)  # polling interval of a condition check, not a stand-in
    message = f"timed out after {timeout:g}s waiting for {what}"
    if log is not None:
        tail = await asyncio.to_thread(_log_tail, log)
        if tail is not None:
            message += f"; log tail ({log}):\n{tail}"
    pytest.fail(message)


def _log_tail(log: Path) -> str | None:
    if not log.exists():
        return None
    return log.read_text(errors="replace")[-LOG_TAIL_CHARS:]
