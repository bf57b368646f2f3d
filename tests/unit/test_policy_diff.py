"""The policy what-if's comparison (streams/offline/policy_diff.py) on hand-made alerts and
commands: matching keys, kinds, moved episodes, outcomes, bounds, JSON and tables."""

from __future__ import annotations

from datetime import timedelta

import orjson
from rich.console import Console

from meterguard.models import Alert, ThrottleCommand, ThrottleLimits
from meterguard.streams.offline.policy_diff import MAX_EXAMPLES, RunOutput, diff_runs
from meterguard.streams.offline.policy_diff_view import render
from tests.support.alerts import T, make_alert

T_MINUTE = int(T.timestamp()) // 60


def alert(
    identity: str = "agent-a",
    *,
    status: str = "firing",
    severity: str = "warning",
    start: int = 0,
    minute: float | None = None,
    detector: str = "spike",
    environment: str = "prod",
) -> Alert:
    """An alert of the episode that opened `start` minutes after T, on minute `minute`
    (default: the episode's first); ids as the policy makes them (one per key)."""
    at = start if minute is None else minute
    return make_alert(
        identity,
        detector,
        alert_id=f"{identity}-{detector}-{start}-{status}-{severity}",
        severity=severity,
        status=status,
        episode=T_MINUTE + start,
        minute=at,
        environment=environment,
    )


def command(of: Alert, action: str = "throttle", at: float = 0, rpm: int = 20) -> ThrottleCommand:
    issued = T + timedelta(minutes=at)
    return ThrottleCommand(
        command_id=f"{of.alert_id}-{action}-{at}",
        identity=of.identity,
        action=action,
        limits=ThrottleLimits(requests_per_minute=rpm, tokens_per_minute=10_000),
        reason="calls 412/min vs baseline 9",
        alert_id=of.alert_id,
        issued_at=issued,
        expires_at=issued + timedelta(minutes=15),
        version=int(issued.timestamp() * 1000),
    )


def run(*alerts: Alert, commands: tuple[ThrottleCommand, ...] = ()) -> RunOutput:
    return RunOutput(list(alerts), list(commands))


def rows(groups) -> dict[tuple[str, str, str, str], tuple[int, int, int]]:
    return {
        (g.detector, g.environment, g.kind, g.severity): (g.appeared, g.disappeared, g.changed)
        for g in groups
    }


def episode_with_throttle(identity: str = "agent-a") -> tuple[list[Alert], list[ThrottleCommand]]:
    """warning at 0, escalation at 2 (throttled), resolved at 9 (released)."""
    warn = alert(identity)
    crit = alert(identity, severity="critical", minute=2)
    done = alert(identity, status="resolved", severity="info", minute=9)
    return [warn, crit, done], [command(crit, at=3), command(crit, "release", at=10)]


def test_the_same_output_under_both_policies_is_no_difference():
    alerts, commands = episode_with_throttle()
    same = run(*alerts, commands=tuple(commands))
    diff = diff_runs(same, same)
    assert diff.alerts == [] and diff.commands == [] and diff.episode_changes == []
    assert diff.matched == {"alerts": 3, "commands": 2, "episodes": 1}
    assert diff.episodes == {"moved": 0, "changed": 0, "only_current": 0, "only_candidate": 0}
    assert diff.current == diff.candidate
    assert diff.current.alerts == {"firing": 1, "escalation": 1, "resolution": 1}
    assert diff.current.commands == {"throttle": 1, "block": 0, "release": 1}


def test_alerts_match_on_identity_detector_episode_status_and_severity():
    current = run(alert("a"), alert("b"), alert("c", detector="drift"), alert("d"))
    candidate = run(
        alert("a"),  # the same
        alert("b", start=1),  # another episode (opened a minute later)
        alert("c", detector="spike"),  # another detector
        alert("d", severity="critical"),  # another severity: another alert
    )
    diff = diff_runs(current, candidate)
    assert diff.matched["alerts"] == 1
    assert rows(diff.alerts) == {
        ("drift", "prod", "firing", "warning"): (0, 1, 0),
        ("spike", "prod", "firing", "critical"): (1, 0, 0),
        ("spike", "prod", "firing", "warning"): (2, 2, 0),
    }
    spike_warning = next(g for g in diff.alerts if (g.detector, g.severity) == ("spike", "warning"))
    assert spike_warning.examples == {
        "appeared": ["b", "c"],
        "disappeared": ["b", "d"],
        "changed": [],
    }


def test_critical_after_a_warning_is_an_escalation_and_alone_a_firing():
    current = run(alert(), alert(severity="critical", minute=3))
    candidate = run(alert(severity="critical"))  # critical at once (a lower critical_at)
    diff = diff_runs(current, candidate)
    assert diff.current.alerts == {"firing": 1, "escalation": 1, "resolution": 0}
    assert diff.candidate.alerts == {"firing": 1, "escalation": 0, "resolution": 0}
    # The critical alert is the same key in both runs, at another minute: retimed, not new.
    assert rows(diff.alerts) == {
        ("spike", "prod", "firing", "critical"): (0, 0, 1),
        ("spike", "prod", "firing", "warning"): (0, 1, 0),
    }
    assert diff.episode_changes == []  # the same episode, critical either way
    assert diff.episodes["changed"] == 0


def test_a_later_resolution_is_retimed_not_a_new_alert():
    current = run(alert(), alert(status="resolved", severity="info", minute=6))
    candidate = run(alert(), alert(status="resolved", severity="info", minute=11))
    diff = diff_runs(current, candidate)
    assert rows(diff.alerts) == {("spike", "prod", "resolution", "info"): (0, 0, 1)}
    assert diff.alerts[0].examples["changed"] == ["agent-a"]
    assert diff.episode_changes == []  # same start, same outcome


def test_an_episode_opened_at_another_minute_has_moved():
    alerts, commands = episode_with_throttle()
    later = [
        alert(severity="critical", start=2),
        alert(status="resolved", severity="info", start=2, minute=9),
    ]
    diff = diff_runs(run(*alerts, commands=tuple(commands)), run(*later))
    assert diff.episodes == {"moved": 1, "changed": 1, "only_current": 0, "only_candidate": 0}
    assert diff.matched["episodes"] == 0
    (change,) = diff.episode_changes
    assert change.moved and change.examples == ["agent-a (+2 min)"]
    assert change.severity == ("critical", "critical") and change.action == ("throttle", "none")
    # Alerts still follow the key: the old episode's go, the new one's come.
    assert sum(g.disappeared for g in diff.alerts) == 3
    assert sum(g.appeared for g in diff.alerts) == 2


def test_episodes_that_do_not_overlap_are_not_moved():
    current = run(alert(), alert(status="resolved", severity="info", minute=6))
    candidate = run(alert(start=20), alert("agent-b"))
    diff = diff_runs(current, candidate)
    assert diff.episodes == {"moved": 0, "changed": 0, "only_current": 1, "only_candidate": 2}


def test_an_unresolved_episode_lasts_to_the_end_of_the_run():
    diff = diff_runs(run(alert()), run(alert(start=30)))
    assert diff.episodes["moved"] == 1
    assert diff.episode_changes[0].examples == ["agent-a (+30 min)"]


def test_throttles_that_disappear_and_appear_are_counted_per_environment():
    prod, prod_commands = episode_with_throttle("agent-prod")
    staging = [alert("agent-stage", environment="staging", severity="critical")]
    staging_commands = [command(staging[0], at=1)]
    current = run(*prod, *staging, commands=tuple(prod_commands))
    candidate = run(*prod, *staging, commands=tuple(staging_commands))
    diff = diff_runs(current, candidate)
    assert diff.alerts == []
    assert rows(diff.commands) == {
        ("spike", "prod", "throttle", "critical"): (0, 1, 0),
        ("spike", "prod", "release", "critical"): (0, 1, 0),
        ("spike", "staging", "throttle", "critical"): (1, 0, 0),
    }
    assert [g.kind for g in diff.commands] == ["throttle", "release", "throttle"]
    changes = {(c.environment, c.action): c.examples for c in diff.episode_changes}
    assert changes == {
        ("prod", ("throttle", "none")): ["agent-prod"],
        ("staging", ("none", "throttle")): ["agent-stage"],
    }
    assert diff.episodes["changed"] == 2


def test_a_command_with_other_limits_is_changed_and_a_block_beats_a_throttle():
    fired = alert(severity="critical")
    current = run(fired, commands=(command(fired, rpm=20),))
    candidate = run(fired, commands=(command(fired, rpm=40), command(fired, "block", at=1)))
    diff = diff_runs(current, candidate)
    assert rows(diff.commands) == {
        ("spike", "prod", "throttle", "critical"): (0, 0, 1),
        ("spike", "prod", "block", "critical"): (1, 0, 0),
    }
    assert diff.episode_changes[0].action == ("throttle", "block")


def test_a_command_whose_alert_is_not_in_the_run_still_counts():
    orphan = command(alert("agent-x"), "block")
    diff = diff_runs(run(), run(commands=(orphan,)))
    assert rows(diff.commands) == {("?", "-", "block", "-"): (1, 0, 0)}
    assert diff.candidate.episodes == 0


def test_examples_are_bounded_and_distinct():
    many = [alert(f"agent-{i}", start=k) for i in range(MAX_EXAMPLES + 3) for k in (0, 20)]
    diff = diff_runs(run(*many), run())
    (group,) = diff.alerts
    assert group.disappeared == 2 * (MAX_EXAMPLES + 3)
    assert group.examples["disappeared"] == [f"agent-{i}" for i in range(MAX_EXAMPLES)]
    assert len(diff_runs(run(*many), run(), max_examples=2).alerts[0].examples["disappeared"]) == 2


def test_an_alert_without_episode_evidence_is_an_episode_of_its_own():
    legacy = make_alert("agent-old", episode=None, alert_id="old-1")
    diff = diff_runs(run(legacy), run(legacy))
    assert diff.matched == {"alerts": 1, "commands": 0, "episodes": 1}


def test_json_and_tables():
    alerts, commands = episode_with_throttle("[red]agent-a")
    diff = diff_runs(run(*alerts, commands=tuple(commands)), run(*alerts))
    doc = orjson.loads(orjson.dumps(diff.to_dict()))
    assert doc["changes"] == {
        "alerts": {"appeared": 0, "disappeared": 0, "changed": 0},
        "commands": {"appeared": 0, "disappeared": 2, "changed": 0},
    }
    assert doc["episode_changes"][0]["action"] == ["throttle", "none"]
    assert doc["commands"][0]["examples"]["disappeared"] == ["[red]agent-a"]
    console = Console(record=True, width=160)
    render(diff, console, "current.yaml", "candidate.yaml")
    text = console.export_text()
    assert "candidate: candidate.yaml" in text and "Alerts with candidate.yaml" in text
    assert "− [red]agent-a" in text  # an identity is text, not markup
    assert "throttle → none" in text
