"""Slack through the Web API (a bot token + a channel): one channel message per episode.

The first alert of an episode posts a top-level message and its `ts` is remembered per
episode in a `ThreadStore` (Redis in production, so workers share it and a restart keeps it).
Later alerts of the episode (escalation, resolution) are posted as replies in that thread, and
the parent is edited to show the latest state. More new episodes in one batch than
`digest_threshold` is a storm: one top-level digest, no threads for those episodes.

Replies go out before the parent is edited: a failed reply means nothing was shown, so the
retry cannot duplicate it; a failed edit after a posted reply only leaves the parent stale,
and the alert counts as delivered. Identities stay in plain_text blocks (see slack_format).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from meterguard.models import Alert, utc_now
from meterguard.sinks.base import (
    RETRYABLE_STATUSES,
    Delivered,
    Failed,
    Outcome,
    Retry,
    parse_retry_after,
)
from meterguard.sinks.slack import digest_message, latest_per_episode
from meterguard.sinks.slack_format import alert_message

log = logging.getLogger("meterguard.slack")

# `ok: false` codes worth another try; every other code (channel_not_found, invalid_auth,
# not_in_channel, ...) would fail the same way again, so the alert is dead-lettered at once.
THREAD_GONE = "thread_not_found"
TRANSIENT_ERRORS = frozenset(
    {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)


class ThreadStore(Protocol):
    """Episode key -> ts of the episode's top-level message."""

    async def get_many(self, keys: Sequence[str]) -> list[str | None]: ...

    async def put(self, key: str, ts: str) -> None: ...


class MemoryThreadStore:
    """For tests and single-process use: forgets everything on restart."""

    def __init__(self) -> None:
        self.threads: dict[str, str] = {}

    async def get_many(self, keys: Sequence[str]) -> list[str | None]:
        return [self.threads.get(k) for k in keys]

    async def put(self, key: str, ts: str) -> None:
        self.threads[key] = ts


def thread_key(alert: Alert) -> str:
    """The episode as a fixed-size, identity-free key: `Alert.episode_id`, whose key material
    (sha256 of identity, detector and episode start) is what this key always hashed, so the
    threads stored before `episode_id` existed are still found."""
    return alert.episode_id


@dataclass(frozen=True)
class Posted:
    outcome: Outcome
    ts: str | None = None


def classify_slack_error(exc: Exception, now: datetime) -> Outcome:
    """A failed Web API call as an outcome; the Slack error code goes into the reason."""
    if not isinstance(exc, SlackApiError):  # network, timeout, unreadable answer
        return Retry(f"slack network error: {type(exc).__name__}")
    # Usually a SlackResponse; an unreadable body leaves aiohttp's response in its place.
    response = exc.response
    status = int(getattr(response, "status_code", None) or getattr(response, "status", None) or 0)
    data = getattr(response, "data", None)
    code = data.get("error") if isinstance(data, dict) else None
    if status == 429 or code == "ratelimited":
        headers = getattr(response, "headers", None) or {}
        after = parse_retry_after(headers.get("retry-after"), now)
        return Retry("slack ratelimited", after, status)
    if status in RETRYABLE_STATUSES or status >= 500:
        return Retry(f"slack HTTP {status}", None, status)
    if code in TRANSIENT_ERRORS:
        return Retry(f"slack error {code}", None, status)
    if status == 200:  # `ok: false`: the request itself is wrong (channel, token, scopes)
        return Failed(f"slack error {code or 'unknown'}")
    return Failed(f"slack HTTP {status}" + (f" {code}" if code else ""), status)


class SlackApiSink:
    kind = "slack"

    def __init__(
        self,
        client: AsyncWebClient,
        channel: str,
        threads: ThreadStore,
        dashboard_url: str | None = None,
        digest_threshold: int = 5,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._client = client
        self.channel = channel
        self._threads = threads
        self._dashboard_url = dashboard_url
        self._digest_threshold = digest_threshold
        self._clock = clock

    async def deliver(self, alerts: Sequence[Alert]) -> list[Outcome]:
        episodes = latest_per_episode(alerts)
        keys = [thread_key(latest) for latest, _ in episodes]
        parents = await self._threads.get_many(keys)  # fails before anything is posted
        fresh = sum(1 for ts in parents if ts is None)
        storm = fresh > self._digest_threshold
        replies = 0
        outcomes: list[Outcome | None] = [None] * len(alerts)
        digest: list[tuple[Alert, tuple[int, ...]]] = []
        limited: Retry | None = None  # after a 429 the rest would be refused too
        for (latest, carries), key, parent in zip(episodes, keys, parents, strict=True):
            # Known episodes beyond the budget join the digest: each reply is two calls, and
            # a batch must finish within the outbox lease.
            if (parent is None and storm) or (
                parent is not None and replies >= self._digest_threshold
            ):
                digest.append((latest, carries))
                continue
            if limited is not None:
                outcome: Outcome = limited
            elif parent is None:
                outcome = await self._start_thread(latest, key)
            else:
                replies += 1
                outcome = await self._reply(latest, parent, key)
            limited = limited or _rate_limited(outcome)
            for i in carries:
                outcomes[i] = outcome
        if digest:
            body = digest_message([a for a, _ in digest], self._dashboard_url)
            outcome = limited or (await self._call("chat_postMessage", body)).outcome
            for _, carries in digest:
                for i in carries:
                    outcomes[i] = outcome
        return [o if o is not None else Retry("not planned") for o in outcomes]

    async def _start_thread(self, alert: Alert, key: str) -> Outcome:
        posted = await self._call("chat_postMessage", alert_message(alert, self._dashboard_url))
        if posted.ts is not None:
            try:
                await self._threads.put(key, posted.ts)
            except Exception:  # posted already: a retry would show it twice
                log.exception("slack: could not remember the thread of alert %s", alert.alert_id)
        return posted.outcome

    async def _reply(self, alert: Alert, parent: str, key: str) -> Outcome:
        body = alert_message(alert, self._dashboard_url)
        posted = await self._call("chat_postMessage", {**body, "thread_ts": parent})
        if isinstance(posted.outcome, Failed) and THREAD_GONE in posted.outcome.reason:
            # Someone deleted the episode's message: start it again rather than lose the alert.
            return await self._start_thread(alert, key)
        if not isinstance(posted.outcome, Delivered):
            return posted.outcome
        edited = await self._call("chat_update", {**body, "ts": parent})
        if not isinstance(edited.outcome, Delivered):
            log.warning(
                "slack: reply for alert %s posted, parent %s not updated: %s",
                alert.alert_id,
                parent,
                edited.outcome,
            )
        return posted.outcome

    async def _call(self, method: str, body: dict[str, Any]) -> Posted:
        now = self._clock()
        try:
            response = await getattr(self._client, method)(channel=self.channel, **body)
        # Anything the client raises is the call's failure: an exception escaping here would
        # retry the whole batch and repeat the messages already posted from it.
        except Exception as exc:
            return Posted(classify_slack_error(exc, now))
        ts = response.get("ts")
        return Posted(Delivered(response.status_code), ts if isinstance(ts, str) else None)

    async def close(self) -> None:
        """The client is injected, so its owner closes it."""


def _rate_limited(outcome: Outcome) -> Retry | None:
    return outcome if isinstance(outcome, Retry) and outcome.status == 429 else None
