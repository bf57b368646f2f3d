"""The sink contract: deliver a batch of alerts, get one outcome per alert back; close.

Sinks never sleep and never retry by themselves. Backpressure is data: a `Retry` outcome
carrying the destination's `Retry-After`, which the caller's durable queue turns into a
due time with `RetryPolicy`. That keeps a slow destination from holding a worker task, and
makes every retry decision a pure function tested without a clock.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Protocol

from meterguard.models import Alert

# Statuses worth trying again: the request may succeed later unchanged (RFC 9110 and the
# conventions of Slack and the SIEM vendors). Every other 4xx is the request's own fault.
RETRYABLE_STATUSES = frozenset({408, 425, 429})


@dataclass(frozen=True)
class Delivered:
    status: int | None = None


@dataclass(frozen=True)
class Retry:
    reason: str
    retry_after: float | None = None  # seconds the destination asked us to wait, if any
    status: int | None = None


@dataclass(frozen=True)
class Failed:
    """Permanent: the destination refused this alert and would refuse it again."""

    reason: str
    status: int | None = None


Outcome = Delivered | Retry | Failed


class Sink(Protocol):
    kind: str  # metric label: "webhook", "slack"

    async def deliver(self, alerts: Sequence[Alert]) -> list[Outcome]:
        """One outcome per alert, in order. Must not raise for destination errors."""
        ...

    async def close(self) -> None: ...


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """`Retry-After` as seconds from `now`: delta-seconds or an HTTP-date; None if unusable."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; a naive parse means "-0000"
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def classify_response(status: int, headers: Mapping[str, str], now: datetime) -> Outcome:
    """An HTTP response as an outcome: 2xx delivered, 408/425/429/5xx retry, else failed."""
    if 200 <= status < 300:
        return Delivered(status)
    if status in RETRYABLE_STATUSES or status >= 500:
        after = parse_retry_after(headers.get("retry-after"), now)
        return Retry(f"HTTP {status}", after, status)
    # 3xx included: redirects are not followed, so a moved endpoint needs its URL fixed.
    return Failed(f"HTTP {status}", status)


@dataclass(frozen=True)
class Ack:
    """Delivered: remove from the queue."""


@dataclass(frozen=True)
class Reschedule:
    delay_s: float


@dataclass(frozen=True)
class GiveUp:
    reason: str
    status: int | None


Step = Ack | Reschedule | GiveUp


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, capped; `Retry-After` is a lower bound.

    Full jitter (a uniform draw in [0, cap]) spreads the retries of many workers and many
    alerts instead of having them hit a recovering destination in lock-step.
    """

    base_s: float = 0.5
    max_s: float = 60.0
    max_attempts: int = 128  # ~1 h of retries (streams/settings.py: sink_max_attempts)
    rng: Callable[[], float] = random.random

    def backoff(self, attempt: int, retry_after: float | None = None) -> float:
        """Delay before attempt `attempt + 1`, after `attempt` (>= 1) failed."""
        ceiling = min(self.max_s, self.base_s * 2.0 ** min(attempt - 1, 62))
        delay = self.rng() * ceiling
        if retry_after is not None:
            delay = max(delay, retry_after)
        return delay

    def next_step(self, outcome: Outcome, attempts: int) -> Step:
        """What to do with an alert after its `attempts`-th attempt ended in `outcome`."""
        if isinstance(outcome, Delivered):
            return Ack()
        if isinstance(outcome, Failed):
            return GiveUp(outcome.reason, outcome.status)
        if attempts >= self.max_attempts:
            return GiveUp(f"{outcome.reason} after {attempts} attempts", outcome.status)
        return Reschedule(self.backoff(attempts, outcome.retry_after))
