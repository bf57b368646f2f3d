"""The identity registry: who owns an identity, from YAML or CSV, and in which order."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from meterguard.models import MeteringEvent
from meterguard.streams.policy.registry import Registry, attribute, rollup_targets

ROOT = Path(__file__).resolve().parents[2]


def event(identity: str, **fields: str) -> MeteringEvent:
    return MeteringEvent(
        event_id="e1", identity=identity, event_time=datetime(2026, 1, 1, tzinfo=UTC), **fields
    )


def test_the_registry_wins_then_the_event_then_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "registry.yaml"
    path.write_text(
        "identities:\n"
        "  agent-a: {team: payments, owner: ana@example.com}\n"
        "defaults: {business_unit: retail, environment: prod}\n"
    )
    registry = Registry.load(path)
    owner = attribute(event("agent-a", team="rogue", environment="staging"), registry)
    assert (owner.team, owner.owner) == ("payments", "ana@example.com")  # the registry
    assert owner.environment == "staging"  # the event, the registry being silent
    assert owner.business_unit == "retail"  # the defaults
    assert owner.workload == ""  # nobody: unassigned
    assert registry.registered("agent-a") and not registry.registered("stray")


def test_without_a_registry_every_identity_is_registered_and_events_decide() -> None:
    registry = Registry.load(None)
    assert not registry.configured and registry.registered("anything")
    assert attribute(event("x", team="t1"), registry).team == "t1"


def test_csv_registry(tmp_path: Path) -> None:
    path = tmp_path / "registry.csv"
    path.write_text("identity,team,business_unit\nagent-a,payments,retail\nagent-b,search,\n")
    registry = Registry.load(path)
    assert attribute(event("agent-b"), registry).team == "search"
    assert attribute(event("agent-b"), registry).business_unit == ""


@pytest.mark.parametrize(
    ("name", "text", "needle"),
    [
        ("r.csv", "team\npayments\n", "no `identity` column"),
        ("r.csv", "identity,colour\na,red\n", "unknown columns ['colour']"),
        ("r.csv", "identity,team\na,x\na,y\n", "line 3: 'a' is listed twice"),
        ("r.yaml", "identities:\n  a: {tema: x}\n", "identities.a.tema"),
        ("r.yaml", "- a\n", "expected a mapping"),
    ],
)
def test_a_bad_registry_says_what_is_wrong(tmp_path: Path, name: str, text: str, needle: str):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValueError, match="registry file") as caught:
        Registry.load(path)
    assert needle in str(caught.value)


def test_the_example_registry_loads() -> None:
    registry = Registry.load(ROOT / "deploy" / "registry.yaml")
    assert registry.configured


def test_events_of_one_identity_share_a_group_per_distinct_owner() -> None:
    registry = Registry()
    events = [event("a", team="t1"), event("a", team="t2"), event("a", team="t1")]
    groups, of_event = rollup_targets(events, registry)
    assert of_event == [0, 1, 0]
    assert groups[0] == (
        ("team", "t1"),
        ("business_unit", ""),
        ("environment", ""),
        ("model", ""),
        ("identity", "a"),
    )
