"""Alert.episode_id: set by the policy, derived the same way for alerts stored without it."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import orjson

from meterguard.models import Alert, episode_id_for, episode_id_of
from meterguard.sinks.slack import latest_per_episode
from meterguard.sinks.slack_api import thread_key
from meterguard.streams.web import dashboard_view as view
from tests.support.alerts import make_alert

START = 29_460_060


def alert_doc(alert_id: str = "a-1", start: int | None = START, **fields: Any) -> dict[str, Any]:
    """An alert as a producer from before `episode_id` wrote it (2026-01-05 09:00 UTC)."""
    opened = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    doc = make_alert(alert_id=alert_id, episode=start, start=opened).model_dump(mode="json")
    doc.pop("episode_id", None)
    return {**doc, **fields}


def test_an_alert_without_episode_id_derives_it_from_identity_detector_and_start() -> None:
    alert = Alert.model_validate_json(orjson.dumps(alert_doc()))
    assert alert.episode_id == episode_id_for("svc-billing", "spike", START)
    assert alert.model_dump(mode="json")["episode_id"] == alert.episode_id
    later = Alert.model_validate(alert_doc("a-2", status="resolved", severity="info"))
    assert later.episode_id == alert.episode_id


def test_an_episode_id_in_the_json_is_kept() -> None:
    alert = Alert.model_validate(alert_doc(episode_id="given"))
    assert alert.episode_id == "given"
    assert Alert.model_validate_json(alert.model_dump_json()) == alert


def test_an_alert_without_an_episode_start_is_an_episode_of_its_own() -> None:
    x, y = Alert.model_validate(alert_doc("x", None)), Alert.model_validate(alert_doc("y", None))
    assert x.episode_id != y.episode_id
    assert Alert.model_validate(alert_doc("x", None)).episode_id == x.episode_id
    assert episode_id_of(alert_doc("x", None)) == x.episode_id


def test_slack_thread_keys_stored_before_episode_id_still_match() -> None:
    alert = Alert.model_validate(alert_doc())
    raw = "\x1f".join(("svc-billing", "spike", str(START)))  # the key material as it was
    assert thread_key(alert) == hashlib.sha256(raw.encode()).hexdigest()[:32]


def test_old_and_new_alerts_of_one_episode_group_together() -> None:
    old = Alert.model_validate(alert_doc("old"))
    new = Alert.model_validate(
        alert_doc(
            "new",
            status="resolved",
            severity="info",
            event_time="2026-01-05T09:09:01Z",
            episode_id=episode_id_for("svc-billing", "spike", START),
        )
    )
    [(latest, carries)] = latest_per_episode([old, new])
    assert latest is new and carries == (0, 1)
    docs = [new.model_dump(mode="json"), alert_doc("old")]  # newest first, one without the id
    assert view.firing_alerts(docs) == []
