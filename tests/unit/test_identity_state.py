"""Per-identity checkpoint as bytes (streams/runtime/identity_state.py)."""

from __future__ import annotations

import zlib

import numpy as np
import orjson
import pytest

from meterguard.detectors.base import Verdict
from meterguard.detectors.features import MinuteWindow
from meterguard.detectors.registry import REGISTRY
from meterguard.streams.policy.config import PolicyConfig
from meterguard.streams.policy.episodes import Attribution, ScoredMinute, decide
from meterguard.streams.runtime.identity_state import STATE_VERSION, IdentityState
from meterguard.timeutil import MINUTE_MS

T0 = 29_000_040
POLICY = PolicyConfig()


def minutes(rate: float, count: int, seed: int, start: int = T0) -> list[MinuteWindow]:
    rng = np.random.default_rng(seed)
    return [
        MinuteWindow(start + i, calls=int(c), input_tokens=int(c) * 600, output_tokens=int(c) * 200)
        for i, c in enumerate(rng.poisson(rate, count))
    ]


def feed(state: IdentityState, windows: list[MinuteWindow]) -> list[tuple[str, Verdict, list]]:
    """What the pipeline does per final minute: filter -> last score -> policy -> episode."""
    out = []
    for w in windows:
        baseline = state.baseline()
        for name, runner in state.filters.items():
            verdict = runner.process(w)
            state.last_scores[name] = round(verdict.score, 6)
            trigger = (w.minute + 1) * MINUTE_MS
            minute = ScoredMinute("svc-a", name, w, verdict, state.who, baseline, trigger, trigger)
            decision = decide(POLICY, minute, state.episodes.get(name))
            state.episodes[name] = decision.episode
            out.append((name, verdict, [*decision.alerts, *decision.commands]))
    return out


def busy_state() -> IdentityState:
    """Two quiet hours, then a runaway still firing: an open, throttled episode."""
    state = IdentityState(who=Attribution(team="payments", environment="prod"))
    feed(state, minutes(3, 120, seed=1))
    feed(state, [MinuteWindow(T0 + 120 + i, calls=300, input_tokens=240_000) for i in range(3)])
    state.skipped_minutes = 7
    return state


def round_trip(state: IdentityState) -> IdentityState:
    return IdentityState.from_bytes(state.to_bytes())


def test_fresh_state_has_every_registered_detector_and_no_history() -> None:
    state = IdentityState()
    assert set(state.filters) == set(REGISTRY)
    assert state.last_scores == dict.fromkeys(REGISTRY, 0.0)
    assert state.episodes == {}
    assert state.who == Attribution()
    assert state.skipped_minutes == 0


@pytest.mark.parametrize("blob", [None, b""])
def test_missing_checkpoint_is_a_fresh_state(blob: bytes | None) -> None:
    assert IdentityState.from_bytes(blob).to_bytes() == IdentityState().to_bytes()


def test_checkpoint_is_versioned_json() -> None:
    doc = orjson.loads(zlib.decompress(busy_state().to_bytes()))
    assert doc["v"] == STATE_VERSION
    assert set(doc) >= {"filters", "episodes", "last_scores", "who", "skipped_minutes"}


def test_round_trip_preserves_scores_episodes_and_attribution() -> None:
    state = busy_state()
    assert state.episodes["spike"] is not None  # the fixture has an open episode
    assert state.episodes["spike"].command is not None
    assert state.last_scores["spike"] >= 0.8
    copy = round_trip(state)
    assert copy.last_scores == state.last_scores
    assert copy.episodes == state.episodes
    assert copy.who == Attribution(team="payments", environment="prod")
    assert copy.skipped_minutes == 7
    assert copy.baseline() == state.baseline()
    assert copy.to_bytes() == state.to_bytes()


def test_round_trip_preserves_the_filter_refusal_streak() -> None:
    state = busy_state()
    assert state.filters["spike"].refused_in_a_row == 3
    assert round_trip(state).filters["spike"].refused_in_a_row == 3


def test_round_trip_continues_exactly_like_an_uninterrupted_identity() -> None:
    uninterrupted, resumed = busy_state(), round_trip(busy_state())
    tail = [MinuteWindow(T0 + 123 + i, calls=300, input_tokens=240_000) for i in range(20)]
    tail += minutes(3, 40, seed=2, start=T0 + 143)
    expected = feed(uninterrupted, tail)
    got = feed(resumed, tail)
    assert [(n, v.score) for n, v, _ in got] == [(n, v.score) for n, v, _ in expected]
    assert [x for _, _, x in got] == [x for _, _, x in expected]
    assert any(x for _, _, x in expected)  # renewals and the release were compared
    assert resumed.to_bytes() == uninterrupted.to_bytes()


def test_round_trip_of_an_identity_with_no_episode() -> None:
    state = IdentityState()
    feed(state, minutes(5, 30, seed=3))
    assert all(e is None for e in state.episodes.values())
    copy = round_trip(state)
    assert copy.episodes == state.episodes
    assert copy.to_bytes() == state.to_bytes()


@pytest.mark.parametrize("version", [0, 2, 99, "1", None])
def test_unknown_state_version_restarts_cleanly(version: object) -> None:
    doc = orjson.loads(zlib.decompress(busy_state().to_bytes()))
    doc["v"] = version
    restarted = IdentityState.from_bytes(orjson.dumps(doc))
    assert restarted.to_bytes() == IdentityState().to_bytes()
    assert restarted.episodes == {}


def test_state_without_a_version_restarts_cleanly() -> None:
    doc = orjson.loads(zlib.decompress(busy_state().to_bytes()))
    del doc["v"]
    restarted = IdentityState.from_bytes(orjson.dumps(doc))
    assert restarted.to_bytes() == IdentityState().to_bytes()


def test_future_format_with_other_keys_restarts_cleanly() -> None:
    blob = orjson.dumps({"v": STATE_VERSION + 1, "models": [1, 2, 3]})
    assert IdentityState.from_bytes(blob).to_bytes() == IdentityState().to_bytes()


def test_checkpoint_missing_a_detector_starts_that_detector_fresh() -> None:
    doc = orjson.loads(zlib.decompress(busy_state().to_bytes()))
    doc["filters"] = {}
    state = IdentityState.from_bytes(orjson.dumps(doc))
    assert set(state.filters) == set(REGISTRY)
    fresh = IdentityState()
    for name in REGISTRY:
        assert state.filters[name].to_state() == fresh.filters[name].to_state()
    assert state.episodes == busy_state().episodes


def test_checkpoint_of_an_unregistered_detector_is_ignored() -> None:
    doc = orjson.loads(zlib.decompress(busy_state().to_bytes()))
    doc["filters"]["retired_detector"] = {"model": {}, "refused_in_a_row": 0}
    state = IdentityState.from_bytes(orjson.dumps(doc))
    assert set(state.filters) == set(REGISTRY)


def _is_fresh(state: IdentityState) -> bool:
    return state.to_bytes() == IdentityState().to_bytes()


@pytest.mark.parametrize(
    "blob",
    [
        b"\x00\x01garbage",
        b'{"v": 1, "filters": {',
        b"\xff\xfe",
        b"[]",
        b"null",
        b"42",
        orjson.dumps({"v": STATE_VERSION}),
    ],
    ids=["binary", "truncated-json", "invalid-utf8", "list", "null", "number", "missing-keys"],
)
def test_corrupt_checkpoint_restarts_learning_instead_of_raising(blob: bytes) -> None:
    assert _is_fresh(IdentityState.from_bytes(blob))


def test_truncated_real_checkpoint_restarts_learning() -> None:
    blob = busy_state().to_bytes()
    assert not _is_fresh(IdentityState.from_bytes(blob))
    assert _is_fresh(IdentityState.from_bytes(blob[: len(blob) // 2]))


def test_checkpoints_are_compressed_and_plain_json_ones_still_read() -> None:
    state = busy_state()
    blob = state.to_bytes()
    plain = zlib.decompress(blob)
    assert len(blob) * 2 < len(plain)  # the packed arrays are mostly zeros
    assert IdentityState.from_bytes(plain).to_bytes() == blob  # a checkpoint of 0.9


def test_a_corrupt_compressed_checkpoint_is_a_fresh_state() -> None:
    blob = busy_state().to_bytes()
    assert IdentityState.from_bytes(blob[:-9]).to_bytes() == IdentityState().to_bytes()
