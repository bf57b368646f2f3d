"""Policy: detector verdicts -> alerts and throttle commands (pure, no I/O, no wall clock).

An alert is one *episode*: it fires once when a detector's score crosses `fire_at` and
resolves once the identity has been calm for `resolve_after_minutes`; minutes in between
extend the episode, they do not repeat the alert. Ids are hashes of the identity, detector
and the episode's first minute, so a replay or a redelivery yields the same ids.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from meterguard.detectors.base import Verdict
from meterguard.detectors.features import IdentityContext, MinuteWindow
from meterguard.models import Alert, Severity, ThrottleCommand, ThrottleLimits
from meterguard.sinks.routing import RoutingConfig
from meterguard.timeutil import MINUTE_MS, from_ms
from meterguard.yaml_config import load_yaml_model


class EnvironmentPolicy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    fire_at: float = Field(default=0.8, gt=0, le=1)
    critical_at: float = Field(default=0.9, gt=0, le=1)
    throttle_on: Literal["critical", "warning", "never"] = "critical"

    @model_validator(mode="after")
    def _ordered(self) -> EnvironmentPolicy:
        if self.critical_at < self.fire_at:
            raise ValueError(f"critical_at ({self.critical_at}) is below fire_at ({self.fire_at})")
        return self


class BudgetSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    daily_usd: float | None = Field(default=None, gt=0)
    monthly_usd: float | None = Field(default=None, gt=0)


def _default_environments() -> dict[str, EnvironmentPolicy]:
    return {
        "prod": EnvironmentPolicy(),
        "staging": EnvironmentPolicy(throttle_on="never"),
        "test": EnvironmentPolicy(fire_at=0.9, critical_at=0.97, throttle_on="never"),
    }


class PolicyConfig(BaseModel):
    """`meterguard.yaml` (MG_POLICY_FILE). Every field has a default; unknown keys are errors."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    resolve_below: float = Field(default=0.5, ge=0, le=1)
    resolve_after_minutes: int = Field(default=5, ge=1)
    throttle_minutes: int = Field(default=15, ge=1)
    # Throttle limits = the identity's own baseline x headroom, never below the floors.
    throttle_headroom: float = Field(default=2.0, ge=1)
    min_requests_per_minute: int = Field(default=10, ge=1)
    min_tokens_per_minute: int = Field(default=10_000, ge=1)
    default_environment: EnvironmentPolicy = EnvironmentPolicy()
    environments: dict[str, EnvironmentPolicy] = Field(default_factory=_default_environments)
    # Identities whose calls are blocked at once (offboarded service accounts, revoked keys).
    offboarded_identities: frozenset[str] = frozenset()
    # Per-identity budgets (event-time UTC day / month); `default_budget` for all others.
    budgets: dict[str, BudgetSpec] = Field(default_factory=dict)
    default_budget: BudgetSpec | None = None
    budget_warn_at: float = Field(default=0.8, gt=0, lt=1)
    routing: RoutingConfig = RoutingConfig()  # alert destinations' filters (sinks/routing.py)

    @field_validator("environments", mode="before")
    @classmethod
    def _merge_defaults(cls, value: Any) -> Any:
        """A file that only tunes `prod` keeps the built-in staging and test rules."""
        if isinstance(value, dict):
            return {**_default_environments(), **value}
        return value

    @model_validator(mode="after")
    def _resolve_below_fire(self) -> PolicyConfig:
        lowest = min(
            [self.default_environment.fire_at] + [e.fire_at for e in self.environments.values()]
        )
        if self.resolve_below > lowest:
            raise ValueError(f"resolve_below ({self.resolve_below}) is above a fire_at ({lowest})")
        return self

    def context_for(self, identity: str) -> IdentityContext:
        budget = self.budgets.get(identity, self.default_budget) or BudgetSpec()
        return IdentityContext(
            daily_budget_usd=budget.daily_usd,
            monthly_budget_usd=budget.monthly_usd,
            offboarded=identity in self.offboarded_identities,
            budget_warn_at=self.budget_warn_at,
        )

    def for_environment(self, environment: str | None) -> EnvironmentPolicy:
        return self.environments.get(environment or "", self.default_environment)

    @classmethod
    def load(cls, path: str | None) -> PolicyConfig:
        return load_yaml_model(cls, path, "policy file")


@dataclass
class Episode:
    start_minute: int
    alert_id: str
    peak_score: float
    severity: str = "warning"
    calm_minutes: int = 0
    command: dict[str, Any] | None = None  # the active ThrottleCommand (JSON-ready)


@dataclass(frozen=True)
class Attribution:
    team: str | None = None
    environment: str | None = None


@dataclass(frozen=True)
class Baseline:
    requests_per_minute: float
    tokens_per_minute: float


@dataclass
class Decision:
    alerts: list[Alert]
    commands: list[ThrottleCommand]
    episode: Episode | None


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


def stable_id(*parts: object) -> str:
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()[:32]


def decide(config: PolicyConfig, minute: ScoredMinute, episode: Episode | None) -> Decision:
    """One scored minute of one detector -> what to publish, and the episode after it."""
    env = config.for_environment(minute.who.environment)
    score = minute.verdict.score
    if episode is None:
        if score < env.fire_at:
            return Decision([], [], None)
        return _fire(config, env, minute, None)
    episode.peak_score = max(episode.peak_score, score)
    escalates = score >= env.critical_at or minute.verdict.action == "block"
    if escalates and episode.severity != "critical":
        return _fire(config, env, minute, episode)  # escalation: a second, critical alert
    if score >= config.resolve_below:
        episode.calm_minutes = 0
        return Decision([], _renew(config, episode, minute.trigger_ms), episode)
    episode.calm_minutes += 1
    if episode.calm_minutes < config.resolve_after_minutes:
        return Decision([], [], episode)
    return _close(minute, episode)


def _fire(
    config: PolicyConfig, env: EnvironmentPolicy, m: ScoredMinute, episode: Episode | None
) -> Decision:
    blocks = m.verdict.action == "block"  # offboarded, hard budget cap: in every environment
    critical = blocks or m.verdict.score >= env.critical_at
    severity: Severity = "critical" if critical else "warning"
    start = m.window.minute if episode is None else episode.start_minute
    alert_id = stable_id(m.identity, m.detector, start, "firing", severity)
    command = None
    active = None if episode is None or episode.command is None else episode.command["action"]
    wants_throttle = severity == "critical" or env.throttle_on == "warning"
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
    episode.severity, episode.alert_id, episode.calm_minutes = severity, alert_id, 0
    if command is not None:
        episode.command = command.model_dump(mode="json")
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
    )
    return Decision([alert], [command] if command else [], episode)


def _close(m: ScoredMinute, episode: Episode) -> Decision:
    commands = []
    if episode.command is not None:
        active = ThrottleCommand.model_validate(episode.command)
        commands.append(_release(active, m.trigger_ms))
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
        throttle_command_id=commands[0].command_id if commands else None,
    )
    return Decision([alert], commands, None)


def _renew(config: PolicyConfig, episode: Episode, trigger_ms: int) -> list[ThrottleCommand]:
    """Keep a throttle alive while its episode still fires (commands expire by themselves)."""
    if episode.command is None:
        return []
    active = ThrottleCommand.model_validate(episode.command)
    if from_ms(trigger_ms) < active.expires_at - timedelta(minutes=config.throttle_minutes / 3):
        return []
    renewed = _command(
        config,
        active.identity,
        active.action,
        active.limits,
        active.reason,
        active.alert_id,
        trigger_ms,
    )
    episode.command = renewed.model_dump(mode="json")
    return [renewed]


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


def _command(config, identity, action, limits, reason, alert_id, trigger_ms) -> ThrottleCommand:
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
    return None if episode.command is None else str(episode.command["command_id"])


def _limits_text(limits: ThrottleLimits) -> str:
    return f"{limits.requests_per_minute} req/min, {limits.tokens_per_minute:,} tokens/min"


def _hhmm(minute: int) -> str:
    return from_ms(minute * MINUTE_MS).strftime("%H:%M")


def episode_to_dict(episode: Episode | None) -> dict[str, Any] | None:
    return None if episode is None else asdict(episode)


def episode_from_dict(data: dict[str, Any] | None) -> Episode | None:
    return None if data is None else Episode(**data)
