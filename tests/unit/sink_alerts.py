"""Alerts for the sink tests (shared helper, not a test module)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from meterguard.models import Alert

T = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
HOSTILE = "<!channel> <https://evil|click> *bold*"


def make_alert(
    identity: str = "svc-billing",
    detector: str = "spike",
    *,
    alert_id: str | None = None,
    severity: str = "critical",
    status: str = "firing",
    episode: int = 100,
    minute: int = 0,
    **extra: Any,
) -> Alert:
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
            "evidence": {"episode_start_minute": episode, "calls": 412},
            "window_start": T + timedelta(minutes=minute),
            "window_end": T + timedelta(minutes=minute + 1),
            "event_time": T + timedelta(minutes=minute, seconds=61),
            "team": "billing",
            "environment": "prod",
            **extra,
        }
    )
