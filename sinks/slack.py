"""Slack incoming-webhook sink: one message per episode, a digest for a burst.

People read Slack, so a burst must not become a wall of messages: the alerts of one episode
(one `Alert.episode_id`: identity + detector + episode start) in one delivery batch become one
message showing the latest state, and more than `digest_threshold` episodes in one batch become
a single digest. The outbox holds Slack items for `slack_group_seconds` first, so a burst lands
in one batch.

As in slack_format: identities and summaries are attacker-controlled, so they only ever go
into plain_text objects (never parsed) and the escaped fallback text.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from meterguard.models import Alert, utc_now
from meterguard.sinks.base import Failed, Outcome, Retry, classify_response
from meterguard.sinks.routing import SEVERITY_RANK
from meterguard.sinks.slack_format import (
    MAX_TEXT,
    SEVERITY_MARK,
    alert_message,
    escape_mrkdwn,
    plain_text,
)

DIGEST_TOP = 10  # lines a digest lists before "and N more"
MAX_LINE = 240


@dataclass(frozen=True)
class Message:
    body: dict[str, Any]
    carries: tuple[int, ...]  # indices (in the delivered batch) of the alerts it reports


def latest_per_episode(alerts: Sequence[Alert]) -> list[tuple[Alert, tuple[int, ...]]]:
    """(latest alert, indices of all its episode's alerts), episodes in first-seen order."""
    groups: dict[str, list[int]] = {}
    for i, alert in enumerate(alerts):
        groups.setdefault(alert.episode_id, []).append(i)

    def recency(i: int) -> tuple[datetime, bool, int, int]:
        a = alerts[i]
        return a.event_time, a.status == "resolved", SEVERITY_RANK[a.severity], i

    return [(alerts[max(idx, key=recency)], tuple(idx)) for idx in groups.values()]


def plan_messages(
    alerts: Sequence[Alert], digest_threshold: int, dashboard_url: str | None = None
) -> list[Message]:
    episodes = latest_per_episode(alerts)
    if len(episodes) > digest_threshold:
        every = tuple(range(len(alerts)))
        return [Message(digest_message([a for a, _ in episodes], dashboard_url), every)]
    return [Message(alert_message(a, dashboard_url), idx) for a, idx in episodes]


def _line(alert: Alert) -> str:
    state = "resolved" if alert.status == "resolved" else alert.severity
    mark = SEVERITY_MARK.get(alert.severity, "⚪")
    line = f"{mark} {state.upper()} · {alert.detector.replace('_', ' ')} · {alert.summary}"
    return line if len(line) <= MAX_LINE else line[: MAX_LINE - 1] + "…"


def digest_message(latest: Sequence[Alert], dashboard_url: str | None = None) -> dict[str, Any]:
    """One message for many episodes: the most severe first, then "and N more"."""

    def urgency(a: Alert) -> tuple[bool, int, float]:
        return a.status == "firing", SEVERITY_RANK[a.severity], a.score

    ranked = sorted(latest, key=urgency, reverse=True)
    shown, rest = ranked[:DIGEST_TOP], len(ranked) - DIGEST_TOP
    counts = {s: sum(1 for a in latest if _state(a) == s) for s in ("critical", "warning")}
    resolved = sum(1 for a in latest if a.status == "resolved")
    headline = (
        f"{len(latest)} meterguard alerts: {counts['critical']} critical, "
        f"{counts['warning']} warning, {resolved} resolved"
    )
    listing = "\n".join(_line(a) for a in shown)
    if rest > 0:
        listing += f"\nand {rest} more"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": plain_text(headline[:150])},
        {"type": "section", "text": plain_text(listing)},
    ]
    if dashboard_url:
        button = {"type": "button", "text": plain_text("Open meterguard"), "url": dashboard_url}
        blocks.append({"type": "actions", "elements": [button]})
    return {"text": escape_mrkdwn(f"{headline}\n{listing}")[:MAX_TEXT], "blocks": blocks}


def _state(alert: Alert) -> str:
    return "resolved" if alert.status == "resolved" else alert.severity


class SlackSink:
    kind = "slack"

    def __init__(
        self,
        url: str,
        client: httpx.AsyncClient,
        timeout_s: float = 5.0,
        dashboard_url: str | None = None,
        digest_threshold: int = 5,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.url = url
        self._client = client
        self._timeout = httpx.Timeout(timeout_s)
        self._dashboard_url = dashboard_url
        self._digest_threshold = digest_threshold
        self._clock = clock

    async def deliver(self, alerts: Sequence[Alert]) -> list[Outcome]:
        outcomes: list[Outcome | None] = [None] * len(alerts)
        limited: Retry | None = None
        # One at a time: Slack rate-limits per webhook (about one message a second).
        for message in plan_messages(alerts, self._digest_threshold, self._dashboard_url):
            # After a 429 the rest of the batch would be refused too: wait with it.
            outcome = limited or await self._post(message.body)
            if isinstance(outcome, Retry) and outcome.status == 429:
                limited = outcome
            for i in message.carries:
                outcomes[i] = outcome
        return [o if o is not None else Retry("not planned") for o in outcomes]

    async def _post(self, body: dict[str, Any]) -> Outcome:
        now = self._clock()
        try:
            response = await self._client.post(self.url, json=body, timeout=self._timeout)
        except httpx.TransportError as exc:
            return Retry(f"network error: {type(exc).__name__}")
        except httpx.HTTPError as exc:
            return Failed(f"request error: {type(exc).__name__}")
        return classify_response(response.status_code, response.headers, now)

    async def close(self) -> None:
        """The client is injected, so its owner closes it."""
