"""An alert as an OCSF Detection Finding (class 2004, category Findings), for SIEMs.

OCSF (https://schema.ocsf.io) is what AWS Security Lake, Splunk and others ingest. The
mapping, per attribute of `events/findings/detection_finding.json` (ocsf/ocsf-schema):

- One *finding* per episode: `finding_info.uid` = `episode_id`, so a SIEM that upserts by it
  sees a firing alert open the finding (activity Create), an escalation update it (Update:
  a firing alert whose minute is after the episode's first) and the resolution close it
  (Close, status Resolved). `metadata.uid` = `alert_id` (one per alert, deterministic) and
  `metadata.correlation_uid` = `episode_id`. Group budget alerts each open their period's
  finding (the mapper sees one alert; every alert of a period shares the uid).
- Severity by name: info -> Informational (1), warning -> Medium (3), critical -> Critical
  (5); status firing -> New (1), resolved -> Resolved (4); `confidence_score` = score x 100.
- Times: `time` and `finding_info.created_time` = the alert's event time; `start_time`,
  `end_time` = its window; `finding_info.first_seen_time` = the episode's first minute.
- The identity: `evidences[0].actor.user` (a non-human identity: `type_id` 99 Other, as OCSF
  1.1 has no Service user type; the class's own `actor` belongs to the host profile) and
  `resources[0]` with its team and environment; a group budget's resource is the group, the
  identity flood's the pseudo-identity, and neither has an actor.
- `evidences[0].data` = the alert's evidence as it is; `observables` name the identity and
  the identities and traces the evidence holds; `unmapped` keeps meterguard's own fields.

Attributes are those of OCSF 1.1.0, the first version with Detection Finding, without
profiles: the finding also validates against the later versions (tests/unit/test_ocsf.py).
Null values are left out (OCSF's JSON schemas refuse them). Pure: no I/O, no clock.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import orjson

from meterguard import __version__
from meterguard.models import Alert

AlertFormat = Literal["meterguard", "ocsf"]

OCSF_VERSION = "1.1.0"
CATEGORY_UID, CATEGORY_NAME = 2, "Findings"
CLASS_UID, CLASS_NAME = 2004, "Detection Finding"
PRODUCT = {"name": "meterguard", "vendor_name": "meterguard", "version": __version__}

CREATE, UPDATE, CLOSE = (1, "Create"), (2, "Update"), (3, "Close")
SEVERITY: dict[str, tuple[int, str]] = {
    "info": (1, "Informational"),
    "warning": (3, "Medium"),
    "critical": (5, "Critical"),
}
STATUS: dict[str, tuple[int, str]] = {"firing": (1, "New"), "resolved": (4, "Resolved")}

# analytic.type_id: 1 Rule, 2 Behavioral, 3 Statistical (OCSF 1.1 `analytic` object).
RULE, BEHAVIORAL, STATISTICAL, OTHER = (
    (1, "Rule"),
    (2, "Behavioral"),
    (3, "Statistical"),
    (99, "Other"),
)
ANALYTIC_TYPE: dict[str, tuple[int, str]] = {
    "spike": STATISTICAL,
    "slow_ramp": STATISTICAL,
    "retry_loop": STATISTICAL,
    "identity_flood": STATISTICAL,
    "agent_chain": BEHAVIORAL,
    "drift": BEHAVIORAL,
    "budget": RULE,
    "group_budget": RULE,
}
GROUP_DETECTORS = frozenset({"group_budget", "identity_flood"})  # not one identity's alert

# observable.type_id (OCSF 1.1): 4 User Name, 10 Resource UID, 99 Other.
USER_NAME, RESOURCE_UID, OTHER_VALUE = (4, "User Name"), (10, "Resource UID"), (99, "Other")
# Evidence fields that name an identity or a trace, as observables.
EVIDENCE_OBSERVABLES: dict[str, tuple[int, str]] = {
    "root_identity": USER_NAME,  # agent_chain: the chain's root caller
    "sample": USER_NAME,  # identity_flood: some of the new identities
    "trace_id": OTHER_VALUE,  # agent_chain
}
NON_HUMAN = "Non-human identity"


def detection_finding(alert: Alert) -> dict[str, Any]:
    """The alert as an OCSF Detection Finding (a JSON-ready dict without null values)."""
    activity_id, activity = _activity(alert)
    severity_id, severity = SEVERITY[alert.severity]
    status_id, status = STATUS[alert.status]
    evidence = alert.model_dump(mode="json")["evidence"]
    group = alert.detector in GROUP_DETECTORS
    actor = None if group else {"user": _user(alert)}
    return {
        "activity_id": activity_id,
        "activity_name": activity,
        "category_uid": CATEGORY_UID,
        "category_name": CATEGORY_NAME,
        "class_uid": CLASS_UID,
        "class_name": CLASS_NAME,
        "type_uid": CLASS_UID * 100 + activity_id,
        "type_name": f"{CLASS_NAME}: {activity}",
        "severity_id": severity_id,
        "severity": severity,
        "status_id": status_id,
        "status": status,
        "time": _ms(alert.event_time),
        "start_time": _ms(alert.window_start),
        "end_time": _ms(alert.window_end),
        "timezone_offset": 0,
        "message": alert.summary,
        "confidence_score": round(alert.score * 100),
        "metadata": {
            "version": OCSF_VERSION,
            "product": dict(PRODUCT),
            "uid": alert.alert_id,
            "correlation_uid": alert.episode_id,
            "event_code": f"{alert.detector}.{alert.status}",
            "original_time": alert.event_time.isoformat().replace("+00:00", "Z"),
        },
        "finding_info": _finding_info(alert, evidence),
        "resources": [_resource(alert, evidence)],
        "evidences": [_some(data=evidence, actor=actor)],
        "observables": _observables(alert, evidence, group),
        "unmapped": _some(
            detector=alert.detector,
            severity=alert.severity,
            score=alert.score,
            team=alert.team,
            environment=alert.environment,
            throttle_command_id=alert.throttle_command_id,
        ),
    }


def finding_json(alert: Alert) -> bytes:
    return orjson.dumps(detection_finding(alert))


def _activity(alert: Alert) -> tuple[int, str]:
    if alert.status == "resolved":
        return CLOSE
    minute, start = alert.evidence.get("minute"), alert.evidence.get("episode_start_minute")
    later = isinstance(minute, int) and isinstance(start, int) and minute > start
    return UPDATE if later else CREATE


def _finding_info(alert: Alert, evidence: dict[str, Any]) -> dict[str, Any]:
    start = evidence.get("episode_start_minute")
    first_seen = start * 60_000 if isinstance(start, int) else _ms(alert.window_start)
    analytic_id, analytic = ANALYTIC_TYPE.get(alert.detector, OTHER)
    return {
        "uid": alert.episode_id,
        "title": alert.title,
        "desc": alert.summary,
        "types": [alert.detector],
        "created_time": _ms(alert.event_time),
        "first_seen_time": first_seen,
        "last_seen_time": _ms(alert.window_end),
        "analytic": {
            "uid": f"meterguard.{alert.detector}",
            "name": alert.detector,
            "type_id": analytic_id,
            "type": analytic,
        },
    }


def _user(alert: Alert) -> dict[str, Any]:
    user: dict[str, Any] = {
        "uid": alert.identity,
        "name": alert.identity,
        "type_id": 99,
        "type": NON_HUMAN,
    }
    if alert.team is not None:
        user["groups"] = [{"name": alert.team, "type": "team"}]
    return user


def _resource(alert: Alert, evidence: dict[str, Any]) -> dict[str, Any]:
    labels = [f"environment:{alert.environment}"] if alert.environment is not None else None
    if alert.detector == "group_budget":
        name = str(evidence.get("value") or "(unassigned)")
        kind = str(evidence.get("dimension", "group"))
        return _some(uid=alert.identity, name=name, type=kind, labels=labels)
    kind = "identity namespace" if alert.detector == "identity_flood" else NON_HUMAN
    team = None if alert.team is None else {"name": alert.team, "type": "team"}
    return _some(uid=alert.identity, name=alert.identity, type=kind, group=team, labels=labels)


def _observables(alert: Alert, evidence: dict[str, Any], group: bool) -> list[dict[str, Any]]:
    found = [_observable("resources[0].uid", RESOURCE_UID, alert.identity)]
    if not group:
        found.append(_observable("evidences[0].actor.user.uid", USER_NAME, alert.identity))
    for key, kind in EVIDENCE_OBSERVABLES.items():
        value = evidence.get(key)
        values = value if isinstance(value, list) else [value]
        for item in values:
            if isinstance(item, str) and item:
                found.append(_observable(f"evidences[0].data.{key}", kind, item))
    return found


def _observable(name: str, kind: tuple[int, str], value: str) -> dict[str, Any]:
    return {"name": name, "type_id": kind[0], "type": kind[1], "value": value}


def _some(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


def _ms(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)
