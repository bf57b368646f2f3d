"""Cold start from peers, without Redis: the yardstick (runtime/peer_rates.py), the packed
levels and the group key (store/peers.py, store/keys.py), the spike detector's levels."""

from __future__ import annotations

import numpy as np
import pytest

from meterguard.detectors.features import IdentityContext, MinuteWindow
from meterguard.detectors.spike import SpikeDetector
from meterguard.streams.policy.episodes import Attribution
from meterguard.streams.runtime.peer_rates import (
    MIN_PEERS,
    QUANTILE,
    REPORT_EVERY_MINUTES,
    peer_group,
    peer_rates,
    report_due,
)
from meterguard.streams.store.keys import KeyLayout, peer_group_tag
from meterguard.streams.store.peers import LEVEL_FIELDS, PeerGroup, PeerLevels

T0 = 29_000_040  # an epoch minute at :00 of the hour


def levels(calls: float, phi: float = 1.0, tokens_per_call: float = 500.0) -> PeerLevels:
    rates = {
        "calls": calls,
        "tokens": calls * tokens_per_call,
        "cost_usd": calls * 0.0004,
        "calls_phi": phi,
        "tokens_phi": 2 * tokens_per_call,
        "cost_usd_phi": 0.0008,
    }
    return PeerLevels(T0, rates)


def test_the_yardstick_is_the_busiest_peers_level_and_dispersion() -> None:
    peers = {f"svc-{i}": levels(calls=i, phi=1.0 + i / 10) for i in range(1, 11)}
    rates = peer_rates(peers, "newcomer")
    assert rates is not None
    assert QUANTILE == 1.0
    assert rates["calls"] == pytest.approx(10)
    assert rates["calls_phi"] == pytest.approx(2.0)
    assert rates["tokens"] == pytest.approx(10 * 500)
    assert rates["cost_usd"] == pytest.approx(10 * 0.0004)
    assert rates["tokens_phi"] == pytest.approx(1000)
    # Not the median: one big newcomer is judged against the busy end of its team.
    assert rates["calls"] > float(np.median([lv.rates["calls"] for lv in peers.values()]))


def test_fewer_than_three_peers_give_no_yardstick() -> None:
    assert MIN_PEERS == 3
    assert peer_rates({}, "new") is None
    assert peer_rates({"a": levels(5), "b": levels(6)}, "new") is None
    assert peer_rates({"a": levels(5), "b": levels(6), "c": levels(7)}, "new") is not None


def test_the_identity_itself_is_not_its_own_peer() -> None:
    peers = {"a": levels(5), "b": levels(5), "new": levels(500)}
    assert peer_rates(peers, "new") is None  # two others: too few
    peers["c"] = levels(5)
    rates = peer_rates(peers, "new")
    assert rates is not None and rates["calls"] == pytest.approx(5.0)


def test_a_metric_the_peers_never_use_has_no_yardstick() -> None:
    peers = {n: levels(5, tokens_per_call=0.0) for n in "abc"}
    rates = peer_rates(peers, "new")
    assert rates is not None
    assert "tokens" not in rates and "tokens_phi" not in rates
    assert rates["calls"] == pytest.approx(5.0)


def test_levels_are_reported_once_per_ten_minutes_of_event_time_whatever_the_batches() -> None:
    n = REPORT_EVERY_MINUTES
    one_by_one = [m for m in range(T0, T0 + 60) if report_due(m - 1, m)]
    assert one_by_one == list(range(T0, T0 + 60, n))  # T0 is a multiple of 60
    assert report_due(T0 + 1, T0 + n + 3)  # a batch spanning a boundary reports once
    assert not report_due(T0, T0 + n - 1)  # inside one block: nothing new to say
    assert report_due(T0 + 5, T0 + 500)  # skipped minutes do not hide a boundary


def test_peer_group_is_team_and_environment_and_needs_one_of_them() -> None:
    assert peer_group(Attribution()) is None
    assert peer_group(Attribution(team="ml")) == PeerGroup("ml", "")
    assert peer_group(Attribution(environment="prod")) == PeerGroup("", "prod")
    assert peer_group(Attribution("ml", "prod")) == PeerGroup("ml", "prod")


def test_packed_levels_round_trip_and_garbage_is_unreadable() -> None:
    original = levels(5.25, phi=1.5)
    back = PeerLevels.unpack(original.pack().encode())
    assert back is not None and back.minute == T0
    assert back.rates == pytest.approx(original.rates, rel=1e-5)
    assert set(back.rates) == set(LEVEL_FIELDS)
    for garbage in ("", "1,2,3", "x,1,1,1,1,1,1", "1,nan,1,1,1,1,1", "1,-1,1,1,1,1,1"):
        assert PeerLevels.unpack(garbage) is None


@pytest.mark.parametrize(
    ("one", "other"),
    [
        (("a|b", "c"), ("a", "b|c")),  # the separator inside a name
        (("a%7Cb", "c"), ("a|b", "c")),  # an already-encoded name
        (("a", ""), ("", "a")),  # a missing part
        (("a}b", "c"), ("a", "c")),  # a hash tag's end inside a name
    ],
)
def test_peer_keys_of_different_groups_never_collide(
    one: tuple[str, str], other: tuple[str, str]
) -> None:
    keys = KeyLayout("mg")
    assert keys.peers_key(*one) != keys.peers_key(*other)
    for team, environment in (one, other):
        key = keys.peers_key(team, environment)
        # The whole group is the hash tag: one `{`, one `}`, one separator inside.
        tag = key[key.index("{") + 1 : key.index("}")]
        assert key == f"mg:peers:{{{tag}}}" and tag == peer_group_tag(team, environment)
        assert tag.count("|") == 1 and "{" not in tag


def _minutes(calls: int, count: int, start: int = T0) -> list[MinuteWindow]:
    return [
        MinuteWindow(start + i, calls, calls * 400, calls * 100, 0, calls * 400_000)
        for i in range(count)
    ]


def test_a_warm_spike_detectors_levels_are_a_newcomers_yardstick() -> None:
    peers = {}
    for i, rate in enumerate((4, 5, 6)):
        detector = SpikeDetector()
        for w in _minutes(rate, 90):
            detector.score_one(w)
            detector.learn_one(w)
        found = detector.levels()
        assert found["calls"] == pytest.approx(rate, rel=0.01)
        assert found["calls_phi"] == pytest.approx(1.0)  # even arrivals: never below Poisson
        assert found["tokens"] == pytest.approx(rate * 500, rel=0.01)
        assert found["tokens_phi"] == pytest.approx(2 * 500)  # tokens arrive in per-call lumps
        assert detector.baseline("calls") == found["calls"]
        peers[f"svc-{i}"] = PeerLevels(T0 + 90, found)
    rates = peer_rates(peers, "newcomer")
    assert rates is not None

    def first_minutes(calls: int) -> float:
        newcomer = SpikeDetector()
        newcomer.configure(IdentityContext(peer_rates=rates))
        scores = []
        for w in _minutes(calls, 3, T0 + 100):  # a newcomer's first minute alone never is
            scores.append(newcomer.score_one(w).score)
            newcomer.learn_one(w)
        return max(scores)

    assert first_minutes(500) >= 0.9
    assert first_minutes(5) == pytest.approx(0.0, abs=0.05)
