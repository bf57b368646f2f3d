"""Policy: detector verdicts -> alerts and throttle commands (pure, no I/O, no wall clock).

An alert is one *episode*: it fires once when a detector's score crosses `fire_at` and
resolves once the identity has been calm for `resolve_after_minutes`; minutes in between
extend the episode, they do not repeat the alert. Ids are hashes of the identity, detector
and the episode's first minute, so a replay or a redelivery yields the same ids.

`decide` is a transition: (config, scored minute, episode) -> (episode after it, alerts,
commands). Episodes are immutable; the caller stores the one it gets back. The policy file's
models live in `config.py`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from datetime import timedelta
from typing import Any

from meterguard.detectors.base import Verdict
from meterguard.detectors.features import MinuteWindow
from meterguard.models import (
    Alert,
    Severity,
    ThrottleAction,
    ThrottleCommand,
    ThrottleLimits,
    episode_id_for,
    stable_id,
)
from meterguard.streams.policy.config import EnvironmentPolicy, PolicyConfig
from meterguard.timeutil import MINUTE_MS, from_ms


@dataclass(frozen=True)
class Episode:
    start_minute: int
    alert_id: str
    peak_score: float
    severity: str = "warning"
    calm_minutes: int = 0
    command: ThrottleCommand | None = None  # the throttle or block in force, if any


@dataclass(frozen=True)
class Attribution:
    team: str | None = None
    environment: str | None = None


@dataclass(frozen=True)
class Baseline:
    requests_per_minute: float
    tokens_per_minute: float


@dataclass(frozen=True)
class Decision:
    alerts: tuple[Alert, ...]
    commands: tuple[ThrottleCommand, ...]
    episode: Episode | None  # the episode after the minute (None: none open)


@dataclass(frozen=True)
class ScoredMinute:
    """Everything the policy knows about one scored minute of one detector."""

    identity: str
    detector: str
    window: MinuteWindow
    verdict: Verdict
    who: Attribution
    baseline: Baseline
    trigger_ms: int  # when the minute became final (event time): dates commands and ids
    event_ms: int  # the event that closed the minute: the alert's event_time


def decide(config: PolicyConfig, minute: ScoredMinute, episode: Episode | None) -> Decision:
    """One scored minute of one detector -> what to publish, and the episode after it."""
    env = config.for_environment(minute.who.environment)
    score = minute.verdict.score
    if episode is None:
        if score < env.fire_at:
            return Decision((), (), None)
        return _fire(config, env, minute, None)
    episode = replace(episode, peak_score=max(episode.peak_score, score))
    escalates = _critical(env, minute)
    if escalates and episode.severity != "critical":
        return _fire(config, env, minute, episode)  # escalation: a second, critical alert
    if score >= config.resolve_below:
        renewed = _renew(config, episode.command, minute.trigger_ms)
        if renewed is None:
            return Decision((), (), replace(episode, calm_minutes=0))
        return Decision((), (renewed,), replace(episode, calm_minutes=0, command=renewed))
    episode = replace(episode, calm_minutes=episode.calm_minutes + 1)
    if episode.calm_minutes < config.resolve_after_minutes:
        return Decision((), (), episode)
    return _close(minute, episode)


def _critical(env: EnvironmentPolicy, m: ScoredMinute) -> bool:
    """Critical: a block, or a score past `critical_at` on a rise that is material (a rise a
    detector measured in volume must exceed the environment's materiality; a small identity's
    anomaly stays a warning, so it alerts but never pages or throttles)."""
    if m.verdict.action == "block":
        return True
    return m.verdict.score >= env.critical_at and _material(env, m)


def _material(env: EnvironmentPolicy, m: ScoredMinute) -> bool:
    return m.verdict.excess is None or env.materiality.reached_by(m.verdict.excess)


def _fire(
    config: PolicyConfig, env: EnvironmentPolicy, m: ScoredMinute, episode: Episode | None
) -> Decision:
    blocks = m.verdict.action == "block"  # offboarded, hard budget cap: in every environment
    severity: Severity = "critical" if _critical(env, m) else "warning"
    start = m.window.minute if episode is None else episode.start_minute
    alert_id = stable_id(m.identity, m.detector, start, "firing", severity)
    command = None
    active = None if episode is None or episode.command is None else episode.command.action
    wants_throttle = severity == "critical" or (env.throttle_on == "warning" and _material(env, m))
    if blocks and active != "block":
        command = _command(
            config,
            m.identity,
            "block",
            ThrottleLimits(requests_per_minute=0, tokens_per_minute=0),
            m.verdict.reason,
            alert_id,
            m.trigger_ms,
        )
    elif env.throttle_on != "never" and wants_throttle and active is None:
        command = _throttle(config, m, alert_id)
    if episode is None:
        episode = Episode(start, alert_id, m.verdict.score)
    episode = replace(
        episode,
        severity=severity,
        alert_id=alert_id,
        calm_minutes=0,
        command=episode.command if command is None else command,
    )
    action = ""
    if command is not None:
        action = (
            "; blocked"
            if command.action == "block"
            else (f"; throttled to {_limits_text(command.limits)}")
        )
    w = m.window
    alert = Alert(
        alert_id=alert_id,
        identity=m.identity,
        detector=m.detector,
        severity=severity,
        score=round(m.verdict.score, 4),
        status="firing",
        title=f"{m.detector.replace('_', ' ').title()} on {m.identity}",
        summary=f"{m.identity}: {m.verdict.reason} in the minute to {_hhmm(w.minute + 1)} UTC"
        f"{action}.",
        evidence={
            **m.verdict.evidence,
            "minute": w.minute,
            "calls": w.calls,
            "tokens": w.tokens,
            "cost_usd": w.cost_usd,
            "errors": w.errors,
            "episode_start_minute": start,
        },
        window_start=from_ms(w.minute * MINUTE_MS),
        window_end=from_ms((w.minute + 1) * MINUTE_MS),
        event_time=from_ms(m.event_ms),
        team=m.who.team,
        environment=m.who.environment,
        throttle_command_id=_command_id(episode),
        episode_id=episode_id_for(m.identity, m.detector, start),
    )
    return Decision((alert,), () if command is None else (command,), episode)


def _close(m: ScoredMinute, episode: Episode) -> Decision:
    released = () if episode.command is None else (_release(episode.command, m.trigger_ms),)
    minutes = m.window.minute - episode.start_minute + 1
    alert = Alert(
        alert_id=stable_id(m.identity, m.detector, episode.start_minute, "resolved"),
        identity=m.identity,
        detector=m.detector,
        severity="info",
        score=round(m.verdict.score, 4),
        status="resolved",
        title=f"Resolved: {m.detector.replace('_', ' ')} on {m.identity}",
        summary=(
            f"{m.identity}: back to normal after {minutes} min (peak score "
            f"{episode.peak_score:.2f}); {m.verdict.reason or 'within baseline'}."
        ),
        evidence={
            "episode_start_minute": episode.start_minute,
            "firing_alert_id": episode.alert_id,
            "peak_score": round(episode.peak_score, 4),
            **m.verdict.evidence,
        },
        window_start=from_ms(episode.start_minute * MINUTE_MS),
        window_end=from_ms((m.window.minute + 1) * MINUTE_MS),
        event_time=from_ms(m.event_ms),
        team=m.who.team,
        environment=m.who.environment,
        throttle_command_id=released[0].command_id if released else None,
        episode_id=episode_id_for(m.identity, m.detector, episode.start_minute),
    )
    return Decision((alert,), released, None)


def _renew(
    config: PolicyConfig, active: ThrottleCommand | None, trigger_ms: int
) -> ThrottleCommand | None:
    """Keep a throttle alive while its episode still fires (commands expire by themselves)."""
    if active is None:
        return None
    if from_ms(trigger_ms) < active.expires_at - timedelta(minutes=config.throttle_minutes / 3):
        return None
    return _command(
        config,
        active.identity,
        active.action,
        active.limits,
        active.reason,
        active.alert_id,
        trigger_ms,
    )


def _throttle(config: PolicyConfig, m: ScoredMinute, alert_id: str) -> ThrottleCommand:
    limits = ThrottleLimits(
        requests_per_minute=max(
            config.min_requests_per_minute,
            math.ceil(m.baseline.requests_per_minute * config.throttle_headroom),
        ),
        tokens_per_minute=max(
            config.min_tokens_per_minute,
            math.ceil(m.baseline.tokens_per_minute * config.throttle_headroom),
        ),
    )
    return _command(
        config, m.identity, "throttle", limits, m.verdict.reason, alert_id, m.trigger_ms
    )


def _release(active: ThrottleCommand, trigger_ms: int) -> ThrottleCommand:
    issued = from_ms(trigger_ms)
    return ThrottleCommand(
        command_id=stable_id(active.identity, "release", trigger_ms, active.alert_id),
        identity=active.identity,
        action="release",
        limits=ThrottleLimits(),
        reason="episode resolved",
        alert_id=active.alert_id,
        issued_at=issued,
        expires_at=max(active.expires_at, issued),
        version=max(trigger_ms, active.version + 1),
    )


def _command(
    config: PolicyConfig,
    identity: str,
    action: ThrottleAction,
    limits: ThrottleLimits,
    reason: str,
    alert_id: str | None,
    trigger_ms: int,
) -> ThrottleCommand:
    issued = from_ms(trigger_ms)
    # version = event-time ms: monotonic per identity and the same on every replay.
    return ThrottleCommand(
        command_id=stable_id(identity, action, trigger_ms, alert_id),
        identity=identity,
        action=action,
        limits=limits,
        reason=reason,
        alert_id=alert_id,
        issued_at=issued,
        expires_at=issued + timedelta(minutes=config.throttle_minutes),
        version=trigger_ms,
    )


def _command_id(episode: Episode) -> str | None:
    """The throttle in force for the episode (new, or kept from before an escalation)."""
    return None if episode.command is None else episode.command.command_id


def _limits_text(limits: ThrottleLimits) -> str:
    return f"{limits.requests_per_minute} req/min, {limits.tokens_per_minute:,} tokens/min"


def _hhmm(minute: int) -> str:
    return from_ms(minute * MINUTE_MS).strftime("%H:%M")


# -- checkpoints: the dict shape the identity state has always stored ------------------------
# {"start_minute", "alert_id", "peak_score", "severity", "calm_minutes", "command"}, with the
# command as its JSON document (ThrottleCommand.model_dump(mode="json")) or None.


def episode_to_dict(episode: Episode | None) -> dict[str, Any] | None:
    if episode is None:
        return None
    doc = {f.name: getattr(episode, f.name) for f in fields(episode)}
    if episode.command is not None:
        doc["command"] = episode.command.model_dump(mode="json")
    return doc


def episode_from_dict(data: dict[str, Any] | None) -> Episode | None:
    if data is None:
        return None
    command = data.get("command")
    if command is None:
        return Episode(**data)
    return Episode(**{**data, "command": ThrottleCommand.model_validate(command)})
