"""Sink contract helpers (sinks/base.py): Retry-After, response classification, backoff."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from meterguard.sinks.base import (
    Ack,
    Delivered,
    Failed,
    GiveUp,
    Reschedule,
    Retry,
    RetryPolicy,
    classify_response,
    parse_retry_after,
)

NOW = datetime(2026, 3, 2, 12, 0, 0, tzinfo=UTC)


def test_retry_after_in_seconds():
    assert parse_retry_after("120", NOW) == 120.0
    assert parse_retry_after(" 0 ", NOW) == 0.0


def test_retry_after_as_http_date_is_seconds_from_now():
    later = format_datetime(NOW + timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(later, NOW) == 90.0


def test_retry_after_in_the_past_means_now():
    assert parse_retry_after(format_datetime(NOW - timedelta(hours=1), usegmt=True), NOW) == 0.0


@pytest.mark.parametrize("value", [None, "", "soon", "-5", "1.5e3", "Mon, 99 Foo 2026"])
def test_unusable_retry_after_is_ignored(value):
    assert parse_retry_after(value, NOW) is None


@pytest.mark.parametrize("status", [200, 201, 202, 204])
def test_2xx_is_delivered(status):
    assert classify_response(status, {}, NOW) == Delivered(status)


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504])
def test_timeouts_rate_limits_and_server_errors_are_retried(status):
    outcome = classify_response(status, {"retry-after": "7"}, NOW)
    assert outcome == Retry(f"HTTP {status}", 7.0, status)


@pytest.mark.parametrize("status", [301, 400, 401, 403, 404, 410, 413, 422])
def test_other_client_errors_and_redirects_are_permanent(status):
    assert isinstance(classify_response(status, {"retry-after": "7"}, NOW), Failed)


def fixed(value: float) -> RetryPolicy:
    return RetryPolicy(base_s=0.5, max_s=10.0, max_attempts=5, rng=lambda: value)


def test_backoff_grows_exponentially_up_to_the_cap():
    top = fixed(1.0)
    assert [top.backoff(n) for n in range(1, 8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_backoff_is_full_jitter_between_zero_and_the_ceiling():
    assert fixed(0.0).backoff(4) == 0.0
    assert fixed(0.25).backoff(4) == 1.0
    real = RetryPolicy(base_s=0.5, max_s=10.0)
    assert all(0 <= real.backoff(n) <= min(10.0, 0.5 * 2 ** (n - 1)) for n in range(1, 50))


def test_backoff_survives_absurd_attempt_counts():
    assert fixed(1.0).backoff(10_000) == 10.0


def test_retry_after_is_a_lower_bound_on_the_delay():
    assert fixed(0.0).backoff(1, retry_after=30.0) == 30.0
    assert fixed(1.0).backoff(5, retry_after=1.0) == 8.0


def test_next_step_acks_delivered_and_gives_up_on_permanent_failure():
    policy = fixed(1.0)
    assert policy.next_step(Delivered(200), 1) == Ack()
    assert policy.next_step(Failed("HTTP 404", 404), 1) == GiveUp("HTTP 404", 404)


def test_next_step_reschedules_until_the_last_attempt():
    policy = fixed(1.0)
    assert policy.next_step(Retry("HTTP 503", None, 503), 1) == Reschedule(0.5)
    assert policy.next_step(Retry("HTTP 429", 20.0, 429), 4) == Reschedule(20.0)
    last = policy.next_step(Retry("HTTP 503", None, 503), 5)
    assert last == GiveUp("HTTP 503 after 5 attempts", 503)
