"""Policy: scored minutes -> alerts and throttle commands (streams/policy/episodes.py,
its file in streams/policy/config.py)."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import orjson
import pytest
from pydantic import ValidationError

from meterguard.detectors.base import Verdict
from meterguard.detectors.features import MinuteWindow
from meterguard.models import Alert, ThrottleCommand, episode_id_for, episode_id_of
from meterguard.streams.policy.config import EnvironmentPolicy, PolicyConfig
from meterguard.streams.policy.episodes import (
    Attribution,
    Baseline,
    Decision,
    Episode,
    ScoredMinute,
    decide,
    episode_from_dict,
    episode_to_dict,
)
from meterguard.timeutil import MINUTE_MS

T0 = 29_000_040  # epoch minute, 2025-02-20T13:00Z
LATENESS_MS = 10_000
DEFAULTS = PolicyConfig()
QUIET_BASELINE = Baseline(3.0, 2_400.0)


def scored(
    offset: int,
    score: float,
    *,
    identity: str = "svc-billing",
    environment: str | None = "prod",
    team: str | None = "payments",
    baseline: Baseline = QUIET_BASELINE,
    detector: str = "spike",
    event_lag_ms: int = 1_234,
) -> ScoredMinute:
    minute = T0 + offset
    trigger_ms = (minute + 1) * MINUTE_MS + LATENESS_MS
    return ScoredMinute(
        identity=identity,
        detector=detector,
        window=MinuteWindow(minute, calls=90, input_tokens=60_000, output_tokens=12_000),
        verdict=Verdict(
            score=score,
            evidence={"metric": "calls", "calls": {"value": 90.0, "baseline": 3.0}},
            reason="calls 90 calls/min vs baseline 3 (30.0x)",
        ),
        who=Attribution(team=team, environment=environment),
        baseline=baseline,
        trigger_ms=trigger_ms,
        event_ms=trigger_ms - LATENESS_MS - event_lag_ms,
    )


@dataclass
class Run:
    alerts: list[Alert] = field(default_factory=list)
    commands: list[ThrottleCommand] = field(default_factory=list)
    episode: Episode | None = None
    # (minute offset, alert or command) in the order emitted
    timeline: list[tuple[int, object]] = field(default_factory=list)

    @property
    def firing(self) -> list[Alert]:
        return [a for a in self.alerts if a.status == "firing"]

    @property
    def resolved(self) -> list[Alert]:
        return [a for a in self.alerts if a.status == "resolved"]


def run(scores: list[float], config: PolicyConfig = DEFAULTS, start: int = 0, **kw) -> Run:
    out = Run()
    for i, score in enumerate(scores):
        decision = decide(config, scored(start + i, score, **kw), out.episode)
        out.alerts += decision.alerts
        out.commands += decision.commands
        out.timeline += [(start + i, x) for x in [*decision.alerts, *decision.commands]]
        out.episode = decision.episode
    return out


CALM = 0.1


# -- episodes --------------------------------------------------------------------------------


def test_calm_minutes_emit_nothing() -> None:
    result = run([0.0, 0.3, 0.79, 0.5, CALM])
    assert result.alerts == [] and result.commands == []
    assert result.episode is None


def test_one_episode_fires_one_alert_however_many_anomalous_minutes_follow() -> None:
    result = run([0.85] * 40)
    assert len(result.firing) == 1
    assert result.resolved == []
    alert = result.firing[0]
    assert alert.severity == "warning"
    assert alert.score == 0.85
    assert alert.identity == "svc-billing" and alert.detector == "spike"
    assert alert.team == "payments" and alert.environment == "prod"
    assert result.episode is not None and result.episode.start_minute == T0


def test_dips_shorter_than_the_resolve_period_keep_one_episode() -> None:
    scores = [0.95, CALM, CALM, 0.95, CALM, 0.6, CALM, CALM, CALM, CALM, 0.85] * 4
    result = run(scores)
    assert len(result.firing) == 1
    assert result.resolved == []


def test_alert_describes_the_minute_that_fired_it() -> None:
    alert = run([0.2, 0.2, 0.87]).firing[0]
    minute = T0 + 2
    assert alert.window_start == datetime.fromtimestamp(minute * 60, UTC)
    assert alert.window_end == alert.window_start + timedelta(minutes=1)
    assert alert.event_time == datetime.fromtimestamp(
        ((minute + 1) * MINUTE_MS - 1_234) / 1000, UTC
    )
    assert alert.evidence["minute"] == minute
    assert alert.evidence["calls"] == 90
    assert alert.evidence["episode_start_minute"] == minute
    assert alert.evidence["metric"] == "calls"
    assert "calls 90 calls/min vs baseline 3" in alert.summary
    assert alert.throttle_command_id is None


def test_episode_resolves_after_resolve_after_minutes_calm_minutes() -> None:
    config = PolicyConfig(resolve_after_minutes=5)
    result = run([0.85, 0.85, *[CALM] * 4])
    assert result.resolved == [] and result.episode is not None
    result = run([0.85, 0.85, *[CALM] * 5], config)
    assert len(result.resolved) == 1
    assert result.episode is None
    resolved = result.resolved[0]
    assert resolved.severity == "info"
    assert resolved.evidence["firing_alert_id"] == result.firing[0].alert_id
    assert resolved.evidence["peak_score"] == 0.85
    assert resolved.window_start == datetime.fromtimestamp(T0 * 60, UTC)
    assert resolved.window_end == datetime.fromtimestamp((T0 + 7) * 60, UTC)
    assert resolved.alert_id != result.firing[0].alert_id
    assert resolved.throttle_command_id is None
    assert result.commands == []


def test_scores_between_resolve_below_and_fire_at_keep_the_episode_open() -> None:
    result = run([0.9, *[0.55] * 30])
    assert result.resolved == [] and result.episode is not None


def test_resolve_after_minutes_is_configurable() -> None:
    config = PolicyConfig(resolve_after_minutes=2)
    assert len(run([0.85, CALM], config).resolved) == 0
    assert len(run([0.85, CALM, CALM], config).resolved) == 1


def test_a_new_episode_after_resolution_fires_a_new_alert() -> None:
    result = run([0.85, *[CALM] * 5, 0.85, *[CALM] * 5])
    assert len(result.firing) == 2 and len(result.resolved) == 2
    assert result.firing[0].alert_id != result.firing[1].alert_id
    assert result.resolved[0].alert_id != result.resolved[1].alert_id


def test_throttled_episode_resolves_with_a_release_command() -> None:
    result = run([0.95, 0.95, *[CALM] * 5])
    throttle, release = result.commands
    assert throttle.action == "throttle"
    assert release.action == "release"
    assert release.identity == throttle.identity == "svc-billing"
    assert release.alert_id == throttle.alert_id == result.firing[0].alert_id
    assert release.version > throttle.version
    assert release.command_id != throttle.command_id
    assert release.limits.requests_per_minute is None
    assert release.limits.tokens_per_minute is None
    assert release.expires_at >= release.issued_at
    assert result.resolved[0].throttle_command_id == release.command_id
    assert result.timeline[-1] == (6, release)


def test_escalation_from_warning_to_critical_fires_a_second_alert_and_throttles() -> None:
    result = run([0.85, 0.85, 0.95, 0.96, 0.99, 0.85])
    warning, critical = result.firing
    assert warning.severity == "warning" and critical.severity == "critical"
    assert warning.alert_id != critical.alert_id
    assert warning.throttle_command_id is None
    assert [c.action for c in result.commands] == ["throttle"]
    assert critical.throttle_command_id == result.commands[0].command_id
    assert result.commands[0].alert_id == critical.alert_id
    assert critical.evidence["episode_start_minute"] == T0
    assert result.episode is not None and result.episode.severity == "critical"


def test_resolution_after_escalation_points_at_the_critical_alert() -> None:
    result = run([0.85, 0.95, *[CALM] * 5])
    assert result.resolved[0].evidence["firing_alert_id"] == result.firing[1].alert_id
    assert result.resolved[0].evidence["peak_score"] == 0.95


def test_critical_from_the_first_minute_fires_once_and_throttles_once() -> None:
    result = run([0.97] * 10)
    assert len(result.firing) == 1 and result.firing[0].severity == "critical"
    assert [c.action for c in result.commands] == ["throttle"]


# -- determinism and versions ----------------------------------------------------------------


def test_same_inputs_give_the_same_ids_and_versions() -> None:
    scores = [0.85, 0.95, *[0.95] * 30, *[CALM] * 5]
    first, second = run(scores), run(scores)
    assert [a.alert_id for a in first.alerts] == [a.alert_id for a in second.alerts]
    assert [c.command_id for c in first.commands] == [c.command_id for c in second.commands]
    assert [c.version for c in first.commands] == [c.version for c in second.commands]
    assert first.alerts == second.alerts
    assert first.commands == second.commands


def test_ids_do_not_depend_on_which_event_closed_the_minute() -> None:
    scores = [0.95, 0.95, *[CALM] * 5]
    a, b = run(scores, event_lag_ms=5), run(scores, event_lag_ms=50_000)
    assert [x.alert_id for x in a.alerts] == [x.alert_id for x in b.alerts]
    assert [x.command_id for x in a.commands] == [x.command_id for x in b.commands]


def test_ids_differ_between_identities_and_episode_starts() -> None:
    base = run([0.95]).firing[0].alert_id
    assert run([0.95], identity="svc-other").firing[0].alert_id != base
    assert run([0.95], start=1).firing[0].alert_id != base
    assert run([0.95], detector="retry_loop").firing[0].alert_id != base


def test_command_versions_are_monotonic_across_throttle_renew_and_release() -> None:
    result = run([0.95] * 60 + [CALM] * 5)
    actions = [c.action for c in result.commands]
    assert actions[0] == "throttle" and actions[-1] == "release"
    assert actions.count("throttle") >= 4  # renewals
    versions = [c.version for c in result.commands]
    assert versions == sorted(versions) and len(set(versions)) == len(versions)
    assert len({c.command_id for c in result.commands}) == len(result.commands)
    assert all(c.identity == "svc-billing" for c in result.commands)


def test_long_episode_renews_the_throttle_before_it_expires() -> None:
    config = PolicyConfig(throttle_minutes=15)
    scores = [0.95] * 90
    result = run(scores, config)
    commands = result.commands
    assert len(commands) >= 6
    for previous, renewed in pairwise(commands):
        assert renewed.issued_at < previous.expires_at
        assert renewed.expires_at > previous.expires_at
        assert renewed.limits == previous.limits
        assert renewed.alert_id == previous.alert_id
    # At every scored minute of the episode some command is in force.
    for offset in range(len(scores)):
        moment = datetime.fromtimestamp(scored(offset, 0.95).trigger_ms / 1000, UTC)
        active = [c for c in commands if c.issued_at <= moment < c.expires_at]
        assert active, f"no throttle in force at minute {offset}"


def test_throttle_is_not_renewed_early() -> None:
    config = PolicyConfig(throttle_minutes=15)
    result = run([0.95] * 10, config)
    assert len(result.commands) == 1
    command = result.commands[0]
    assert command.expires_at - command.issued_at == timedelta(minutes=15)


# -- environments ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environment", "score", "severity", "throttled"),
    [
        ("prod", 0.85, "warning", False),
        ("prod", 0.95, "critical", True),
        ("staging", 0.85, "warning", False),
        ("staging", 0.99, "critical", False),
        ("test", 0.92, "warning", False),
        ("test", 0.99, "critical", False),
        (None, 0.95, "critical", True),
        ("sandbox-42", 0.95, "critical", True),
    ],
)
def test_environment_rules_decide_severity_and_throttling(
    environment: str | None, score: float, severity: str, throttled: bool
) -> None:
    result = run([score] * 5, environment=environment)
    assert [a.severity for a in result.firing] == [severity]
    assert bool(result.commands) is throttled
    assert result.firing[0].environment == environment


@pytest.mark.parametrize("score", [0.8, 0.85, 0.89])
def test_test_environment_needs_a_higher_score_to_fire(score: float) -> None:
    assert run([score] * 5, environment="test").alerts == []
    assert len(run([score] * 5, environment="prod").firing) == 1


def test_staging_escalation_never_throttles() -> None:
    result = run([0.85, 0.95, 0.99, *[CALM] * 5], environment="staging")
    assert [a.severity for a in result.firing] == ["warning", "critical"]
    assert result.commands == []
    assert result.resolved[0].throttle_command_id is None


def test_environment_configured_to_throttle_on_warning_throttles_a_warning() -> None:
    config = PolicyConfig(environments={"prod": EnvironmentPolicy(throttle_on="warning")})
    result = run([0.85, 0.95, 0.95], config)
    assert [a.severity for a in result.firing] == ["warning", "critical"]
    assert [c.action for c in result.commands] == ["throttle"]
    assert result.firing[0].throttle_command_id == result.commands[0].command_id


# -- throttle limits -------------------------------------------------------------------------


def throttle_of(baseline: Baseline, config: PolicyConfig = DEFAULTS) -> ThrottleCommand:
    result = run([0.95], config, baseline=baseline)
    (command,) = result.commands
    assert command.action == "throttle"
    return command


def test_throttle_limits_are_baseline_times_headroom() -> None:
    command = throttle_of(Baseline(120.2, 50_000.5))
    assert command.limits.requests_per_minute == 241
    assert command.limits.tokens_per_minute == 100_001


def test_throttle_limits_never_go_below_the_floors() -> None:
    command = throttle_of(Baseline(3.0, 2_400.0))
    assert command.limits.requests_per_minute == 10
    assert command.limits.tokens_per_minute == 10_000
    zero = throttle_of(Baseline(0.0, 0.0))
    assert (zero.limits.requests_per_minute, zero.limits.tokens_per_minute) == (10, 10_000)


def test_throttle_headroom_and_floors_are_configurable() -> None:
    config = PolicyConfig(
        throttle_headroom=3.0, min_requests_per_minute=50, min_tokens_per_minute=1_000
    )
    command = throttle_of(Baseline(10.0, 2_000.0), config)
    assert command.limits.requests_per_minute == 50
    assert command.limits.tokens_per_minute == 6_000


def test_throttle_command_is_dated_by_event_time() -> None:
    command = throttle_of(Baseline(3.0, 2_400.0))
    trigger_ms = scored(0, 0.95).trigger_ms
    assert command.issued_at == datetime.fromtimestamp(trigger_ms / 1000, UTC)
    assert command.expires_at == command.issued_at + timedelta(minutes=15)
    assert command.version == trigger_ms
    assert command.reason == "calls 90 calls/min vs baseline 3 (30.0x)"


# -- episode serialisation -------------------------------------------------------------------


def test_episode_survives_a_dict_round_trip_mid_episode() -> None:
    scores = [0.95] * 12 + [CALM] * 5
    uninterrupted = run(scores)
    resumed = run(scores[:6])
    copy = episode_from_dict(episode_to_dict(resumed.episode))
    assert copy == resumed.episode
    tail = Run(episode=copy)
    for i, score in enumerate(scores[6:], start=6):
        decision = decide(DEFAULTS, scored(i, score), tail.episode)
        tail.alerts += decision.alerts
        tail.commands += decision.commands
        tail.episode = decision.episode
    assert resumed.alerts + tail.alerts == uninterrupted.alerts
    assert resumed.commands + tail.commands == uninterrupted.commands


def test_no_episode_serialises_to_none() -> None:
    assert episode_to_dict(None) is None
    assert episode_from_dict(None) is None


# As the identity state stored an episode before Episode was frozen (command as its JSON
# document), after scores [0.85, 0.95, CALM]: escalated, throttled, one calm minute.
CHECKPOINT_BEFORE_FROZEN_EPISODES = {
    "start_minute": 29000040,
    "alert_id": "0be0f0aba0cf7552bac91f9c8718fa86",
    "peak_score": 0.95,
    "severity": "critical",
    "calm_minutes": 1,
    "command": {
        "command_id": "822718f3123d63b6b864993ccaf2ba19",
        "identity": "svc-billing",
        "action": "throttle",
        "limits": {"requests_per_minute": 10, "tokens_per_minute": 10000},
        "reason": "calls 90 calls/min vs baseline 3 (30.0x)",
        "alert_id": "0be0f0aba0cf7552bac91f9c8718fa86",
        "issued_at": "2025-02-19T22:02:10Z",
        "expires_at": "2025-02-19T22:17:10Z",
        "version": 1740002530000,
    },
}


def test_a_checkpoint_from_before_frozen_episodes_resumes_the_same_episode() -> None:
    scores = [0.85, 0.95, CALM, *[CALM] * 4]
    old = copy.deepcopy(CHECKPOINT_BEFORE_FROZEN_EPISODES)
    episode = episode_from_dict(old)
    assert old == CHECKPOINT_BEFORE_FROZEN_EPISODES
    assert episode == run(scores[:3]).episode
    assert episode_to_dict(episode) == CHECKPOINT_BEFORE_FROZEN_EPISODES
    tail: list[Decision] = []
    for i, score in enumerate(scores[3:], start=3):
        decision = decide(DEFAULTS, scored(i, score), episode)
        tail.append(decision)
        episode = decision.episode
    uninterrupted = run(scores)
    assert [a for d in tail for a in d.alerts] == uninterrupted.alerts[2:]
    assert [c for d in tail for c in d.commands] == uninterrupted.commands[1:]


# -- a pure transition -----------------------------------------------------------------------


def test_decide_leaves_the_episode_it_was_given_unchanged() -> None:
    # Opens, escalates, renews its throttle, dips, resolves with a release: every branch.
    scores = [0.85, 0.85, 0.95, *[0.95] * 25, 0.6, CALM, CALM, 0.9, *[CALM] * 5]
    episode: Episode | None = None
    actions = []
    for i, score in enumerate(scores):
        before = copy.deepcopy(episode)
        as_dict = episode_to_dict(episode)
        decision = decide(DEFAULTS, scored(i, score), episode)
        assert episode == before
        assert episode_to_dict(episode) == as_dict
        actions += [c.action for c in decision.commands]
        episode = decision.episode
    assert episode is None
    assert actions[0] == "throttle" and actions.count("throttle") >= 3  # renewed
    assert actions[-1] == "release"


def test_the_same_minute_and_episode_give_the_same_decision() -> None:
    episode = run([0.85, 0.95, *[0.95] * 9]).episode
    minute = scored(11, 0.95)
    assert decide(DEFAULTS, minute, episode) == decide(DEFAULTS, minute, episode)


def test_episodes_and_decisions_are_frozen() -> None:
    decision = decide(DEFAULTS, scored(0, 0.95), None)
    episode = decision.episode
    assert episode is not None and episode.command is not None
    with pytest.raises(dataclasses.FrozenInstanceError):
        episode.calm_minutes = 3  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        decision.episode = None  # type: ignore[misc]
    with pytest.raises(ValidationError):
        episode.command.version = 0  # type: ignore[misc]
    assert isinstance(decision.alerts, tuple) and isinstance(decision.commands, tuple)


# -- episode ids -----------------------------------------------------------------------------


def test_every_alert_of_an_episode_carries_its_episode_id() -> None:
    result = run([0.85, 0.95, *[CALM] * 5])
    warning, critical = result.firing
    (resolved,) = result.resolved
    assert warning.episode_id == critical.episode_id == resolved.episode_id
    assert warning.episode_id == episode_id_for("svc-billing", "spike", T0)
    assert run([0.85], start=20).firing[0].episode_id != warning.episode_id
    assert run([0.85], detector="retry_loop").firing[0].episode_id != warning.episode_id


def test_an_alert_stored_without_episode_id_gets_the_same_one() -> None:
    for alert in run([0.85, 0.95, *[CALM] * 5]).alerts:
        doc = alert.model_dump(mode="json")
        del doc["episode_id"]
        assert Alert.model_validate(doc).episode_id == alert.episode_id
        assert Alert.model_validate_json(orjson.dumps(doc)) == alert
        assert episode_id_of(doc) == alert.episode_id


# -- PolicyConfig.load -----------------------------------------------------------------------


def test_load_without_a_path_gives_the_defaults() -> None:
    assert PolicyConfig.load(None) == PolicyConfig()
    assert PolicyConfig.load("") == PolicyConfig()


def test_load_reads_a_valid_file(tmp_path: Path) -> None:
    path = tmp_path / "meterguard.yaml"
    path.write_text(
        "resolve_after_minutes: 3\n"
        "throttle_minutes: 30\n"
        "throttle_headroom: 1.5\n"
        "environments:\n"
        "  prod: {fire_at: 0.7, critical_at: 0.85}\n"
        "  canary: {throttle_on: never}\n"
    )
    config = PolicyConfig.load(str(path))
    assert config.resolve_after_minutes == 3
    assert config.throttle_minutes == 30
    assert config.throttle_headroom == 1.5
    assert config.for_environment("prod") == EnvironmentPolicy(fire_at=0.7, critical_at=0.85)
    assert config.for_environment("canary").throttle_on == "never"
    assert config.resolve_below == DEFAULTS.resolve_below


def test_load_of_an_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing configured yet\n")
    assert PolicyConfig.load(str(path)) == PolicyConfig()


def test_load_of_a_missing_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ValueError, match="cannot read policy file") as info:
        PolicyConfig.load(str(path))
    assert str(path) in str(info.value)


def test_load_of_bad_yaml_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("resolve_below: [0.5\nthrottle_minutes: 3\n")
    with pytest.raises(ValueError, match="cannot read policy file") as info:
        PolicyConfig.load(str(path))
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("resolve_afer_minutes: 3\n", "resolve_afer_minutes"),
        ("environments:\n  prod: {fire_at: 0.8, page_on: critical}\n", "page_on"),
        ("resolve_below: 1.5\n", "resolve_below"),
        ("resolve_after_minutes: 0\n", "resolve_after_minutes"),
        ("throttle_headroom: 0.5\n", "throttle_headroom"),
        ("min_requests_per_minute: 0\n", "min_requests_per_minute"),
        ("environments:\n  prod: {fire_at: 0}\n", "fire_at"),
        ("environments:\n  prod: {critical_at: 1.2}\n", "critical_at"),
        ("environments:\n  prod: {throttle_on: sometimes}\n", "throttle_on"),
        ("throttle_minutes: soon\n", "throttle_minutes"),
    ],
)
def test_load_of_an_invalid_file_names_the_offending_key(
    tmp_path: Path, text: str, named: str
) -> None:
    path = tmp_path / "meterguard.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match="invalid policy file") as info:
        PolicyConfig.load(str(path))
    assert named in str(info.value)
    assert str(path) in str(info.value)


def test_load_of_a_yaml_list_is_an_invalid_policy(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- resolve_below: 0.5\n")
    with pytest.raises(ValueError, match="invalid policy file"):
        PolicyConfig.load(str(path))


def test_policy_file_tuning_prod_keeps_builtin_staging_and_test_rules(tmp_path) -> None:
    path = tmp_path / "meterguard.yaml"
    path.write_text("environments:\n  prod: {fire_at: 0.85, critical_at: 0.95}\n")
    config = PolicyConfig.load(str(path))
    assert config.environments["prod"].fire_at == 0.85
    assert config.environments["staging"].throttle_on == "never"
    assert config.environments["test"].fire_at == 0.9


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("default_environment: {fire_at: 0.9, critical_at: 0.8}\n", "critical_at"),
        ("resolve_below: 0.95\n", "resolve_below"),
        ("- a list\n", "mapping"),
    ],
)
def test_policy_file_with_inconsistent_thresholds_is_refused(tmp_path, text, message) -> None:
    path = tmp_path / "meterguard.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        PolicyConfig.load(str(path))


def test_policy_file_that_is_not_utf8_gives_a_clear_error(tmp_path) -> None:
    path = tmp_path / "meterguard.yaml"
    path.write_bytes(b"resolve_below: \xff\xfe\n")
    with pytest.raises(ValueError, match="cannot read policy file"):
        PolicyConfig.load(str(path))


# -- materiality and per-environment detection parameters (issue 10) -------------------------


def with_excess(minute: ScoredMinute, excess: dict[str, float]) -> ScoredMinute:
    return dataclasses.replace(minute, verdict=dataclasses.replace(minute.verdict, excess=excess))


def test_a_sure_rise_on_a_small_identity_alerts_as_a_warning_and_is_not_throttled() -> None:
    """0.2 -> 4 calls/min: statistically certain, far below prod's materiality."""
    tiny = with_excess(scored(0, 0.97), {"calls": 3.8, "tokens": 3_000.0, "cost_usd": 0.01})
    decision = decide(DEFAULTS, tiny, None)
    assert [a.severity for a in decision.alerts] == ["warning"]
    assert decision.commands == ()


def test_the_same_score_on_a_material_rise_is_critical_and_throttled_in_prod() -> None:
    big = with_excess(scored(0, 0.97), {"calls": 2_700.0})
    decision = decide(DEFAULTS, big, None)
    assert [a.severity for a in decision.alerts] == ["critical"]
    assert [c.action for c in decision.commands] == ["throttle"]


def test_an_immaterial_warning_is_not_throttled_even_where_warnings_throttle() -> None:
    policy = PolicyConfig(environments={"prod": EnvironmentPolicy(throttle_on="warning")})
    tiny = with_excess(scored(0, 0.85), {"calls": 2.0})
    material = with_excess(scored(0, 0.85), {"calls": 200.0})
    assert decide(policy, tiny, None).commands == ()
    assert [c.action for c in decide(policy, material, None).commands] == ["throttle"]


def test_materiality_is_per_environment_and_read_from_the_policy_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(
        "environments:\n"
        "  prod:\n"
        "    materiality:\n"
        "      {calls_per_minute: 1, tokens_per_minute: 500, cost_usd_per_minute: 0.01}\n"
        "    detection:\n"
        "      spike: {min_ratio: 5}\n"
        "      slow_ramp: {alert_z: 8}\n"
    )
    policy = PolicyConfig.load(str(path))
    tiny = with_excess(scored(0, 0.97), {"calls": 3.8})
    assert [a.severity for a in decide(policy, tiny, None).alerts] == ["critical"]
    params = policy.context_for("svc", "prod").detector_params
    assert params["spike"]["min_ratio"] == 5
    assert params["slow_ramp"]["alert_z"] == 8
    assert policy.context_for("svc", "staging").detector_params["spike"]["min_ratio"] == 3


def test_policy_detection_defaults_are_the_detectors_own_defaults() -> None:
    from meterguard.detectors.slow_ramp import RampConfig
    from meterguard.detectors.spike import SpikeConfig

    params = PolicyConfig().context_for("svc", "prod").detector_params
    for name, config in (("spike", SpikeConfig()), ("slow_ramp", RampConfig())):
        for field_name, value in params[name].items():
            assert getattr(config, field_name) == value, (name, field_name)


@pytest.mark.parametrize(
    ("yaml_text", "needle"),
    [
        ("environments: {prod: {detection: {spike: {min_ratio: 1.0}}}}", "min_ratio"),
        ("environments: {prod: {detection: {spike: {speed: 2}}}}", "speed"),
        ("environments: {prod: {materiality: {calls_per_minute: -1}}}", "calls_per_minute"),
    ],
)
def test_bad_detection_settings_are_clear_errors(tmp_path: Path, yaml_text: str, needle: str):
    path = tmp_path / "policy.yaml"
    path.write_text(yaml_text + "\n")
    with pytest.raises(ValueError, match=needle):
        PolicyConfig.load(str(path))
