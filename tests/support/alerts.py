"""`make_alert`: the one `meterguard.models.Alert` factory of the tests.

Every field has a default; keyword arguments override any field of the alert by name (and
`evidence` replaces the whole evidence). Fields the caller does not name are left to the
model, so fields `Alert` computes when absent stay computed.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from meterguard.models import Alert

T = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
# An identity that would ping the channel and link away if Slack parsed it.
HOSTILE = "<!channel> <https://evil|click> *bold*"


def make_alert(
    identity: str = "svc-billing",
    detector: str = "spike",
    *,
    alert_id: str | None = None,
    severity: str = "critical",
    status: str = "firing",
    episode: int | None = 100,
    start: datetime = T,
    minute: float = 0,
    **fields: Any,
) -> Alert:
    """An alert on the minute `minute` minutes after `start`, of the episode that started at
    epoch minute `episode` (None: no episode start in the evidence), received a second after
    the minute closed."""
    window_start = start + timedelta(minutes=minute)
    evidence: dict[str, Any] = {"calls": 412}
    if episode is not None:
        evidence = {"episode_start_minute": episode, **evidence}
    return Alert.model_validate(
        {
            "alert_id": alert_id or f"{identity}-{detector}-{episode}-{status}-{severity}",
            "identity": identity,
            "detector": detector,
            "severity": severity,
            "score": 0.93,
            "status": status,
            "title": f"{detector} on {identity}",
            "summary": f"{identity}: calls 412/min vs baseline 9 (46x)",
            "evidence": evidence,
            "window_start": window_start,
            "window_end": window_start + timedelta(minutes=1),
            "event_time": window_start + timedelta(seconds=61),
            "team": "billing",
            "environment": "prod",
            **fields,
        }
    )
