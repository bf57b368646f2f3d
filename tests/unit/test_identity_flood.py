"""The identity-flood detector's pure rules (detectors/identity_flood.py)."""

from __future__ import annotations

from meterguard.detectors.identity_flood import (
    FLOOD_IDENTITY,
    FloodParams,
    flood_alert,
    flood_bar,
    flood_starts,
)

PARAMS = FloodParams(min_new_per_minute=100, ratio=10.0, history_minutes=60)
QUIET = [2] * 61  # two new identities a minute for the hour before


def test_the_bar_is_the_floor_for_a_quiet_namespace_and_its_history_for_a_busy_one():
    assert flood_bar([], PARAMS) == 100
    assert flood_bar([2] * 60, PARAMS) == 100
    busy = [30] * 54 + [0] * 6  # 90th percentile 30
    assert flood_bar(busy, PARAMS) == 300
    # A few flood minutes in the hour do not lift the bar (a second wave is still seen).
    assert flood_bar([2] * 55 + [5000] * 5, PARAMS) == 100


def test_a_minute_pushed_over_its_bar_starts_a_flood_once():
    assert flood_starts({500: (40, 150)}, {500: QUIET}, PARAMS) == [(500, 150, 100.0)]
    # Already over before this batch: it fired then.
    assert flood_starts({500: (120, 150)}, {500: QUIET}, PARAMS) == []
    # Still under.
    assert flood_starts({500: (40, 99)}, {500: QUIET}, PARAMS) == []
    # The minute before was over its own bar: the same flood, not a new one.
    assert flood_starts({501: (40, 150)}, {501: [*QUIET[1:], 5000]}, PARAMS) == []
    # A busy namespace's usual minute (30) needs ten times that.
    busy = [30] * 61
    assert flood_starts({500: (0, 250)}, {500: busy}, PARAMS) == []
    assert flood_starts({500: (0, 300)}, {500: busy}, PARAMS) == [(500, 300, 300.0)]


def test_the_alert_names_the_flood_not_an_identity_and_is_the_same_for_the_same_minute():
    newcomers = [(f"minted-{n}", "team-x" if n % 4 else None) for n in range(40)]
    alert = flood_alert(29_000_000, 1500, 100.0, newcomers)
    again = flood_alert(29_000_000, 1700, 100.0, newcomers[:5])
    assert alert.alert_id == again.alert_id
    assert alert.identity == FLOOD_IDENTITY and alert.detector == "identity_flood"
    assert alert.severity == "critical"  # 15 times the bar
    assert flood_alert(29_000_000, 150, 100.0, newcomers).severity == "warning"
    assert len(alert.evidence["sample"]) == 10
    assert alert.evidence["top_teams"][0] == {"team": "team-x", "new_identities": 30}
    assert 0.5 < alert.score <= 1
